"""Which canvas columns a forward sees: all of them, or (Streaming-dLLM's suffix pruning) the
prompt, the blocks up to the current one, a window of masks after it and the canvas's tail.

Pure functions on the batch layout ``[pad | prompt | generated canvas]`` (``width`` prompt
columns, then ``gen_length`` generated ones). A pruned row keeps every column before
``end = width + min((block + 1) * block_length + window, gen_length)`` at its own index, then
the ``tail`` last columns of the canvas (those not already kept), then filler columns that
are masked out (rows of one batch may sit in different blocks). Columns keep their true RoPE
positions, so attention among the kept ones is what it would be on the whole canvas; what
changes is only that the masks left out are not attended to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Pruning:
    """Suffix pruning: ``window`` masks after the block, and the canvas's last ``tail``."""

    window: int
    tail: int


def visible_ends(blocks: Sequence[int], width: int, block_length: int, gen_length: int,
                 window: int) -> list[int]:  # fmt: skip
    """Per row, the first column after its contiguous visible span (host ints)."""
    return [width + min((block + 1) * block_length + window, gen_length) for block in blocks]


def pruned_columns(
    blocks: Sequence[int], width: int, block_length: int, gen_length: int, pruning: Pruning,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``columns`` ``[n, S]``: the canvas column each slot of a pruned row holds, and ``kept``
    ``[n, S]``: which slots are real (the rest is filler). Slot ``c < end`` holds column
    ``c``, so a row's block sits at the same index in the view as on the canvas."""
    total = width + gen_length
    ends = visible_ends(blocks, width, block_length, gen_length, pruning.window)
    tails = [max(0, min(pruning.tail, total - end)) for end in ends]
    slots = max(end + tail for end, tail in zip(ends, tails, strict=True))
    end = torch.tensor(ends, device=device)[:, None]
    tail = torch.tensor(tails, device=device)[:, None]
    slot = torch.arange(slots, device=device)[None]
    in_tail = (slot >= end) & (slot < end + tail)
    columns = torch.where(slot < end, slot, torch.where(in_tail, total - tail + slot - end, 0))
    return columns, (slot < end) | in_tail


def seen_after_block(
    block_index: torch.Tensor, block_length: int, gen_length: int, pruning: Pruning | None
) -> torch.Tensor:
    """``[n, G]`` bool: the generated positions a forward sees from the row's block on."""
    position = torch.arange(gen_length, device=block_index.device)[None]
    start = (block_index * block_length)[:, None]
    seen = position >= start
    if pruning is None:
        return seen
    end = (start + block_length + pruning.window).clamp(max=gen_length)
    # The tail counts only from the block on: a tail longer than what is left after the block
    # reaches back over committed positions the forward does not see as tail (pruned_columns).
    return seen & ((position < end) | (position >= gen_length - pruning.tail))


def visible_mask_ratio(generated_masked: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``[n]`` share of masks among the positions ``seen`` (Streaming-dLLM's ``r``)."""
    return (generated_masked & seen).sum(-1).double() / seen.sum(-1).clamp(min=1).double()
