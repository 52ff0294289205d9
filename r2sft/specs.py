"""The model-spec registry: every per-model quirk r2sft knows about lives here.

A :class:`ModelSpec` says, for one family of masked-diffusion models, which token ids play
which role (mask, end of text, end of turn, padding), whether the logits are shifted
(Dream), and which modules LoRA should adapt. The rest of r2sft reads a spec and never
branches on model names.

Token ids resolve in the order config > tokenizer > family default, so a small model with its
own vocabulary (the embedded tiny LLaDA) gets its own ids, never the 8B defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import r2sft.modeling  # noqa: F401  (registers r2sft's classes with the Auto classes)
from r2sft.hub import hub_offline, offline_hint, require_hub

# Roles a spec assigns token ids to, and where the config / tokenizer keep them.
_ID_FIELDS = ("mask_token_id", "eos_token_id", "eot_token_id", "pad_token_id")


@dataclass(frozen=True)
class ModelSpec:
    """Per-family facts; after :func:`resolve_spec` every id is an int of the loaded model.

    Attributes:
        family: "llada" | "dream" | "masked_lm".
        mask_token_id: the [MASK] a diffusion canvas starts from.
        eos_token_id: end of text; the canvas fill after the answer.
        eot_token_id: end of turn (None when the family / tokenizer has none).
        pad_token_id: padding of batched prompts.
        shifted_logits: True when the prediction for position i is logits row i-1 (Dream).
        lora_target_modules: regex (peft full-matches it against module names) or a peft
            keyword such as "all-linear".
        eot_token: the end-of-turn token string, looked up in a tokenizer during resolution.
    """

    family: str
    mask_token_id: int | None
    eos_token_id: int | None
    eot_token_id: int | None
    pad_token_id: int | None
    shifted_logits: bool
    lora_target_modules: str
    eot_token: str | None = None


# LLaDA's blocks carry the Llama projections under OLMo names. The output head is
# `model.transformer.ff_out` and must not be adapted, hence the `blocks.N.` anchor.
LLADA_LORA_TARGETS = r".*\.blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)"
# Dream is a Qwen2 layout.
DREAM_LORA_TARGETS = (
    r".*\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)

_FAMILY_DEFAULTS: dict[str, ModelSpec] = {
    "llada": ModelSpec(
        family="llada",
        mask_token_id=126336,
        eos_token_id=126081,  # <|endoftext|>
        eot_token_id=126348,  # <|eot_id|>
        pad_token_id=126081,
        shifted_logits=False,
        lora_target_modules=LLADA_LORA_TARGETS,
        eot_token="<|eot_id|>",
    ),
    "dream": ModelSpec(
        family="dream",
        mask_token_id=151666,
        eos_token_id=151643,  # <|endoftext|>
        eot_token_id=151645,  # <|im_end|>
        pad_token_id=151643,
        shifted_logits=True,
        lora_target_modules=DREAM_LORA_TARGETS,
        eot_token="<|im_end|>",
    ),
    # Any bidirectional masked LM from transformers (BERT, ModernBERT, ...): ids come from its
    # tokenizer; peft's "all-linear" adapts every linear layer except the output head.
    "masked_lm": ModelSpec(
        family="masked_lm",
        mask_token_id=None,
        eos_token_id=None,
        eot_token_id=None,
        pad_token_id=None,
        shifted_logits=False,
        lora_target_modules="all-linear",
    ),
}

# config.model_type (lower-cased) -> family. Anything else loadable as a masked LM is masked_lm.
_MODEL_TYPE_FAMILY = {"llada": "llada", "dream": "dream"}
# Families r2sft has its own model class for (r2sft.modeling); their remote code is never run.
_OWN_CLASSES = ("llada", "dream")


def get_spec(family: str) -> ModelSpec:
    """The unresolved family defaults (ids may be None for ``masked_lm``)."""
    try:
        return _FAMILY_DEFAULTS[family]
    except KeyError:
        raise ValueError(
            f"Unknown model family {family!r}; known families: {sorted(_FAMILY_DEFAULTS)}."
        ) from None


def family_for_model_type(model_type: str | None) -> str:
    """Family of a config.json ``model_type`` (any case); ``masked_lm`` for anything else."""
    return _MODEL_TYPE_FAMILY.get(str(model_type or "").lower(), "masked_lm")


def family_for_config(config: Any) -> str:
    """Family of a transformers config: by model_type, else ``masked_lm``."""
    return family_for_model_type(getattr(config, "model_type", None))


def _config_id(config: Any, field: str) -> int | None:
    value = getattr(config, field, None) if config is not None else None
    if isinstance(value, list | tuple):  # eos_token_id may be a list; the first is end of text
        value = value[0] if value else None
    return int(value) if value is not None else None


def _tokenizer_id(tokenizer: Any, field: str, default_spec: ModelSpec) -> int | None:
    if tokenizer is None:
        return None
    if field == "eot_token_id":
        token = default_spec.eot_token
        if token is None:
            return None
        token_id = tokenizer.convert_tokens_to_ids(token)
        # Unknown tokens map to the unk id (or None); neither is the end of turn.
        if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
            return None
        return int(token_id)
    value = getattr(tokenizer, field, None)
    if value is None and field == "eos_token_id":
        value = getattr(tokenizer, "sep_token_id", None)  # BERT-style: [SEP] ends the text
    return int(value) if value is not None else None


def resolve_spec(config: Any, tokenizer: Any = None, family: str | None = None) -> ModelSpec:
    """The family spec with ids of this model: config > tokenizer > family default.

    Args:
        config: the model's transformers config (``model.config``), or None.
        tokenizer: its tokenizer, or None.
        family: force a family; default from ``config.model_type``.

    Raises:
        ValueError: when a required id (mask, eos, pad) cannot be found, or a resolved id does not
            fit the model's vocabulary; the message names the id and where it came from.
    """
    family = family or family_for_config(config)
    default = get_spec(family)
    vocab_size = getattr(config, "vocab_size", None) if config is not None else None
    name = getattr(config, "_name_or_path", "") or getattr(tokenizer, "name_or_path", "") or "?"
    resolved: dict[str, int | None] = {}
    for field in _ID_FIELDS:
        candidates = [
            ("config", _config_id(config, field)),
            ("tokenizer", _tokenizer_id(tokenizer, field, default)),
            (f"the {family} family default", getattr(default, field)),
        ]
        source, value = next(((s, v) for s, v in candidates if v is not None), (None, None))
        if value is not None and vocab_size is not None and not 0 <= value < vocab_size:
            if field == "eot_token_id" and source != "config":
                value = None  # a model without that token simply has no end-of-turn id
            else:
                raise ValueError(
                    f"Model {name}: {field}={value} (from {source}) is outside the vocabulary "
                    f"(vocab_size={vocab_size}); set {field} in the model's config.json."
                )
        resolved[field] = value
    if resolved["pad_token_id"] is None:
        resolved["pad_token_id"] = resolved["eos_token_id"]
    missing = [f for f in ("mask_token_id", "eos_token_id", "pad_token_id") if resolved[f] is None]
    if missing:
        raise ValueError(
            f"Model {name} (family {family}): no {', '.join(missing)} in its config or tokenizer; "
            "add them to config.json or the tokenizer's special tokens."
        )
    return replace(default, **resolved)


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: the model (eval mode), its tokenizer and resolved spec."""

    model: nn.Module
    tokenizer: Any
    spec: ModelSpec


