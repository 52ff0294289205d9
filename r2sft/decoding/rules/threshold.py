"""Fast-dLLM's confidence threshold, with Streaming-dLLM's mask-aware variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from r2sft.decoding.options import confidence, fraction, option
from r2sft.decoding.rules.base import CommitRule, Rule, StepView


@dataclass
class ThresholdOptions:
    threshold: float = option(0.9, "threshold policy: confidence tau0 a token needs",
                              check=confidence)  # fmt: skip
    threshold_alpha: float = option(
        0.0,
        "threshold policy: Streaming-dLLM's mask-aware threshold, tau = tau0 * (1 - alpha * "
        "(1 - r)) with r the share of masks the forward saw from the block on; the forward "
        "that opens a block uses tau0 (0: the plain threshold)",
        check=fraction,
    )


def threshold_commit(
    conf: torch.Tensor, masked: torch.Tensor, threshold: float | torch.Tensor
) -> torch.Tensor:
    """Fast-dLLM threshold: the most confident masked position plus all with conf >= tau
    (``threshold`` a number, or ``[n, 1]`` per row)."""
    best = conf.masked_fill(~masked, float("-inf")).argmax(dim=-1, keepdim=True)
    is_best = torch.zeros_like(masked).scatter_(-1, best, True)
    return masked & (is_best | (conf >= threshold))


def mask_aware_threshold(
    tau0: float, alpha: float, mask_ratio: torch.Tensor, block_start: torch.Tensor
) -> torch.Tensor:
    """Streaming-dLLM's per-row threshold ``[n, 1]``: ``tau0 * (1 - alpha * (1 - r))``, and
    ``tau0`` itself at a block's first forward. Fewer masks left (r small) lower it."""
    tau = tau0 * (1.0 - alpha * (1.0 - mask_ratio.double()))
    return torch.where(block_start, tau0, tau)[:, None]


@dataclass(frozen=True)
class ThresholdRule(Rule):
    threshold: float
    alpha: float

    name = "threshold"
    code = int(CommitRule.BASELINE)
    description = "Fast-dLLM: the most confident mask plus every mask with conf >= tau"
    options = ThresholdOptions
    policy = True

    @classmethod
    def from_config(cls, config: Any) -> ThresholdRule | None:
        if config.policy != cls.name:
            return None
        return cls(config.threshold, config.threshold_alpha)

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: None
    ) -> tuple[torch.Tensor, None]:
        tau: float | torch.Tensor = self.threshold
        if self.alpha > 0:
            tau = mask_aware_threshold(self.threshold, self.alpha, view.visible_mask_ratio(),
                                       view.block_start)  # fmt: skip
        return threshold_commit(view.conf, open_positions, tau), None
