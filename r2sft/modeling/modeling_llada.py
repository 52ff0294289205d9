"""r2sft's LLaDA: a bidirectional Llama-style masked-diffusion LM.

Why not the official ``modeling_llada.py`` (trust_remote_code)? It breaks under transformers
5.x, ignores the padding attention mask (batched decoding is wrong), has no gradient
checkpointing, and builds its layers on CPU explicitly (an 8B model is materialised before
loading). This implementation keeps the official module tree and parameter names
(``model.transformer.wte``, ``model.transformer.blocks.{i}.{attn_norm,q_proj,k_proj,v_proj,
attn_out,ff_norm,ff_proj,up_proj,ff_out}``, ``model.transformer.ln_f``,
``model.transformer.ff_out``) so official checkpoints load unchanged, and matches the official
logits (tests/fixtures/llada_official).

Numerics follow the official code: RMSNorm computed in fp32 and cast back before the weight;
half-split ("rotate_half") RoPE computed in fp32 when ``rope_full_precision``; SwiGLU MLP
``ff_out(silu(ff_proj(x)) * up_proj(x))``; no attention scale other than 1/sqrt(head_dim).
"""

from __future__ import annotations

import torch
from torch import nn

from r2sft.modeling.base import BidirectionalBlock, BidirectionalLM
from r2sft.modeling.configuration_llada import LLaDAConfig
from r2sft.modeling.layers import BlockModules, RMSNorm


class LLaDALlamaBlock(BidirectionalBlock):
    """One pre-norm transformer block; parameter names are those of the official checkpoints."""

    def __init__(self, config: LLaDAConfig, layer_id: int) -> None:
        super().__init__(config.n_heads, config.effective_n_kv_heads, config.attention_dropout)
        self.layer_id = layer_id
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        norm_bias = (
            config.include_bias
            if config.bias_for_layer_norm is None
            else config.bias_for_layer_norm
        )
        hidden = config.ffn_hidden_size
        kv_width = self.n_kv_heads * config.head_dim

        def norm() -> RMSNorm:
            return RMSNorm(
                config.d_model, config.rms_norm_eps, config.layer_norm_with_affine, norm_bias
            )

        self.attn_norm = norm()
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, kv_width, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, kv_width, bias=qkv_bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=config.include_bias)
        self.ff_norm = norm()
        self.ff_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)  # gated by SiLU
        self.up_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)
        self.ff_out = nn.Linear(hidden, config.d_model, bias=config.include_bias)
        self.dropout = nn.Dropout(config.residual_dropout)

    def block_modules(self) -> BlockModules:
        return BlockModules(
            self.attn_norm, self.q_proj, self.k_proj, self.v_proj, self.attn_out,
            self.ff_norm, self.ff_proj, self.up_proj, self.ff_out, self.dropout,
        )  # fmt: skip


class LLaDAModel(nn.Module):
    """The transformer body plus head; an ``nn.Module`` under ``LLaDAModelLM.model`` so that
    parameter names keep the official ``model.transformer.*`` prefix."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab_size, config.d_model),
                "emb_drop": nn.Dropout(config.embedding_dropout),
                "ln_f": RMSNorm(
                    config.d_model,
                    config.rms_norm_eps,
                    config.layer_norm_with_affine,
                    config.include_bias
                    if config.bias_for_layer_norm is None
                    else config.bias_for_layer_norm,
                ),
                "blocks": nn.ModuleList(
                    LLaDALlamaBlock(config, layer_id) for layer_id in range(config.n_layers)
                ),
            }
        )
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(
                config.d_model, config.padded_vocab_size, bias=config.include_bias
            )


class LLaDAModelLM(BidirectionalLM):
    """LLaDA masked-diffusion LM with bidirectional SDPA attention; ``forward`` and its
    contract are :class:`~r2sft.modeling.base.BidirectionalLM`'s (no shift: every position
    predicts itself)."""

    config_class = LLaDAConfig
    _no_split_modules = ["LLaDALlamaBlock"]

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        config.check_supported()
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        # With weight_tying the head is the embedding matrix itself (no separate module).
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear) -> None:
        if self.config.weight_tying:
            raise ValueError("LLaDA with weight_tying=True has no separate output head to set.")
        self.model.transformer.ff_out = value

    def decoder_blocks(self) -> nn.ModuleList:
        return self.model.transformer.blocks

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def prepare_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.config.input_emb_norm:
            embeddings = embeddings * (self.config.d_model**0.5)
        return self.model.transformer.emb_drop(embeddings)

    def rope_dtype(self, activation_dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if self.config.rope_full_precision else activation_dtype

    def finish_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.scale_logits:
            logits = logits * (1.0 / self.config.d_model**0.5)
        if logits.shape[-1] > self.config.vocab_size:
            # embedding_size pads the matrix for throughput; the padding rows are no tokens.
            logits = logits[..., : self.config.vocab_size]
        return logits
