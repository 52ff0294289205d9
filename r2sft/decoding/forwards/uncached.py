"""Every forward runs over the whole (or the pruned) canvas: the reference the caches
approximate."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from r2sft.decoding.forwards.base import ForwardStrategy
from r2sft.modeling.forward import predict_logits


class Uncached(ForwardStrategy):
    name = "none"
    description = "no cache: every forward recomputes every column it sees"

    def logits(self, rows: torch.Tensor, columns: torch.Tensor, blocks: Sequence[int],
               full: Sequence[bool]) -> torch.Tensor:  # fmt: skip
        view = self.view(rows, blocks)
        return predict_logits(self.model, self.spec, view.ids, view.attention, columns,
                              position_ids=view.position_ids)  # fmt: skip
