"""r2sft's own model classes (LLaDA, Dream), registered with the transformers Auto classes.

After ``import r2sft`` (which imports this package), ``AutoConfig`` / ``AutoModel`` /
``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` ``.from_pretrained(folder)`` load an
official LLaDA (model_type "llada") or Dream (model_type "Dream") checkpoint folder, auto_map
included, with these classes and without ``trust_remote_code``: transformers prefers a locally
registered class over remote code unless ``trust_remote_code=True`` is passed. ``AutoTokenizer``
loads Dream's tokenizer the same way (see ``tokenization_dream``).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
)

from r2sft.modeling.base import BidirectionalBlock, BidirectionalLM
from r2sft.modeling.configuration_dream import DreamConfig
from r2sft.modeling.configuration_llada import LLaDAConfig
from r2sft.modeling.modeling_dream import DreamBaseModel, DreamDecoderLayer, DreamModel
from r2sft.modeling.modeling_llada import LLaDALlamaBlock, LLaDAModel, LLaDAModelLM
from r2sft.modeling.tokenization_dream import DreamTokenizerFast

# exist_ok: re-importing (e.g. importlib.reload in tests) must not fail.
for _config_class, _model_class in ((LLaDAConfig, LLaDAModelLM), (DreamConfig, DreamModel)):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        _auto_class.register(_config_class, _model_class, exist_ok=True)
AutoTokenizer.register(DreamConfig, fast_tokenizer_class=DreamTokenizerFast, exist_ok=True)

__all__ = [
    "BidirectionalBlock",
    "BidirectionalLM",
    "DreamBaseModel",
    "DreamConfig",
    "DreamDecoderLayer",
    "DreamModel",
    "DreamTokenizerFast",
    "LLaDAConfig",
    "LLaDALlamaBlock",
    "LLaDAModel",
    "LLaDAModelLM",
]
