"""Fast-dLLM's approximate KV caches: a full forward fills the cache when a row opens a block
(or refreshes it), the forwards in between recompute only part of the columns.

- ``prefix``: the block and everything after it that the forward sees are recomputed against
  the cached prompt and earlier blocks;
- ``dual``: only the block is recomputed, against the cached prefix and suffix.

Rows of one batch may be in different blocks: a step runs one full forward for the rows that
open a block or refresh, and one cached forward for the rest; each is one NFE of its rows.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from r2sft.decoding.forwards.base import Canvas, ForwardStrategy, Running
from r2sft.modeling.forward import CacheUse, predict_logits
from r2sft.modeling.layers import KVCache

logger = logging.getLogger(__name__)


class CompiledStep:
    """``model`` behind ``torch.compile`` for the in-block cached step, made once per model
    (compiled graphs are reused by every later decode), falling back to the eager model with
    a one-line warning when compiling fails (e.g. no C++ compiler for a CPU build)."""

    _ATTRIBUTE: ClassVar[str] = "_r2sft_compiled_step"

    def __init__(self, model: Any) -> None:
        on_gpu = next(model.parameters()).is_cuda
        # reduce-overhead adds CUDA graphs: one replay instead of hundreds of kernel launches.
        # dynamic: one graph for every batch size and cache width (rows leave, views grow).
        self.compiled = torch.compile(
            model, mode="reduce-overhead" if on_gpu else None, dynamic=True
        )
        self.model = model
        self.failed = False

    @classmethod
    def of(cls, model: Any) -> CompiledStep:
        step = vars(model).get(cls._ATTRIBUTE)
        if step is None:
            step = cls(model)
            # Kept on the model (it lives as long as the model does); set past nn.Module's
            # __setattr__, so it is no submodule and no state_dict entry.
            object.__setattr__(model, cls._ATTRIBUTE, step)
        return step

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            try:
                # No "duck" sizes: a batch as wide as the head count must not make a graph
                # that assumes they stay equal (one recompile per coincidence otherwise).
                with torch.fx.experimental._config.patch(use_duck_shape=False):
                    return self.compiled(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise  # the batch's memory, not the compiler: eager would hide it, not fix it
            except Exception as error:  # noqa: BLE001  (any compiler failure: decode eagerly)
                self.failed = True
                logger.warning(
                    "--compile: torch.compile failed (%s: %s); decoding eagerly",
                    type(error).__name__,
                    str(error).splitlines()[0][:200],
                )
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # supports_decode_cache, config, parameters
        return getattr(self.model, name)


class CachedForward(ForwardStrategy):
    """A KV cache over the running rows (cache row i = running row i), refilled by policy.

    ``cache_refresh``: refill a row's cache once that many of its block's tokens were
    committed since the last fill (0: at block starts only). The cached keys and values
    outside the recomputed span go stale as the block fills in.

    ``cache_reuse``: a block opening recomputes only from the block just committed on,
    against the cached prompt and earlier blocks (a "refill" that keeps them), for up to that
    many openings in a row; then a full fill (0: every opening is a full fill).
    """

    span_mode: ClassVar[str]

    def __init__(self, model: Any, spec: Any, config: Any, canvas: Canvas) -> None:
        super().__init__(model, spec, config, canvas)
        self.cache = KVCache()
        self.refresh_tokens = config.cache_refresh
        self.reuse = config.cache_reuse
        self.since_fill = torch.zeros(canvas.ids.shape[0], dtype=torch.long,
                                      device=canvas.ids.device)  # fmt: skip
        # Per canvas row (host): the block of its last fill or refill, and refills in a row.
        self.filled_block: dict[int, int] = {}
        self.refills: dict[int, int] = {}
        # Pruned views: the canvas column of each cache slot (None: slot c is column c).
        self.columns: torch.Tensor | None = None
        compiled = config.compile and self.span_mode == "dual"
        self.span_model = CompiledStep.of(model) if compiled else model

    def logits(self, running: Running) -> torch.Tensor:
        kinds = [self._kind(row, block, full)
                 for row, block, full in zip(running.ids, running.blocks, running.full,
                                             strict=True)]  # fmt: skip
        forwards = {"fill": self._fill, "refill": self._refill, "span": self._span}
        if len(set(kinds)) == 1:
            return forwards[kinds[0]](running, None)
        logits = None
        for kind, forward in forwards.items():
            positions = [i for i, found in enumerate(kinds) if found == kind]
            if positions:
                cache_rows = torch.tensor(positions, device=running.index.device)
                part = forward(running.subset(positions), cache_rows)
                if logits is None:
                    logits = part.new_empty((len(kinds), *part.shape[1:]))
                logits[cache_rows] = part
        return logits

    def _kind(self, row: int, block: int, full: bool) -> str:
        """fill, refill or span: what this row's forward does (and the bookkeeping of it)."""
        if not full:
            return "span"
        opening = self.filled_block.get(row, block) != block
        if opening and self.refills.get(row, 0) < self.reuse:
            self.refills[row] = self.refills.get(row, 0) + 1
            kind = "refill"
        else:
            self.refills[row] = 0
            kind = "fill"
        self.filled_block[row] = block
        return kind

    def _fill(self, running: Running, cache_rows: torch.Tensor | None) -> torch.Tensor:
        """A full forward that (re)fills the rows' cache rows (all when None)."""
        view = self.view(running.index, running.blocks)
        if view.columns is not None:
            self._remember_columns(view.columns, cache_rows)
        use = CacheUse(self.cache, "fill", rows=cache_rows)
        return predict_logits(self.model, self.spec, view.ids, view.attention, running.columns,
                              use, position_ids=view.position_ids)  # fmt: skip

    def _refill(self, running: Running, cache_rows: torch.Tensor | None) -> torch.Tensor:
        """A block opening that recomputes from the block just committed on and stores it,
        keeping the cached columns before it."""
        view = self.view(running.index, running.blocks)
        if view.columns is not None:
            self._remember_columns(view.columns, cache_rows)
        positions = view.position_ids
        if positions is None:
            positions = self.canvas.positions[running.index]
        canvas = self.canvas
        first = [canvas.width + (block - 1) * canvas.block_length for block in running.blocks]
        use = CacheUse(self.cache, "refill", rows=cache_rows, first_columns=first)
        return predict_logits(self.model, self.spec, view.ids, view.attention, running.columns,
                              use, position_ids=positions)  # fmt: skip

    def _remember_columns(self, columns: torch.Tensor, cache_rows: torch.Tensor | None) -> None:
        if cache_rows is None or self.columns is None:
            self.columns = columns
            return
        width = max(self.columns.shape[1], columns.shape[1])
        self.columns = F.pad(self.columns, (0, width - self.columns.shape[1]))
        self.columns[cache_rows] = F.pad(columns, (0, width - columns.shape[1]))

    def _span(self, running: Running, cache_rows: torch.Tensor | None) -> torch.Tensor:
        """A forward that recomputes the rows' span against their cache rows."""
        ids = self.canvas.ids[running.index]
        if self.columns is not None:
            slots = self.columns if cache_rows is None else self.columns[cache_rows]
            ids = ids.gather(1, slots)
        # Each block's first column as host ints: span shapes depend on it.
        canvas = self.canvas
        first = [canvas.width + block * canvas.block_length for block in running.blocks]
        use = CacheUse(self.cache, self.span_mode, rows=cache_rows, first_columns=first)
        return predict_logits(self.span_model, self.spec, ids, None, running.columns, use)

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
