"""r2sft: redundancy-aware fine-tuning for diffusion LLMs.

Importing the package registers r2sft's LLaDA and Dream model classes (and Dream's tokenizer)
with the transformers Auto classes, so ``AutoModel.from_pretrained(path)`` works on official
LLaDA and Dream checkpoint folders without ``trust_remote_code``.
"""

from r2sft import modeling as _modeling  # noqa: F401  (registers the Auto classes)

__version__ = "0.1.0"
