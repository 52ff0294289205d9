"""r2sft: redundancy-aware fine-tuning for diffusion LLMs.

Importing the package registers r2sft's LLaDA model class with the transformers Auto
classes, so ``AutoModel.from_pretrained(path)`` works on official LLaDA checkpoint
folders without ``trust_remote_code``.
"""

from r2sft import modeling as _modeling  # noqa: F401  (registers the Auto classes)

__version__ = "0.1.0"