def _torch_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; use 'auto', 'bfloat16', ...")
    return resolved


def default_device(device: str | torch.device | None = None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``: the default
    of ``r2sft.evaluate`` and the benches."""
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelLoadError(ValueError):
    """The model source is missing or damaged; the message names it and the fix."""


MODEL_FOLDER_FIX = "Pass --model a local model folder (config.json, weights, tokenizer)"


def require_model_download(name_or_path: str) -> None:
    """A model named by a Hub id (no such local folder) needs the Hub: fail in seconds when
    it cannot be reached (:func:`r2sft.hub.require_hub`), before any retrying download.
    Anything else (a folder, a path that is no Hub id) is left to the load to check."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name_or_path).expanduser().is_dir():
        return
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        return
    require_hub(f"model {name_or_path!r}", MODEL_FOLDER_FIX)


def load_model_config(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model folder or Hub id, after checking the source.

    A local folder must hold ``config.json`` and whole ``*.safetensors`` files (their headers
    are read, not the weights, so a truncated download is named before any loading); a name
    that is no folder must be a valid Hub id. Every failure names the model and the fix.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    from safetensors import safe_open
    from transformers import AutoConfig, PretrainedConfig

    path = Path(name_or_path).expanduser()
    fix = "pass --model a model folder (config.json, weights, tokenizer) or a Hub id 'org/name'"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json; {fix}.")
        for weights in sorted(path.glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt"):
                    pass
            except Exception as error:  # noqa: BLE001  (safetensors' own error type)
                raise ModelLoadError(
                    f"weights file {weights} is damaged or truncated ({error}); download or "
                    "save the model again."
                ) from error
    else:
        try:
            validate_repo_id(str(name_or_path))
        except HFValidationError:
            raise ModelLoadError(
                f"model folder {name_or_path} does not exist (and it is not a Hub id); {fix}."
            ) from None
        require_model_download(name_or_path)
    try:
        if trust_remote_code:  # the model type, read without running the checkpoint's code
            config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
            if family_for_model_type(config_dict.get("model_type")) in _OWN_CLASSES:
                trust_remote_code = False
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:
        if path.is_dir():
            raise ModelLoadError(f"cannot load model {name_or_path!r}: {error}") from error

        if hub_offline():
            hint = f"{MODEL_FOLDER_FIX}, or unset HF_HUB_OFFLINE to download it"
        else:
            hint = offline_hint(MODEL_FOLDER_FIX)
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: no local folder of that name, and from the "
            f"Hub: {str(error).rstrip('.')}. {hint}."
        ) from error
    except ValueError as error:  # a model_type transformers does not know
        if "model type" not in str(error) and "model_type" not in str(error):
            raise
        raise ModelLoadError(
            f"cannot load --model {name_or_path!r}: its config.json names a model type that "
            "neither r2sft nor this transformers knows. Use a LLaDA, Dream or transformers "
            "masked-LM checkpoint, or fix model_type in config.json."
        ) from error


def load_model(
    name_or_path: str,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a dLLM, its tokenizer and its resolved spec.

    LLaDA and Dream checkpoints load with r2sft's own classes (registered on ``import r2sft``)
    and never run the checkpoint's code: ``trust_remote_code`` is ignored for them (their
    remote code breaks under transformers 5). It only matters for other families.

    Args:
        name_or_path: a local folder or Hub repo id.
        dtype: "auto" (the checkpoint's dtype), a torch dtype, or its name ("bfloat16").
        device: where to put the weights (loaded there directly); None keeps them on CPU.
        trust_remote_code: allow the checkpoint's own modeling code (families r2sft has no
            class for).
    """
    # Imported here: r2sft.__init__ imports r2sft.modeling, which must be registered first.
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    config = load_model_config(name_or_path, trust_remote_code=trust_remote_code)
    if family_for_config(config) in _OWN_CLASSES:
        trust_remote_code = False  # r2sft's class, never the checkpoint's code
    family = family_for_config(config)
    auto_class = AutoModelForMaskedLM if family == "masked_lm" else AutoModel
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype), "trust_remote_code": trust_remote_code}
    if device is not None:
        kwargs["device_map"] = str(device)
    model = auto_class.from_pretrained(name_or_path, config=config, **kwargs)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not load a tokenizer from {name_or_path}: {error}. The model folder needs its "
            "tokenizer files (tokenizer_config.json with tokenizer.json, or vocab.json + "
            "merges.txt)."
        ) from error
    return LoadedModel(model=model, tokenizer=tokenizer, spec=resolve_spec(model.config, tokenizer))


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True
) -> str:
    """A chat rendered with the tokenizer's template, as prompt text.

    With ``add_generation_prompt`` the assistant's turn is opened after the last message;
    without it the last message (an assistant prefix, e.g. lm-eval's ``gen_prefix``) is
    left open for the model to continue.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"Tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; set "
            "tokenizer.chat_template (or add 'chat_template' to tokenizer_config.json)."
        )
    # continue_final_message only when asked: some tokenizers' own apply_chat_template
    # (remote code, older transformers) do not take it.
    extra = {} if add_generation_prompt else {"continue_final_message": True}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )


def render_prompt(tokenizer: Any, user_message: str) -> str:
    """The chat-formatted prompt text: the tokenizer's template plus the generation prompt."""
    return render_chat(tokenizer, [{"role": "user", "content": user_message}])


def encode_prompt(tokenizer: Any, user_message: str) -> list[int]:
    """Token ids of :func:`render_prompt`'s text.

    Tokenises without adding special tokens again: the template already wrote them (BOS...).
    """
    text = render_prompt(tokenizer, user_message)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def decode_response(tokenizer: Any, spec: ModelSpec, tokens: list[int]) -> str:
    """The answer text of a generated canvas: tokens before the first end-of-text or
    end-of-turn id of ``spec``, special tokens dropped."""
    stop_ids = {i for i in (spec.eos_token_id, spec.eot_token_id) if i is not None}
    cut = next((i for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
    return tokenizer.decode(tokens[:cut], skip_special_tokens=True)


# Layer types peft's LoRA can adapt; a target naming anything else matches nothing useful.
def _lora_capable(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | nn.Embedding | nn.Conv1d | nn.Conv2d | Conv1D)


_ALTERNATION = re.compile(r"\(([\w|]+)\)")


def _unmatched_targets(module_names: list[str], targets: str | list[str]) -> list[str]:
    """Configured targets (list entries, or alternatives of a regex group) matching no module."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return []
        # Check each alternative of every (a|b|c) group separately, so the error can name the
        # exact entries that match nothing (e.g. LLaMA's o_proj on a LLaDA model).
        unmatched = []
        for group in _ALTERNATION.finditer(targets):
            for alternative in group.group(1).split("|"):
                pattern = targets[: group.start()] + alternative + targets[group.end() :]
                if not any(re.fullmatch(pattern, name) for name in module_names):
                    unmatched.append(alternative)
        if not unmatched and not any(re.fullmatch(targets, name) for name in module_names):
            unmatched.append(targets)
        return unmatched
    return [
        target
        for target in targets
        if not any(name == target or name.endswith("." + target) for name in module_names)
    ]


def apply_lora(
    model: nn.Module,
    spec: ModelSpec,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: str | list[str] | None = None,
) -> Any:
    """Wrap ``model`` in a peft LoRA model targeting ``target_modules`` (default: the spec's).

    Raises:
        ValueError: naming every configured target that matches no LoRA-capable module. peft
            itself only complains when nothing at all matches, and silently trains fewer
            layers when, say, LLaMA names (o_proj, gate_proj) are used on LLaDA.
    """
    from peft import LoraConfig, get_peft_model

    targets = spec.lora_target_modules if target_modules is None else target_modules
    if isinstance(targets, str) and "," in targets and not any(c in targets for c in "\\()*"):
        targets = [t.strip() for t in targets.split(",") if t.strip()]  # "q_proj,k_proj" form
    names = [name for name, module in model.named_modules() if _lora_capable(module)]
    unmatched = _unmatched_targets(names, targets)
    if unmatched:
        raise ValueError(
            f"LoRA target(s) {unmatched} match no Linear/Embedding/Conv module of "
            f"{type(model).__name__} (targets: {targets!r}). Module names look like "
            f"{names[:6]}; fix target_modules or leave it unset for the {spec.family} default."
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
    )
    return get_peft_model(model, config)
