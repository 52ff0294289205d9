"""Configuration of r2sft's Dream model.

The keys and their meanings are those of the official Dream ``config.json`` (a Qwen2 layout,
model_type ``"Dream"``), so an official checkpoint folder loads with its config file unchanged
(``auto_map`` and extra keys such as ``use_mrope`` are kept and written back). Defaults are
the official ``DreamConfig`` defaults, so a key missing from a config.json means what it
means to the official code.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from r2sft.modeling.config_checks import check_head_counts, reject_unsupported_options

# The official DreamConfig.__init__ arguments and their defaults. Every one is kept on the config
# (and written back by save_pretrained), including the ones our model only validates.
DREAM_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "use_cache": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 28,
    "attention_dropout": 0.0,
    "mask_token_id": 151666,
    "pad_token_id": 151643,
    "bos_token_id": None,
    "eos_token_id": None,
}

# rope_scaling types this implementation computes (plain RoPE with rope_theta).
SUPPORTED_ROPE_TYPES = ("default",)


class DreamConfig(PretrainedConfig):
    """Dream configuration; accepts the official ``config.json`` keys unchanged.

    ``DreamModel`` rejects options it does not implement (a ``rope_scaling`` type other than
    plain RoPE, an activation other than SiLU) with an error naming the key, via
    :meth:`check_supported`. ``use_sliding_window`` is kept but, as in the official SDPA
    attention that Dream always uses, has no effect: attention is full.
    """

    model_type = "Dream"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, tie_word_embeddings: bool = False, **kwargs: Any) -> None:
        fields = {key: kwargs.pop(key, default) for key, default in DREAM_DEFAULTS.items()}
        kwargs.setdefault("architectures", ["DreamModel"])
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        # Set after the base __init__: transformers 5 drops generation-looking keys (use_cache,
        # token ids) from the kwargs it receives and treats rope_scaling as its own field.
        if fields["num_key_value_heads"] is None:  # as the official config: MHA
            fields["num_key_value_heads"] = fields["num_attention_heads"]
        if not fields["use_sliding_window"]:
            fields["sliding_window"] = None
        scaling = fields["rope_scaling"]
        if isinstance(scaling, dict) and "type" in scaling:  # official BC: "type" -> "rope_type"
            scaling = {**scaling, "rope_type": scaling["type"]}
        fields["rope_scaling"] = scaling
        for key, value in fields.items():
            setattr(self, key, value)

    # transformers 5 turns `rope_scaling` into a deprecated alias of `rope_parameters`; Dream's
    # config.json has `rope_scaling`, so keep it a plain key (read, validated, written back).
    @property
    def rope_scaling(self) -> dict[str, Any] | None:
        return self.__dict__.get("rope_scaling")

    @rope_scaling.setter
    def rope_scaling(self, value: dict[str, Any] | None) -> None:
        self.__dict__["rope_scaling"] = value

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_type(self) -> str:
        scaling = self.rope_scaling or {}
        return str(scaling.get("rope_type", scaling.get("type", "default")))

    def check_supported(self) -> None:
        """Raise a clear error for official options this implementation does not provide."""
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"Dream config key 'rope_scaling'={self.rope_scaling!r} (rope_type "
                f"{self.rope_type!r}) is not supported by r2sft's Dream, which implements plain "
                "RoPE with rope_theta only (rope_scaling null, as in the released Dream "
                "checkpoints)."
            )
        reject_unsupported_options("Dream", {"hidden_act": (self.hidden_act, "silu")})
        check_head_counts(
            "Dream",
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        )
