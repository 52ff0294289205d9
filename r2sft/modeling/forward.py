"""The one forward of r2sft's decoding and training: logits where row ``j`` predicts position
``j``, computed only where they are wanted, optionally through a decoding KV cache.

Two model quirks are handled here and nowhere else:

- Shifted logits (Dream, ``spec.shifted_logits``): the prediction for position ``p`` is the
  output row ``p - 1`` (position 0 reads row 0, which has no left neighbour).
- What a model class can do: r2sft's own classes (``supports_decode_cache = True``) take
  ``output_positions`` (the output head runs only at the rows asked for; for LLaDA-8B at
  batch 32 that is 32 block rows instead of ~4 GB of full-canvas bf16 logits) and
  ``kv_cache`` (:class:`~r2sft.modeling.layers.KVCache`). Any other masked LM (a plain
  transformers ``AutoModelForMaskedLM``) runs its full forward and the rows are sliced
  afterwards; asking it for a cache is an error that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r2sft.modeling.layers import CacheStepMode, KVCache


def supports_decode_cache(model: Any) -> bool:
    """Whether ``model`` takes ``kv_cache`` / ``output_positions`` (r2sft's model classes;
    peft wrappers forward the attribute)."""
    return bool(getattr(model, "supports_decode_cache", False))


@dataclass(frozen=True)
class CacheUse:
    """How one :func:`predict_logits` call uses a decoding cache.

    ``mode``: ``"fill"`` runs the full canvas and stores every layer's keys and values for
    ``rows``; ``"prefix"`` / ``"dual"`` run only the span the positions need against the
    cached rest (see :meth:`KVCache.span`). ``rows``: the cache rows of the batch, in order
    (None: all of them). ``first_columns``: span modes only, the host copy of
    ``positions[:, 0]`` (tensor shapes depend on it; reading it from the device would cost a
    host sync).
    """

    cache: KVCache
    mode: CacheStepMode
    rows: torch.Tensor | None = None
    first_columns: Sequence[int] | None = None


def _align(logits: torch.Tensor, positions: torch.Tensor | None, shift: int) -> torch.Tensor:
    """Full-sequence logits to "row j predicts position j" at ``positions`` (all if None)."""
    if positions is None:
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if shift else logits
    source = (positions - shift).clamp(min=0)
    return logits.gather(1, source[..., None].expand(-1, -1, logits.shape[-1]))


def predict_logits(
    model: Any,
    spec: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    cache: CacheUse | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of a masked-diffusion LM, row ``j`` predicting position ``positions[:, j]``.

    Args:
        model: the LM; r2sft's classes compute the output head only at the rows needed.
        spec: anything with ``shifted_logits`` (``r2sft.specs.ModelSpec``).
        input_ids, attention_mask: ``(B, T)`` canvases and their padding mask (1 = real).
        positions: ``(B, P)`` columns to predict; None: every column, ``(B, T, V)`` out.
        cache: a decoding cache (:class:`CacheUse`). In span modes the positions of row ``r``
            must be the contiguous columns ``first_columns[r] ..`` and the tokens outside them
            unchanged since the fill; they are the only tokens recomputed besides, for the
            prefix mode, everything after them.
        position_ids: ``(B, T)`` RoPE positions of ``input_ids`` when they are not the
            padding-derived default (a canvas with columns left out); full and fill
            forwards of r2sft's classes only.

    Returns:
        ``(B, P, V)`` logits (``(B, T, V)`` without positions).
    """
    shift = int(bool(spec.shifted_logits))
    if not supports_decode_cache(model):
        if position_ids is not None:
            raise ValueError(
                f"{type(model).__name__} takes no RoPE position ids; leaving canvas columns out "
                "(--suffix_window) needs r2sft's LLaDA or Dream class."
            )
        if cache is not None:
            raise ValueError(
                f"a decoding KV cache needs a model class with r2sft's decoding cache (r2sft's "
                f"LLaDA or Dream); {type(model).__name__} has none. Decode it with --cache none."
            )
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return _align(logits, positions, shift)
    if cache is None or cache.mode == "fill":
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if cache is None:
            inputs["position_ids"] = position_ids
        else:
            inputs["kv_cache"] = cache.cache.fill(cache.rows, position_ids)
        if positions is None:
            return _align(model(**inputs).logits, None, shift)
        source = (positions - shift).clamp(min=0)
        return model(**inputs, output_positions=source).logits
    refill = cache.mode == "refill"
    if (position_ids is not None) != refill:
        raise ValueError("a cached span forward reads its RoPE positions from the cache; a "
                         "refill takes them (position_ids) with the padding mask")  # fmt: skip
    if positions is None or cache.first_columns is None:
        raise ValueError("a cached span forward needs positions and their first_columns")
    total, wanted = input_ids.shape[1], positions.shape[1]
    # Shifted models also recompute the column before the block: its output row predicts
    # the block's first position.
    starts = [max(int(column) - shift, 0) for column in cache.first_columns]
    length = wanted + shift if cache.mode == "dual" else total - min(starts)
    first = torch.tensor(starts, device=input_ids.device)[:, None]
    columns = first + torch.arange(length, device=input_ids.device)
    inside = columns.clamp(max=total - 1)
    refilled = {}
    if refill:
        real = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        refilled = {"position_ids": position_ids.gather(1, inside),
                    "valid": real.gather(1, inside).bool() & (columns < total)}  # fmt: skip
    width = cache.cache.length
    step = cache.cache.span(cache.mode, starts, length, cache.rows, **refilled)
    span_ids = input_ids.gather(1, inside)
    rows = (positions - shift).clamp(min=0) - first
    logits = model(input_ids=span_ids, kv_cache=step, output_positions=rows).logits
    if refill:  # one span length for all rows: past the canvas lie only masked columns
        cache.cache.trim(max(width, total))
    return logits
