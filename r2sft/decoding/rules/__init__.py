"""The commit rules and their registry: which positions of the active block one forward commits.

:data:`RULES` is the one ordered list of rules. In every forward the rules that the decoder
config runs (:func:`rule_chain`) apply in this order, each on the positions the rules before
it left masked; a position keeps the code of the first rule that committed it. The baseline
policies come first (exactly one runs, ``DecoderConfig.policy``), then the R² rules of
docs/method.md (``DecoderConfig.r2``): confidence cluster, token cluster, temporal
finalisation. Each rule's options join :class:`~r2sft.decoding.config.DecoderConfig`.

A new rule is a new file here and one line in :data:`RULES` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from r2sft.decoding.rules.base import (
    CommitRule,
    RowState,
    Rule,
    StepView,
    answer_complete,
    check_registry,
    chosen_confidence,
    rank_descending,
)
from r2sft.decoding.rules.confidence_cluster import (
    ConfidenceClusterRule,
    confidence_cluster_commit,
    confidence_cluster_windows,
)
from r2sft.decoding.rules.factor import FactorRule, factor_commit
from r2sft.decoding.rules.fixed import FixedRule, fixed_commit
from r2sft.decoding.rules.temporal import TemporalRule, TemporalState, temporal_commit
from r2sft.decoding.rules.threshold import ThresholdRule, mask_aware_threshold, threshold_commit
from r2sft.decoding.rules.token_cluster import TokenClusterRule, token_cluster_commit, token_runs

RULES: tuple[type[Rule], ...] = (
    FixedRule,
    ThresholdRule,
    FactorRule,
    ConfidenceClusterRule,
    TokenClusterRule,
    TemporalRule,
)
check_registry(RULES)

POLICY_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES if rule.policy)


def rule_chain(config: Any) -> list[Rule]:
    """The rules ``config`` runs, in registry order, with its parameters."""
    chain = [rule for cls in RULES if (rule := cls.from_config(config)) is not None]
    if sum(rule.policy for rule in chain) != 1:
        raise ValueError(f"policy {config.policy!r} must be one of {', '.join(POLICY_NAMES)}.")
    return chain


def commit_step(
    view: StepView, chain: Sequence[Rule], states: Sequence[RowState | None]
) -> tuple[torch.Tensor, list[RowState | None]]:
    """One forward's commits: ``[n, L]`` int8 rule code per position (0: stays masked) and
    each rule's updated state (``states``: the running rows' state of each rule)."""
    codes = torch.zeros_like(view.masked, dtype=torch.int8)
    open_positions = view.masked
    new_states = []
    for rule, state in zip(chain, states, strict=True):
        commit, new_state = rule.commit(view, open_positions, state)
        commit = commit & open_positions
        codes = torch.where(commit, rule.code, codes).to(torch.int8)
        open_positions = open_positions & ~commit
        new_states.append(new_state)
    return codes, new_states


class ChainState:
    """The per-row state of every rule of a chain over one decode batch."""

    def __init__(self, chain: Sequence[Rule], rows: int, block_length: int,
                 device: torch.device) -> None:  # fmt: skip
        self.states = [rule.init_state(rows, block_length, device) for rule in chain]

    def select(self, rows: torch.Tensor) -> list[RowState | None]:
        return [None if state is None else state.select(rows) for state in self.states]

    def write(self, rows: torch.Tensor, new_states: Sequence[RowState | None],
              block_done: torch.Tensor) -> None:  # fmt: skip
        """Store the running rows' new states; rows whose block ended start afresh."""
        for state, new_state in zip(self.states, new_states, strict=True):
            if state is not None:
                state.write(rows, new_state, block_done)


__all__ = [
    "POLICY_NAMES",
    "RULES",
    "ChainState",
    "CommitRule",
    "RowState",
    "Rule",
    "StepView",
    "TemporalState",
    "answer_complete",
    "chosen_confidence",
    "commit_step",
    "confidence_cluster_commit",
    "confidence_cluster_windows",
    "factor_commit",
    "fixed_commit",
    "mask_aware_threshold",
    "rank_descending",
    "rule_chain",
    "temporal_commit",
    "threshold_commit",
    "token_cluster_commit",
    "token_runs",
]
