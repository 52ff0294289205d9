"""R² temporal finalisation: commit a mask whose top-1 has been stable for K forwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from r2sft.decoding.options import at_least, confidence, option
from r2sft.decoding.rules.base import CommitRule, RowState, Rule, StepView

TemporalAgg = Literal["last", "ave", "max"]


@dataclass
class TemporalOptions:
    temporal_k: int = option(3, "R²: temporal streak K (0 turns temporal finalisation off)",
                             check=at_least(0))  # fmt: skip
    tau_t: float = option(0.8, "R²: temporal threshold on the streak's aggregated confidence",
                          check=confidence)  # fmt: skip
    temporal_agg: TemporalAgg = option("last", "R²: streak aggregation: last | ave | max")


@dataclass(frozen=True)
class TemporalState(RowState):
    """Per block position: the tracked top-1 token and its streak statistics."""

    token: torch.Tensor = field(metadata={"reset": -1})  # [N, L] long, -1: not tracking
    count: torch.Tensor = field(metadata={"reset": 0})  # [N, L] consecutive forwards
    conf_sum: torch.Tensor = field(metadata={"reset": 0.0})  # [N, L] fp32
    conf_max: torch.Tensor = field(metadata={"reset": 0.0})  # [N, L] fp32

    @classmethod
    def empty(cls, rows: int, length: int, device: torch.device | str) -> TemporalState:
        return cls(
            torch.full((rows, length), -1, dtype=torch.long, device=device),
            torch.zeros(rows, length, dtype=torch.long, device=device),
            torch.zeros(rows, length, device=device),
            torch.zeros(rows, length, device=device),
        )


def temporal_commit(
    state: TemporalState,
    cand: torch.Tensor,
    conf: torch.Tensor,
    masked: torch.Tensor,
    k: int,
    tau_t: float,
    agg: str = "last",
) -> tuple[TemporalState, torch.Tensor]:
    """R² temporal finalisation: update the streaks with this forward's top-1, then commit
    every still-masked position whose streak is ``>= k`` forwards long and whose aggregated
    confidence (last | ave | max over the streak) is ``>= tau_t``.

    Only still-masked positions are tracked; the streak resets when the top-1 changes and
    the state of a position is dropped once it is committed (masked False).
    """
    conf = conf.float()
    same = masked & (state.token == cand)
    count = torch.where(same, state.count + 1, torch.where(masked, 1, 0))
    conf_sum = torch.where(same, state.conf_sum + conf, torch.where(masked, conf, 0.0))
    conf_max = torch.where(
        same, torch.maximum(state.conf_max, conf), torch.where(masked, conf, 0.0)
    )
    token = torch.where(masked, cand, -1)
    if agg == "last":
        aggregated = conf
    elif agg == "ave":
        aggregated = conf_sum / count.clamp(min=1)
    elif agg == "max":
        aggregated = conf_max
    else:
        raise ValueError(f"temporal aggregation {agg!r} must be last, ave or max")
    commit = masked & (count >= k) & (aggregated >= tau_t) if k > 0 else torch.zeros_like(masked)
    return TemporalState(token, count, conf_sum, conf_max), commit


@dataclass(frozen=True)
class TemporalRule(Rule):
    k: int
    tau_t: float
    agg: str

    name = "temporal"
    code = int(CommitRule.TEMPORAL)
    description = "R²: masks whose top-1 held for K forwards with confidence >= tau_t"
    options = TemporalOptions

    @classmethod
    def from_config(cls, config: Any) -> TemporalRule | None:
        if not config.r2 or config.temporal_k <= 0:
            return None
        return cls(config.temporal_k, config.tau_t, config.temporal_agg)

    def init_state(self, rows: int, block_length: int, device: torch.device) -> TemporalState:
        return TemporalState.empty(rows, block_length, device)

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: TemporalState
    ) -> tuple[torch.Tensor, TemporalState]:
        new_state, commit = temporal_commit(state, view.cand, view.conf, open_positions,
                                            self.k, self.tau_t, self.agg)  # fmt: skip
        return commit, new_state
