"""Fast-dLLM's approximate KV caches: a full forward fills the cache when a row opens a block
(or refreshes it), the forwards in between recompute only part of the columns.

- ``prefix``: the block and everything after it that the forward sees are recomputed against
  the cached prompt and earlier blocks;
- ``dual``: only the block is recomputed, against the cached prefix and suffix.

Rows of one batch may be in different blocks: a step runs one full forward for the rows that
open a block or refresh, and one cached forward for the rest; each is one NFE of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from r2sft.decoding.forwards.base import Canvas, ForwardStrategy
from r2sft.modeling.forward import CacheUse, predict_logits
from r2sft.modeling.layers import KVCache


class CachedForward(ForwardStrategy):
    """A KV cache over the running rows (cache row i = running row i), refreshed by policy.

    ``refresh_tokens`` (``DecoderConfig.refresh_tokens``): refill a row's cache once that many
    of its block's tokens were committed since the last fill (0: at block starts only). The
    cached keys and values outside the recomputed span go stale as the block fills in.
    """

    span_mode: ClassVar[str]

    def __init__(self, model: Any, spec: Any, config: Any, canvas: Canvas) -> None:
        super().__init__(model, spec, config, canvas)
        self.cache = KVCache()
        self.refresh_tokens = config.refresh_tokens
        self.since_fill = torch.zeros(canvas.ids.shape[0], dtype=torch.long,
                                      device=canvas.ids.device)  # fmt: skip
        # Pruned views: the canvas column of each cache slot (None: slot c is column c).
        self.columns: torch.Tensor | None = None

    def logits(self, rows: torch.Tensor, columns: torch.Tensor, blocks: Sequence[int],
               full: Sequence[bool]) -> torch.Tensor:  # fmt: skip
        if all(full):
            return self._fill(rows, columns, blocks, None)
        if not any(full):
            return self._span(rows, columns, blocks, None)
        filled = [i for i, flag in enumerate(full) if flag]
        spanned = [i for i, flag in enumerate(full) if not flag]
        fill_at = torch.tensor(filled, device=rows.device)
        span_at = torch.tensor(spanned, device=rows.device)
        fill_logits = self._fill(rows[fill_at], columns[fill_at],
                                 [blocks[i] for i in filled], fill_at)  # fmt: skip
        span_logits = self._span(rows[span_at], columns[span_at], [blocks[i] for i in spanned],
                                 span_at)  # fmt: skip
        logits = fill_logits.new_empty((len(full), *fill_logits.shape[1:]))
        logits[fill_at] = fill_logits
        logits[span_at] = span_logits
        return logits

    def _fill(self, rows: torch.Tensor, columns: torch.Tensor, blocks: Sequence[int],
              cache_rows: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """A full forward of ``rows`` that (re)fills their cache rows (all when None)."""
        view = self.view(rows, blocks)
        if view.columns is not None:
            self._remember_columns(view.columns, cache_rows)
        use = CacheUse(self.cache, "fill", rows=cache_rows)
        return predict_logits(self.model, self.spec, view.ids, view.attention, columns, use,
                              position_ids=view.position_ids)  # fmt: skip

    def _remember_columns(self, columns: torch.Tensor, cache_rows: torch.Tensor | None) -> None:
        if cache_rows is None or self.columns is None:
            self.columns = columns
            return
        width = max(self.columns.shape[1], columns.shape[1])
        self.columns = F.pad(self.columns, (0, width - self.columns.shape[1]))
        self.columns[cache_rows] = F.pad(columns, (0, width - columns.shape[1]))

    def _span(self, rows: torch.Tensor, columns: torch.Tensor, blocks: Sequence[int],
              cache_rows: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """A forward of ``rows`` that recomputes their span against their cache rows."""
        ids = self.canvas.ids[rows]
        if self.columns is not None:
            slots = self.columns if cache_rows is None else self.columns[cache_rows]
            ids = ids.gather(1, slots)
        # Each block's first column as host ints: span shapes depend on it.
        canvas = self.canvas
        first = [canvas.width + block * canvas.block_length for block in blocks]
        use = CacheUse(self.cache, self.span_mode, rows=cache_rows, first_columns=first)
        return predict_logits(self.model, self.spec, ids, None, columns, use)

    def after_step(self, rows: torch.Tensor, committed: torch.Tensor,
                   block_done: torch.Tensor) -> torch.Tensor:  # fmt: skip
        if self.refresh_tokens <= 0:
            return block_done
        changed = self.since_fill[rows] + committed.sum(dim=-1)
        refill = block_done | (changed >= self.refresh_tokens)
        self.since_fill[rows] = torch.where(refill, 0, changed)
        return refill

    def keep(self, kept: torch.Tensor) -> None:
        self.cache.keep(kept)
        if self.columns is not None:
            self.columns = self.columns.index_select(0, kept)


class PrefixCache(CachedForward):
    name = "prefix"
    description = ("Fast-dLLM's prefix cache: recompute the block and what follows it against "
                   "the cached prompt and earlier blocks")  # fmt: skip
    span_mode = "prefix"


class DualCache(CachedForward):
    name = "dual"
    description = ("Fast-dLLM's dual cache: recompute only the block against the cached prefix "
                   "and suffix")  # fmt: skip
    span_mode = "dual"
