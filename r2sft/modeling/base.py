"""What every r2sft model class shares: the block wrapper and the model forward.

Each family (LLaDA, Dream) keeps its own module tree under its official parameter names, so
its checkpoints load unchanged; what differs is only where the modules live and a few
switches. A family's block subclasses :class:`BidirectionalBlock` and names its modules in
:meth:`~BidirectionalBlock.block_modules`; its model subclasses :class:`BidirectionalLM` and
says where the embedding, the blocks, the final norm and the head are. The forward pass
(positions, RoPE, padding mask, blocks, head, loss) is written once, here.

Written by hand rather than taken from transformers' Llama/Qwen2 classes: those are causal
(their mask helpers build causal masks) and their module trees do not match LLaDA's names.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

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

# Keyword arguments callers such as the HF Trainer pass that carry no meaning for these models.
_IGNORED_FORWARD_KWARGS = frozenset({"num_items_in_batch", "return_dict", "output_attentions"})


class BidirectionalBlock(GradientCheckpointingLayer):
    """One pre-norm block run by :func:`~r2sft.modeling.layers.block_forward`.

    Subclassing GradientCheckpointingLayer makes ``model.gradient_checkpointing_enable()``
    (and ``TrainingArguments(gradient_checkpointing=True)``) recompute the block in backward.
    """

    def __init__(self, n_heads: int, n_kv_heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.attention_dropout = attention_dropout

    def block_modules(self) -> BlockModules:
        """The block's modules under their official names. Built per call: peft swaps the
        projections for LoRA layers after init."""
        raise NotImplementedError

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        kv_cache: CacheStep | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        dropout = self.attention_dropout if self.training else 0.0
        return block_forward(self.block_modules(), hidden_states, cos, sin, attention_mask,
                             self.n_heads, self.n_kv_heads, dropout, kv_cache=kv_cache,
                             layer_index=layer_index)  # fmt: skip


class BidirectionalLM(PreTrainedModel):
    """A bidirectional masked-diffusion LM: embedding, :class:`BidirectionalBlock` s, final
    norm, head.

    ``forward(input_ids, attention_mask=None)`` returns ``.logits`` of shape
    ``(batch, length, vocab_size)``. ``attention_mask`` is the usual padding mask (1 = real,
    0 = padding; left or right padding both work); position ids default to the count of real
    tokens before each position, so a padded row gets exactly the positions of its unpadded
    self. The config must provide ``head_dim``, ``rope_theta``, ``vocab_size``,
    ``initializer_range`` and ``tie_word_embeddings``.
    """

    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The labels loss is a plain per-batch mean (no num_items_in_batch): tell the HF Trainer to
    # scale it for gradient accumulation itself.
    accepts_loss_kwargs = False
    # True when output row i predicts token i + 1 (Dream); the labels loss then shifts.
    predicts_next_token: ClassVar[bool] = False
    # forward() takes r2sft's decoding arguments kv_cache and output_positions
    # (r2sft.modeling.forward.predict_logits checks this flag).
    supports_decode_cache: ClassVar[bool] = True

    # ----------------------------------------------------------------- family hooks
    def decoder_blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def prepare_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Applied to the looked-up (or given) input embeddings; LLaDA scales and drops out."""
        return embeddings

    def rope_dtype(self, activation_dtype: torch.dtype) -> torch.dtype:
        """dtype of the RoPE tables and rotation (the official code's choice per family)."""
        return activation_dtype

    def finish_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Applied to the head's output; LLaDA scales and drops padded vocabulary rows."""
        return logits

    # ----------------------------------------------------------------- shared
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
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

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.get_output_embeddings()
        if head is None:  # tied: the head is the embedding matrix itself (no separate module)
            return F.linear(hidden, self.get_input_embeddings().weight)
        return head(hidden)

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
        **kwargs: Any,
    ) -> MaskedLMOutput:
        """Bidirectional forward pass.

        Args:
            input_ids: (B, L) token ids (or pass ``inputs_embeds`` (B, L, hidden)).
            attention_mask: (B, L) padding mask, 1 = real token; or a 4-D SDPA mask (boolean,
                True = attend; or additive float), passed to attention unchanged.
            position_ids: (B, L) RoPE positions; default from ``attention_mask`` (see class doc).
            labels: (B, L) targets, -100 = ignore; the loss is the plain mean token
                cross-entropy at labelled positions (shifted by one when the model predicts the
                next token, as Dream's official loss). Masked-diffusion objectives (1/t
                weighting) live in ``r2sft.training``.
            output_hidden_states: also return the input of every block and the final normed state.
            use_cache: accepted for API compatibility; the decoding cache is ``kv_cache``.
            kv_cache: a :class:`~r2sft.modeling.layers.CacheStep` of r2sft's decoding KV cache:
                a fill step stores this forward's keys and values, a span step computes only
                the span's tokens (``input_ids`` holds just them) against the cached rest.
            output_positions: (B, P) indices of the rows of this forward's output to compute
                logits for (the head runs only there); logits are then (B, P, V), unshifted
                (``r2sft.modeling.forward.predict_logits`` aligns shifted models).
        """
        name = type(self).__name__
        unknown = set(kwargs) - _IGNORED_FORWARD_KWARGS
        if unknown:
            raise TypeError(f"{name}.forward got unexpected arguments: {sorted(unknown)}")
        if kwargs.get("output_attentions"):
            raise ValueError(f"{name} does not return attention weights (it uses SDPA).")
        if use_cache:
            raise ValueError(
                f"{name} has no transformers KV cache (use_cache); decoding caches go through "
                "kv_cache= (r2sft.modeling.layers.KVCache)."
            )
        if labels is not None and output_positions is not None:
            raise ValueError("labels need logits at every position; drop output_positions.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        config = self.config

        hidden = self.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        hidden = self.prepare_embeddings(hidden)
        batch, length = hidden.shape[:2]

        position_ids, sdpa_mask = forward_inputs(
            attention_mask, position_ids, batch, length, hidden.device, kv_cache
        )
        rope_dtype = self.rope_dtype(hidden.dtype)
        cos, sin = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, rope_dtype)

        all_hidden = [] if output_hidden_states else None
        for index, block in enumerate(self.decoder_blocks()):
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden = block(hidden, cos, sin, sdpa_mask, kv_cache=kv_cache, layer_index=index)
        hidden = self.final_norm()(select_positions(hidden, output_positions))
        if all_hidden is not None:
            all_hidden.append(hidden)
        logits = self.finish_logits(self.output_logits(hidden))

        loss = None
        if labels is not None:
            scored, targets = logits, labels
            if self.predicts_next_token:
                scored, targets = logits[:, :-1], labels[:, 1:]
            loss = F.cross_entropy(
                scored.float().reshape(-1, scored.shape[-1]),
                targets.reshape(-1),
                ignore_index=-100,
            )
        return MaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
