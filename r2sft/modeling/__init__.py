"""r2sft's own LLaDA model, registered with the transformers Auto classes.

After ``import r2sft`` (which imports this package), ``AutoConfig`` / ``AutoModel`` /
``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` ``.from_pretrained(folder)`` load an
official LLaDA checkpoint folder (model_type "llada", auto_map included) with this class and
without ``trust_remote_code``: transformers prefers a locally registered class over remote code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
)

from r2sft.modeling.configuration_llada import LLaDAConfig
from r2sft.modeling.modeling_llada import LLaDALlamaBlock, LLaDAModel, LLaDAModelLM

# exist_ok: re-importing (e.g. importlib.reload in tests) must not fail.
AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
    _auto_class.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

__all__ = ["LLaDAConfig", "LLaDALlamaBlock", "LLaDAModel", "LLaDAModelLM"]
