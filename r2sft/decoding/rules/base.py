"""What a commit rule is: a small object that, in one forward, picks positions of the active
block to commit, optionally keeping per-row state across the forwards of a block.

Every tensor is in block coordinates ``[n, L]`` (n running rows, L = block length): ``cand``
the candidate token of each position, ``conf`` its probability, ``open`` the positions still
masked after the rules before this one. Rules never leave the device (no ``.item()``, no
data-dependent shapes), so a decode step costs at most the one host sync of the sampler.

docs/extending.md shows how to add one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import torch


class CommitRule(IntEnum):
    """Codes of the shipped rules, stored as int8 in ``DecodeResult.rule_map``. A new rule
    takes a code of its own (its class's ``code``); 0 and 5 are the sampler's."""

    UNCOMMITTED = 0
    BASELINE = 1  # the policy: fixed / threshold / factor
    CONFIDENCE_CLUSTER = 2
    TOKEN_CLUSTER = 3
    TEMPORAL = 4
    EARLY_EXIT = 5  # end-of-text fill after a complete answer (DecoderConfig.early_exit)


@dataclass(frozen=True)
class StepView:
    """What the rules of one forward see, for its ``n`` running rows.

    Attributes:
        cand: ``[n, L]`` candidate token per block position.
        conf: ``[n, L]`` its probability (fp64, :func:`chosen_confidence`).
        masked: ``[n, L]`` masks on the canvas before this forward.
        block_start: ``[n]`` bool, this forward is the first of the row's block.
        logits: ``[n, L, V]`` the forward's logits (None for hand-built views).
        fp32_confidence: ``() -> [n, L]`` the probability of ``cand`` under an fp32 softmax
            (the official token cluster ranks these: near 1 they tie).
        visible_mask_ratio: ``() -> [n]`` the share of masks among the generated positions
            this forward saw from the block's start on (the block and the suffix it kept).
        draw_uniform: ``size -> [n, size]`` draws in [0, 1) from each row's own seeded
            generator (a row's draws do not depend on its batch).
    """

    cand: torch.Tensor
    conf: torch.Tensor
    masked: torch.Tensor
    block_start: torch.Tensor
    logits: torch.Tensor | None
    fp32_confidence: Callable[[], torch.Tensor]
    visible_mask_ratio: Callable[[], torch.Tensor]
    draw_uniform: Callable[[int], torch.Tensor]

    @classmethod
    def of(
        cls,
        cand: torch.Tensor,
        conf: torch.Tensor,
        masked: torch.Tensor,
        *,
        block_start: torch.Tensor | None = None,
        fp32_confidence: torch.Tensor | None = None,
        mask_ratio: torch.Tensor | None = None,
        uniform: torch.Tensor | None = None,
    ) -> StepView:
        """A view from hand-built tensors (tests; callers outside the sampler):
        ``block_start`` defaults to False, ``fp32_confidence`` to ``conf``, ``mask_ratio``
        to the share of masks in the block; ``uniform`` holds the draws, if any."""
        if block_start is None:
            block_start = torch.zeros(cand.shape[0], dtype=torch.bool, device=cand.device)
        fp32 = conf if fp32_confidence is None else fp32_confidence
        ratio = masked.double().mean(-1) if mask_ratio is None else mask_ratio

        def draw(size: int) -> torch.Tensor:
            if uniform is None:
                raise ValueError("this StepView has no uniform draws; pass uniform=")
            return uniform[:, :size]

        return cls(cand, conf, masked, block_start, None, lambda: fp32, lambda: ratio, draw)


class RowState:
    """Per-row tensors a rule keeps across the forwards of a block (dimension 0 = rows).

    Subclasses are frozen dataclasses whose fields carry their reset value in the field
    metadata (``field(metadata={"reset": -1})``): a row whose block ends starts the next
    one from it.
    """

    def select(self, rows: torch.Tensor) -> RowState:
        """The state of batch rows ``rows`` (an index tensor), in that order."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)}
        )

    def write(self, rows: torch.Tensor, new: RowState, reset: torch.Tensor) -> None:
        """Store ``new`` (the state of ``rows``) in place; rows flagged in ``reset`` (their
        block ended) go back to the reset values."""
        for item in dataclasses.fields(self):
            target, value = getattr(self, item.name), getattr(new, item.name)
            keep = reset.view(-1, *([1] * (value.dim() - 1))).logical_not()
            target[rows] = torch.where(keep, value, item.metadata["reset"])


class Rule:
    """One commit rule. Subclasses set the class attributes and implement :meth:`commit`.

    Class attributes:
        name: the rule's name (records, docs, ``--help``).
        code: its :class:`CommitRule` value in ``rule_map`` (unique; 1 marks the baseline
            policy, which the redundancy score R_s treats apart).
        description: one line on what it commits.
        options: a dataclass of the rule's decoder options (fields made by
            :func:`r2sft.decoding.options.option`); they join :class:`DecoderConfig` and
            every command line. None: no options of its own.
        policy: True for the baseline policies, one of which runs first in every forward,
            chosen by ``DecoderConfig.policy`` (= the rule's name).
    """

    name: ClassVar[str]
    code: ClassVar[int]
    description: ClassVar[str]
    options: ClassVar[type | None] = None
    policy: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Any) -> Rule | None:
        """The rule with ``config``'s parameters, or None when ``config`` does not run it."""
        raise NotImplementedError

    def init_state(self, rows: int, block_length: int, device: torch.device) -> RowState | None:
        """Fresh per-row state (None: the rule keeps none)."""
        return None

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: RowState | None
    ) -> tuple[torch.Tensor, RowState | None]:
        """``[n, L]`` bool positions to commit (a subset of ``open_positions``) and the rows'
        updated state (the sampler stores it, resetting rows whose block ended)."""
        raise NotImplementedError


