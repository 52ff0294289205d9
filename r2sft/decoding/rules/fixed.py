"""LLaDA's low-confidence schedule: a fixed number of the most confident masks per forward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from r2sft.decoding.options import at_least, option
from r2sft.decoding.rules.base import CommitRule, RowState, Rule, StepView, rank_descending


@dataclass
class FixedOptions:
    steps: int | None = option(
        None,
        "fixed policy: forwards over the whole canvas, a multiple of the number of blocks "
        "(None: gen_length, one token per forward)",
        check=at_least(1),
    )


def fixed_commit(
    conf: torch.Tensor, masked: torch.Tensor, num_tokens: torch.Tensor
) -> torch.Tensor:
    """LLaDA low-confidence schedule: the ``num_tokens[n]`` most confident masked positions."""
    return masked & (rank_descending(conf, masked) < num_tokens.unsqueeze(-1))


@dataclass(frozen=True)
class BlockStep(RowState):
    """Forwards a row has run in its current block."""

    count: torch.Tensor = field(metadata={"reset": 0})  # [N] long


@dataclass(frozen=True)
class FixedRule(Rule):
    """The block's masks spread evenly over ``steps_per_block`` forwards, the remainder
    going to the first ones."""

    per_step: int
    remainder: int

    name = "fixed"
    code = int(CommitRule.BASELINE)
    description = "LLaDA: the k most confident masks of each forward (k = block / steps)"
    options = FixedOptions
    policy = True

    @classmethod
    def from_config(cls, config: Any) -> FixedRule | None:
        if config.policy != cls.name:
            return None
        return cls(*divmod(config.block_length, config.steps_per_block))

    def init_state(self, rows: int, block_length: int, device: torch.device) -> BlockStep:
        return BlockStep(torch.zeros(rows, dtype=torch.long, device=device))

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: BlockStep
    ) -> tuple[torch.Tensor, BlockStep]:
        num_tokens = self.per_step + (state.count < self.remainder).long()
        return fixed_commit(view.conf, open_positions, num_tokens), BlockStep(state.count + 1)
