"""R² token cluster: of a run of adjacent masks proposing the same token, commit one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from r2sft.decoding.options import option
from r2sft.decoding.rules.base import CommitRule, Rule, StepView

TokenClusterMode = Literal["confidence", "mid", "random", "none"]


@dataclass
class TokenClusterOptions:
    token_cluster_mode: TokenClusterMode = option(
        "confidence",
        "R²: which position of a token cluster commits: confidence (the most confident) | "
        "mid | random | none (off)",
    )


@dataclass(frozen=True)
class TokenRuns:
    """Maximal runs of adjacent masked positions sharing the same candidate token.

    Indexed by run id in ``[0, L]``; id L is a dummy bucket for unmasked positions.
    """

    run_id: torch.Tensor  # [N, L] run of each position (L when unmasked)
    length: torch.Tensor  # [N, L + 1] positions in the run (0 for the dummy bucket)
    start: torch.Tensor  # [N, L + 1] first position of the run
    max_conf: torch.Tensor  # [N, L + 1] highest confidence in the run
    argmax: torch.Tensor  # [N, L + 1] first position holding max_conf


def token_runs(cand: torch.Tensor, conf: torch.Tensor, masked: torch.Tensor) -> TokenRuns:
    """Segment each row into maximal same-token runs of masked positions (no host sync)."""
    rows, length = cand.shape
    device = cand.device
    previous_same = torch.zeros_like(masked)
    previous_same[:, 1:] = masked[:, :-1] & (cand[:, 1:] == cand[:, :-1])
    starts = masked & ~previous_same
    run_id = torch.where(masked, starts.long().cumsum(-1) - 1, length)
    positions = torch.arange(length, device=device).expand(rows, length)
    run_length = torch.zeros(rows, length + 1, dtype=torch.long, device=device)
    run_length.scatter_add_(-1, run_id, masked.long())
    run_length[:, length] = 0
    fill = torch.full((rows, length + 1), length, dtype=torch.long, device=device)
    run_start = fill.scatter_reduce(-1, run_id, positions, reduce="amin")
    scores = conf.float().masked_fill(~masked, float("-inf"))
    neg_inf = torch.full((rows, length + 1), float("-inf"), device=device)
    max_conf = neg_inf.scatter_reduce(-1, run_id, scores, reduce="amax")
    at_max = masked & (scores == max_conf.gather(-1, run_id))
    argmax = fill.scatter_reduce(-1, run_id, torch.where(at_max, positions, length), "amin")
    return TokenRuns(run_id, run_length, run_start, max_conf, argmax)


def token_cluster_commit(
    cand: torch.Tensor,
    conf: torch.Tensor,
    masked: torch.Tensor,
    tau_s: float,
    mode: str = "confidence",
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """R² token cluster: in each run of >= 2 adjacent masked positions with the same
    candidate whose highest confidence is ``> tau_s``, commit the token at ONE position.

    ``mode``: "confidence" (the most confident position, the first on ties), "mid"
    (offset ``len // 2``) or "random" (offset ``floor(uniform[run] * len)``; ``uniform`` is
    an ``[N, L + 1]`` tensor in [0, 1) drawn by the caller from the row's generator).
    """
    rows, length = cand.shape
    runs = token_runs(cand, conf, masked)
    qualifies = (runs.length >= 2) & (runs.max_conf > tau_s)
    if mode == "confidence":
        chosen = runs.argmax
    elif mode == "mid":
        chosen = runs.start + runs.length // 2
    elif mode == "random":
        if uniform is None:
            raise ValueError("token_cluster_commit(mode='random') needs uniform draws")
        offset = (uniform * runs.length).long().clamp(max=(runs.length - 1).clamp(min=0))
        chosen = runs.start + offset
    else:
        raise ValueError(f"token cluster mode {mode!r} must be confidence, mid or random")
    target = torch.where(qualifies, chosen, length).clamp(max=length)
    hits = torch.zeros(rows, length + 1, dtype=torch.bool, device=cand.device)
    hits.scatter_(-1, target, True)
    return masked & hits[:, :length]


@dataclass(frozen=True)
class TokenClusterRule(Rule):
    tau_s: float
    mode: str

    name = "token_cluster"
    code = int(CommitRule.TOKEN_CLUSTER)
    description = "R²: one position of each run of >= 2 masks proposing the same token"
    options = TokenClusterOptions

    @classmethod
    def from_config(cls, config: Any) -> TokenClusterRule | None:
        # As in the official code, window = 0 turns the token cluster off too.
        if not config.r2 or config.token_cluster_mode == "none" or config.window <= 0:
            return None
        return cls(config.tau_s, config.token_cluster_mode)

    def commit(
        self, view: StepView, open_positions: torch.Tensor, state: None
    ) -> tuple[torch.Tensor, None]:
        # The official token cluster tests and ranks an fp32 softmax, whose values near 1 tie.
        conf = view.fp32_confidence() if self.mode == "confidence" else view.conf
        uniform = view.draw_uniform(view.cand.shape[1] + 1) if self.mode == "random" else None
        commit = token_cluster_commit(view.cand, conf, open_positions, self.tau_s, self.mode,
                                      uniform)  # fmt: skip
        return commit, None
