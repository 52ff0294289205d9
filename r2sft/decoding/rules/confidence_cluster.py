"""R² confidence cluster: commit every mask of a window the model is already sure about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from r2sft.decoding.options import at_least, confidence, option
from r2sft.decoding.rules.base import CommitRule, Rule, StepView


@dataclass
class ConfidenceClusterOptions:
    window: int = option(
        3, "R²: confidence-cluster window w (0 turns off both cluster rules, as in the "
        "official code)", check=at_least(0),
    )  # fmt: skip
    tau_s: float = option(
        0.8, "R²: spatial threshold: a window's mean mask confidence (>=) and a token "
        "cluster's highest confidence (>)", check=confidence,
    )  # fmt: skip
    u_max: int = option(1, "R²: most committed tokens a qualifying window may hold",
                        check=at_least(0))  # fmt: skip


def confidence_cluster_windows(
    conf: torch.Tensor, masked: torch.Tensor, window: int, tau_s: float, u_max: int
) -> torch.Tensor:
    """Which sliding windows qualify as confidence clusters: ``[N, L - window + 1]`` bool.

    A window qualifies when it holds at most ``u_max`` committed tokens, at least one mask,
    and the mean confidence of its masked positions is ``>= tau_s``.
    """
    length = conf.shape[-1]
    if window <= 0 or length < window:
        return torch.zeros(conf.shape[0], 0, dtype=torch.bool, device=conf.device)
    masked_count = masked.to(conf.dtype).unfold(-1, window, 1).sum(-1)
    conf_sum = conf.masked_fill(~masked, 0.0).unfold(-1, window, 1).sum(-1)
    mean_conf = conf_sum / masked_count.clamp(min=1)
    return (window - masked_count <= u_max) & (masked_count >= 1) & (mean_conf >= tau_s)


def confidence_cluster_commit(
    conf: torch.Tensor, masked: torch.Tensor, window: int, tau_s: float, u_max: int
) -> torch.Tensor:
    """R² confidence cluster: commit the union of the masked positions of qualifying windows.

    All windows are judged on the same canvas (the one the rule receives).
    """
    qualifies = confidence_cluster_windows(conf, masked, window, tau_s, u_max)
    if qualifies.shape[-1] == 0:
        return torch.zeros_like(masked)
    # Position j is covered by windows starting in [j - w + 1, j]: a max over a sliding
    # window of the qualification flags padded by w - 1 on both sides.
    padded = F.pad(qualifies.float(), (window - 1, window - 1))
    covered = padded.unfold(-1, window, 1).amax(-1) > 0
    return masked & covered


@dataclass(frozen=True)
class ConfidenceClusterRule(Rule):
    window: int
    tau_s: float
    u_max: int

    name = "confidence_cluster"
    code = int(CommitRule.CONFIDENCE_CLUSTER)
    description = "R²: the masks of every window of w with mean confidence >= tau_s"
    options = ConfidenceClusterOptions

    @classmethod
    def from_config(cls, config: Any) -> ConfidenceClusterRule | None:
        if not config.r2:
            return None
        return cls(config.window, config.tau_s, config.u_max)

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: None
    ) -> tuple[torch.Tensor, None]:
        commit = confidence_cluster_commit(view.conf, open_positions, self.window, self.tau_s,
                                           self.u_max)  # fmt: skip
        return commit, None