def chosen_confidence(logits: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Softmax probability of token ``cand`` under ``logits`` ([..., V] -> [...], fp64).

    Computed as ``1 / (1 + sum_{v != cand} exp(l_v - l_cand))`` with the sum in fp32: no
    softmax tensor is kept (the official code builds an fp64 one over vocabulary and
    sequence), yet confidences just below 1 stay distinct (an fp32 ``exp(l - logsumexp)``
    rounds them all to 1.0 and ties their ranking, e.g. in the EOS fill).
    """
    logits = logits.float()
    index = cand.unsqueeze(-1)
    relative = (logits - logits.gather(-1, index)).exp_()
    others = relative.scatter_(-1, index, 0.0).sum(-1)
    return 1.0 / (1.0 + others.double())


def rank_descending(conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Rank (0 = most confident) of every masked position; unmasked ones rank last; ties
    go to the first position."""
    scores = conf.masked_fill(~masked, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(conf.shape[-1], device=conf.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def answer_complete(tokens: torch.Tensor, mask_id: int, end_ids: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: rows whose generated canvas ``tokens`` (``[N, G]``) holds a committed
    end token (any of ``end_ids``: end of text, end of turn) with every position before it
    committed. The response text, cut at the first end token, can no longer change."""
    committed_prefix = (tokens != mask_id).long().cumprod(dim=-1).bool()
    return (torch.isin(tokens, end_ids) & committed_prefix).any(dim=-1)


def check_registry(rules: Sequence[type[Rule]]) -> None:
    """Fail at import when two rules share a name or code, a rule takes a reserved code, or
    an entry misses its description."""
    names, codes = set(), set()
    reserved = {int(CommitRule.UNCOMMITTED), int(CommitRule.EARLY_EXIT)}
    for rule in rules:
        for attribute in ("name", "code", "description"):
            if not getattr(rule, attribute, None):
                raise TypeError(f"commit rule {rule.__name__} has no {attribute}")
        if rule.name in names or rule.code in codes and not rule.policy:
            raise TypeError(f"commit rule {rule.__name__}: name or code already taken")
        if rule.code in reserved or not 0 < rule.code < 128:
            raise TypeError(f"commit rule {rule.__name__}: code {rule.code} is reserved")
        names.add(rule.name)
        codes.add(rule.code)
