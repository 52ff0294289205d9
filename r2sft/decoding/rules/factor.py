"""Fast-dLLM's factor policy: commit as many of the most confident masks as the factor allows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from r2sft.decoding.options import greater_than, option
from r2sft.decoding.rules.base import CommitRule, Rule, StepView, rank_descending

FactorVariant = Literal["paper", "official"]


@dataclass
class FactorOptions:
    factor: float = option(1.0, "factor policy: f", check=greater_than(0))
    factor_rule: FactorVariant = option(
        "paper",
        "factor policy: paper (the largest top-n with (n + 1)(1 - c_n) < f) | official (the "
        "official code's variant, which also commits the last mask when only it fails)",
    )


def factor_commit(
    conf: torch.Tensor, masked: torch.Tensor, factor: float, rule: str = "paper"
) -> torch.Tensor:
    """Fast-dLLM factor: the largest top-n with ``(n + 1) * (1 - c_n) < factor``, at least one.

    ``(n + 1) * (1 - c_n)`` grows with n for descending c_n, so the qualifying n form a
    prefix; the cumulative product keeps it a prefix under rounding too.

    ``rule="official"`` is the official code's variant: the test reads
    ``c_n >= 1 - factor / (n + 1)`` (equality passes), and when every mask but the last
    passes, the last one commits too (a block with two masks left commits both).
    """
    scores = conf.masked_fill(~masked, float("-inf"))
    ordered = scores.sort(dim=-1, descending=True, stable=True).values
    n = torch.arange(1, conf.shape[-1] + 1, device=conf.device, dtype=conf.dtype)
    if rule == "paper":
        passes = (n + 1) * (1 - ordered) < factor
    elif rule == "official":
        passes = ordered >= 1 - factor / (n + 1)
    else:
        raise ValueError(f"factor rule {rule!r} must be paper or official")
    passes = passes & torch.isfinite(ordered)
    count = passes.long().cumprod(dim=-1).sum(dim=-1).clamp(min=1)
    if rule == "official":
        open_count = masked.sum(dim=-1)
        count = torch.where(count == open_count - 1, open_count, count)
    return masked & (rank_descending(conf, masked) < count.unsqueeze(-1))


@dataclass(frozen=True)
class FactorRule(Rule):
    factor: float
    variant: str

    name = "factor"
    code = int(CommitRule.BASELINE)
    description = "Fast-dLLM: the largest top-n of masks with (n + 1)(1 - c_n) < f"
    options = FactorOptions
    policy = True

    @classmethod
    def from_config(cls, config: Any) -> FactorRule | None:
        return cls(config.factor, config.factor_rule) if config.policy == cls.name else None

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: None
    ) -> tuple[torch.Tensor, None]:
        return factor_commit(view.conf, open_positions, self.factor, self.variant), None
