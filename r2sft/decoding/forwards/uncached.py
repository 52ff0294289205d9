"""Every forward runs over the whole (or the pruned) canvas: the reference the caches
approximate."""

from __future__ import annotations

import torch

from r2sft.decoding.forwards.base import ForwardStrategy, Running
from r2sft.modeling.forward import predict_logits


class Uncached(ForwardStrategy):
    name = "none"
    description = "no cache: every forward recomputes every column it sees"

    def logits(self, running: Running) -> torch.Tensor:
        view = self.view(running.index, running.blocks)
        return predict_logits(self.model, self.spec, view.ids, view.attention, running.columns,
                              position_ids=view.position_ids)  # fmt: skip
