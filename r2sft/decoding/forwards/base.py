"""The canvas of a decode batch and the base of the forward strategies.

A forward strategy answers one question of the sampler: the logits of each running row's
active block. It owns what that costs: which columns a forward runs over (all, or a pruned
view), whether a KV cache holds the rest, and when the cache is refilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2sft.decoding.forwards.view import Pruning, pruned_columns, seen_after_block
from r2sft.modeling.layers import padding_position_ids


@dataclass
class Canvas:
    """A batch of left-padded canvases ``[pad | prompt | generated]`` being decoded.

    ``ids`` is updated in place by the sampler; ``attention`` (1 = real token) and
    ``positions`` (RoPE positions: real tokens before each column) never change.
    """

    ids: torch.Tensor  # [B, T] long
    attention: torch.Tensor  # [B, T] long
    positions: torch.Tensor  # [B, T] long
    width: int  # prompt columns (padding included)
    block_length: int
    gen_length: int

    @classmethod
    def start(cls, prompts: Sequence[Sequence[int]], pad_id: int, mask_id: int,
              block_length: int, gen_length: int, device: torch.device) -> Canvas:  # fmt: skip
        """Prompts left-padded to the longest, then ``gen_length`` masks."""
        width = max(len(prompt) for prompt in prompts)
        rows = len(prompts)
        ids = torch.full((rows, width + gen_length), mask_id, dtype=torch.long)
        attention = torch.ones((rows, width + gen_length), dtype=torch.long)
        ids[:, :width] = pad_id
        attention[:, :width] = 0
        for row, prompt in enumerate(prompts):
            if len(prompt):
                ids[row, width - len(prompt) : width] = torch.as_tensor(list(prompt))
                attention[row, width - len(prompt) : width] = 1
        ids, attention = ids.to(device), attention.to(device)
        positions = padding_position_ids(attention, rows, width + gen_length, device)
        return cls(ids, attention, positions, width, block_length, gen_length)

    def block_columns(self, block_index: torch.Tensor) -> torch.Tensor:
        """``[n, L]`` canvas columns of blocks ``block_index`` (``[n]``)."""
        offsets = torch.arange(self.block_length, device=block_index.device)
        return self.width + block_index[:, None] * self.block_length + offsets

    @property
    def generated(self) -> torch.Tensor:
        """``[B, G]`` the generated canvas (a view: writes go to ``ids``)."""
        return self.ids[:, self.width :]


@dataclass(frozen=True)
class Running:
    """The rows of one forward step: canvas row ids (host) and their index tensor, each row's
    block (host) and its block's canvas columns (``[n, L]``), and whether the row's forward
    is a full one (a block opening or a cache refresh)."""

    ids: list[int]
    index: torch.Tensor
    blocks: list[int]
    columns: torch.Tensor
    full: list[bool]

    def subset(self, positions: list[int]) -> Running:
        at = torch.tensor(positions, device=self.index.device)
        return Running([self.ids[i] for i in positions], self.index[at],
                       [self.blocks[i] for i in positions], self.columns[at],
                       [self.full[i] for i in positions])  # fmt: skip


@dataclass(frozen=True)
class CanvasView:
    """The columns one forward runs over, for some rows: the ids, padding mask and (for a
    pruned view) RoPE positions and the canvas column of each slot."""

    ids: torch.Tensor
    attention: torch.Tensor
    position_ids: torch.Tensor | None  # None: the canvas itself (positions from the mask)
    columns: torch.Tensor | None  # None: slot c is column c


class ForwardStrategy:
    """How the sampler gets block logits; one subclass per cache mode.

    Class attributes: ``name`` (the ``--cache`` value) and ``description``.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, model: Any, spec: Any, config: Any, canvas: Canvas) -> None:
        self.model, self.spec, self.canvas = model, spec, canvas
        self.pruning = (
            None if config.suffix_window is None
            else Pruning(config.suffix_window, config.suffix_tail)
        )  # fmt: skip

    def view(self, rows: torch.Tensor, blocks: Sequence[int]) -> CanvasView:
        """What a full forward of ``rows`` (in blocks ``blocks``, host ints) runs over."""
        canvas = self.canvas
        if self.pruning is None:
            return CanvasView(canvas.ids[rows], canvas.attention[rows], None, None)
        columns, kept = pruned_columns(blocks, canvas.width, canvas.block_length,
                                       canvas.gen_length, self.pruning, rows.device)  # fmt: skip
        return CanvasView(
            canvas.ids[rows].gather(1, columns),
            canvas.attention[rows].gather(1, columns) * kept,
            canvas.positions[rows].gather(1, columns),
            columns,
        )

    def seen_after_block(self, block_index: torch.Tensor) -> torch.Tensor:
        """``[n, G]`` generated positions a forward of rows in ``block_index`` sees from the
        block's start on (Streaming-dLLM's mask ratio counts masks among them)."""
        canvas = self.canvas
        return seen_after_block(block_index, canvas.block_length, canvas.gen_length,
                                self.pruning)  # fmt: skip

    def logits(self, running: Running) -> torch.Tensor:
        """``[n, L, V]`` logits at the block columns of the running rows."""
        raise NotImplementedError

    def after_step(self, rows: torch.Tensor, committed: torch.Tensor,
                   block_done: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``[n]`` bool: whether each row's next forward must be a full one (a new block; a
        cache refresh). Read by the sampler's one host sync of the step."""
        return block_done

    def keep(self, kept: torch.Tensor) -> None:
        """Only the running rows at positions ``kept`` go on (finished rows leave)."""
