"""r2sft's Dream: a bidirectional Qwen2-layout masked-diffusion LM (Dream-v0-7B).

Why not the official ``modeling_dream.py`` (trust_remote_code)? It breaks under transformers
5.x (it imports ``ROPE_INIT_FUNCTIONS`` / ``rope_config_validation``, whose contents changed,
and overrides ``from_pretrained`` with arguments transformers no longer passes), its padded
forward needs a hand-made 4-D boolean mask and position ids, and its gradient checkpointing
predates the Trainer's switch. This implementation keeps the official module tree and
parameter names (``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj`` with
q/k/v biases, ``model.layers.{i}.mlp.{gate,up,down}_proj``, ``input_layernorm``,
``post_attention_layernorm``, ``model.norm``, ``lm_head``) so official checkpoints load
unchanged, and matches the official logits (tests/fixtures/dream_official), also for a
left-padded row given a plain 2-D padding mask.

Numerics follow the official code: RMSNorm in fp32 cast back before the weight; half-split RoPE
tables computed in fp32 and applied in the activation dtype; SwiGLU MLP; SDPA without a causal
mask. Output row ``i`` predicts token ``i + 1`` (Dream was adapted from an autoregressive
model): r2sft's model spec marks Dream ``shifted_logits`` and decoding / training undo the
shift; the ``labels`` loss here shifts like the official one.
"""

from __future__ import annotations

from torch import nn

from r2sft.modeling.base import BidirectionalBlock, BidirectionalLM
from r2sft.modeling.configuration_dream import DreamConfig
from r2sft.modeling.layers import BlockModules, RMSNorm

_NO_DROPOUT = nn.Identity()  # Dream has no residual dropout


class DreamAttention(nn.Module):
    """Holds the attention projections under the official ``self_attn`` names."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        width, head_dim = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(width, config.num_attention_heads * head_dim, bias=True)
        self.k_proj = nn.Linear(width, config.num_key_value_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(width, config.num_key_value_heads * head_dim, bias=True)
        self.o_proj = nn.Linear(config.num_attention_heads * head_dim, width, bias=False)


class DreamMLP(nn.Module):
    """Holds the SwiGLU projections under the official ``mlp`` names."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


class DreamDecoderLayer(BidirectionalBlock):
    """One pre-norm block; parameter names are those of the official checkpoints."""

    def __init__(self, config: DreamConfig, layer_idx: int) -> None:
        super().__init__(
            config.num_attention_heads, config.num_key_value_heads, config.attention_dropout
        )
        self.layer_idx = layer_idx
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def block_modules(self) -> BlockModules:
        attn, mlp = self.self_attn, self.mlp
        return BlockModules(
            self.input_layernorm, attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
            self.post_attention_layernorm, mlp.gate_proj, mlp.up_proj, mlp.down_proj, _NO_DROPOUT,
        )  # fmt: skip


class DreamBaseModel(nn.Module):
    """The transformer body; an ``nn.Module`` under ``DreamModel.model`` so that parameter
    names keep the official ``model.*`` prefix."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        # padding_idx as in the official code: the padding token's embedding gets no gradient.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            DreamDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(BidirectionalLM):
    """Dream masked-diffusion LM with bidirectional SDPA attention; ``forward`` and its
    contract are :class:`~r2sft.modeling.base.BidirectionalLM`'s. With
    ``tie_word_embeddings`` the head is the embedding matrix (no ``lm_head`` module)."""

    config_class = DreamConfig
    _no_split_modules = ["DreamDecoderLayer"]
    predicts_next_token = True

    def __init__(self, config: DreamConfig) -> None:
        super().__init__(config)
        config.check_supported()
        self.model = DreamBaseModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return None if self.config.tie_word_embeddings else self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        if self.config.tie_word_embeddings:
            raise ValueError("Dream with tie_word_embeddings=True has no separate lm_head to set.")
        self.lm_head = value

    def decoder_blocks(self) -> nn.ModuleList:
        return self.model.layers

    def final_norm(self) -> nn.Module:
        return self.model.norm
