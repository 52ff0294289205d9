"""Configuration of r2sft's LLaDA model.

The field names and meanings are those of the official LLaDA ``config.json`` (an OLMo-style
``ModelConfig``), so an official checkpoint folder loads with its config file unchanged. The
defaults describe LLaDA-8B-Instruct.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from r2sft.modeling.config_checks import check_head_counts, reject_unsupported_options

# Official ModelConfig fields with LLaDA-8B-Instruct values. Every one of them is kept on the
# config (and written back by save_pretrained), including the ones our model only validates.
LLADA_8B_DEFAULTS: dict[str, Any] = {
    "d_model": 4096,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "mlp_ratio": 4,
    "mlp_hidden_size": 12288,
    "activation_type": "silu",
    "block_type": "llama",
    "block_group_size": 1,
    "alibi": False,
    "alibi_bias_max": 8.0,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "flash_attention": False,
    "attention_dropout": 0.0,
    "multi_query_attention": None,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "residual_dropout": 0.0,
    "embedding_dropout": 0.0,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "rms_norm_eps": 1e-05,
    "bias_for_layer_norm": False,
    "max_sequence_length": 4096,
    "include_qkv_bias": False,
    "include_bias": False,
    "scale_logits": False,
    "vocab_size": 126464,
    "embedding_size": 126464,
    "weight_tying": False,
    "eos_token_id": 126081,
    "pad_token_id": 126081,
    "mask_token_id": 126336,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "init_cutoff_factor": None,
    "precision": "amp_bf16",
}


class LLaDAConfig(PretrainedConfig):
    """LLaDA configuration; accepts the official ``config.json`` keys unchanged.

    Only the Llama-style block of the released LLaDA models is implemented; ``LLaDAModelLM``
    rejects other architecture options (``alibi``, ``block_type="sequential"``, ...) with an error
    naming the key, via :meth:`check_supported`.
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]
    # Standard transformers names (DeepSpeed "auto" sizing, peft, Trainer) read the LLaDA fields.
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
        "initializer_range": "init_std",
    }

    def __init__(self, use_cache: bool = False, **kwargs: Any) -> None:
        fields = {key: kwargs.pop(key, default) for key, default in LLADA_8B_DEFAULTS.items()}
        # transformers reads `tie_word_embeddings` to decide whether to tie the head to the
        # embedding; LLaDA's own switch is `weight_tying` (the official code overrode
        # tie_weights for this). Keep the two in agreement.
        kwargs["tie_word_embeddings"] = bool(fields["weight_tying"])
        kwargs.setdefault("architectures", ["LLaDAModelLM"])
        super().__init__(**kwargs)
        # Set after the base __init__: transformers 5 drops generation-looking keys (use_cache,
        # token ids) from the kwargs it receives, and LLaDA's forward contract needs them.
        for key, value in fields.items():
            setattr(self, key, value)
        self.use_cache = use_cache

    @property
    def effective_n_kv_heads(self) -> int:
        """Number of key/value heads (GQA when smaller than ``n_heads``), as the official code."""
        if self.n_kv_heads is None:
            return 1 if self.multi_query_attention else self.n_heads
        if self.multi_query_attention is not None:
            expected = 1 if self.multi_query_attention else self.n_heads
            if self.n_kv_heads != expected:
                raise ValueError(
                    f"config: multi_query_attention={self.multi_query_attention} contradicts "
                    f"n_kv_heads={self.n_kv_heads}; set multi_query_attention to null."
                )
        return self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden_size(self) -> int:
        if self.mlp_hidden_size is not None:
            return self.mlp_hidden_size
        return self.mlp_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output head (``embedding_size`` may pad ``vocab_size``)."""
        return self.embedding_size or self.vocab_size

    def check_supported(self) -> None:
        """Raise a clear error for official options this implementation does not provide."""
        unsupported = {
            "alibi": (self.alibi, False),
            "rope": (self.rope, True),
            "block_type": (str(self.block_type), "llama"),
            "block_group_size": (self.block_group_size, 1),
            "activation_type": (str(self.activation_type), "silu"),
            "layer_norm_type": (str(self.layer_norm_type), "rms"),
            "attention_layer_norm": (self.attention_layer_norm, False),
        }
        reject_unsupported_options("LLaDA", unsupported)
        check_head_counts(
            "LLaDA",
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.effective_n_kv_heads),
        )
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"LLaDA config: embedding_size={self.embedding_size} is smaller than "
                f"vocab_size={self.vocab_size}."
            )
