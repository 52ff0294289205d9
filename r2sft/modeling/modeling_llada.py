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
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from r2sft.modeling.configuration_llada import LLaDAConfig
from r2sft.modeling.layers import (
    BlockModules,
    CacheStep,
    RMSNorm,
    block_forward,
    forward_inputs,
    rope_cos_sin,
    select_positions,
)

try:  # transformers >= 5: init functions that skip tensors already loaded from a checkpoint.
    from transformers import initialization as _init
except ImportError:  # transformers 4.x guards per module (`_is_hf_initialized`) instead.
    _init = torch.nn.init

# Keyword arguments callers such as the HF Trainer pass that carry no meaning for this model.
_IGNORED_FORWARD_KWARGS = frozenset({"num_items_in_batch", "return_dict", "output_attentions"})


class LLaDALlamaBlock(GradientCheckpointingLayer):
    """One pre-norm transformer block; parameter names are those of the official checkpoints.

    Subclassing GradientCheckpointingLayer makes ``model.gradient_checkpointing_enable()``
    (and ``TrainingArguments(gradient_checkpointing=True)``) recompute this block in backward.
    """

    def __init__(self, config: LLaDAConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = config.n_heads
        self.n_kv_heads = config.effective_n_kv_heads
        self.head_dim = config.head_dim
        self.rope_full_precision = config.rope_full_precision
        self.attention_dropout = config.attention_dropout
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        norm_bias = (
            config.include_bias
            if config.bias_for_layer_norm is None
            else config.bias_for_layer_norm
        )
        hidden = config.ffn_hidden_size

        def norm() -> RMSNorm:
            return RMSNorm(
                config.d_model, config.rms_norm_eps, config.layer_norm_with_affine, norm_bias
            )

        self.attn_norm = norm()
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=config.include_bias)
        self.ff_norm = norm()
        self.ff_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)  # gated by SiLU
        self.up_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)
        self.ff_out = nn.Linear(hidden, config.d_model, bias=config.include_bias)
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        kv_cache: CacheStep | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        # The view is built per call: peft swaps the projections for LoRA layers after init.
        modules = BlockModules(
            self.attn_norm, self.q_proj, self.k_proj, self.v_proj, self.attn_out,
            self.ff_norm, self.ff_proj, self.up_proj, self.ff_out, self.dropout,
        )  # fmt: skip
        dropout = self.attention_dropout if self.training else 0.0
        return block_forward(modules, hidden_states, cos, sin, attention_mask, self.n_heads,
                             self.n_kv_heads, dropout, kv_cache=kv_cache,
                             layer_index=layer_index)  # fmt: skip


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


class LLaDAModelLM(PreTrainedModel):
    """LLaDA masked-diffusion LM with bidirectional SDPA attention.

    ``forward(input_ids, attention_mask=None)`` returns ``.logits`` of shape
    ``(batch, length, vocab_size)``. ``attention_mask`` is the usual padding mask (1 = real,
    0 = padding; left or right padding both work); position ids default to the count of real
    tokens before each position, so a padded row gets exactly the positions of its unpadded self.
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["LLaDALlamaBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The labels loss is a plain per-batch mean (no num_items_in_batch): tell the HF Trainer to
    # scale it for gradient accumulation itself.
    accepts_loss_kwargs = False
    # forward() takes r2sft's decoding arguments kv_cache and output_positions
    # (r2sft.modeling.forward.predict_logits checks this flag).
    supports_decode_cache = True

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        config.check_supported()
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            if module.weight is not None:
                _init.ones_(module.weight)
            if module.bias is not None:
                _init.zeros_(module.bias)

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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        use_cache: bool | None = None,
        kv_cache: CacheStep | None = None,
        output_positions: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Bidirectional forward pass.

        Args:
            input_ids: (B, L) token ids (or pass ``inputs_embeds`` (B, L, d_model)).
            attention_mask: (B, L) padding mask, 1 = real token; or a 4-D SDPA mask.
            position_ids: (B, L) RoPE positions; default from ``attention_mask`` (see class doc).
            labels: (B, L) targets, -100 = ignore; the loss is the plain mean token
                cross-entropy at labelled positions (no shift: every position predicts itself).
                Masked-diffusion objectives (1/t weighting) live in ``r2sft.training``.
            output_hidden_states: also return the input of every block and the final normed state.
            use_cache: accepted for API compatibility; the decoding cache is ``kv_cache``.
            kv_cache: a :class:`~r2sft.modeling.layers.CacheStep` of r2sft's decoding KV cache:
                a fill step stores this forward's keys and values, a span step computes only
                the span's tokens (``input_ids`` holds just them) against the cached rest.
            output_positions: (B, P) indices of the rows of this forward's output to compute
                logits for (the output head runs only there); logits are then (B, P, V).
        """
        unknown = set(kwargs) - _IGNORED_FORWARD_KWARGS
        if unknown:
            raise TypeError(f"LLaDAModelLM.forward got unexpected arguments: {sorted(unknown)}")
        if kwargs.get("output_attentions"):
            raise ValueError("LLaDAModelLM does not return attention weights (it uses SDPA).")
        if use_cache:
            raise ValueError(
                "LLaDAModelLM has no transformers KV cache (use_cache); decoding caches go "
                "through kv_cache= (r2sft.modeling.layers.KVCache)."
            )
        if labels is not None and output_positions is not None:
            raise ValueError("labels need logits at every position; drop output_positions.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        config = self.config
        body = self.model.transformer

        hidden = body.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if config.input_emb_norm:
            hidden = hidden * (config.d_model**0.5)
        hidden = body.emb_drop(hidden)
        batch, length = hidden.shape[:2]

        position_ids, sdpa_mask = forward_inputs(
            attention_mask, position_ids, batch, length, hidden.device, kv_cache
        )
        rope_dtype = torch.float32 if config.rope_full_precision else hidden.dtype
        cos, sin = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, rope_dtype)

        all_hidden = [] if output_hidden_states else None
        for index, block in enumerate(body.blocks):
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden = block(hidden, cos, sin, sdpa_mask, kv_cache=kv_cache, layer_index=index)
        hidden = body.ln_f(select_positions(hidden, output_positions))
        if all_hidden is not None:
            all_hidden.append(hidden)

        head_weight = body.wte.weight if config.weight_tying else None
        logits = F.linear(hidden, head_weight) if head_weight is not None else body.ff_out(hidden)
        if config.scale_logits:
            logits = logits * (1.0 / config.d_model**0.5)
        if logits.shape[-1] > config.vocab_size:
            # embedding_size pads the matrix for throughput; the padding rows are no tokens.
            logits = logits[..., : config.vocab_size]

        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        return MaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
