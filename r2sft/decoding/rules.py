"""Commit rules of one forward, as pure vectorised functions on the active block.

Every function works on ``[N, L]`` tensors in block coordinates (N rows, L = block
length): ``cand`` the candidate token of each position, ``conf`` its probability (fp32),
``masked`` which positions are still masks on the canvas the rule sees. They return a
boolean ``[N, L]`` commit mask and never leave the device (no ``.item()``, no data-dependent
shapes), so a decode step costs at most the one host sync the sampler does itself.
The rules are those of docs/method.md sections 1-2 (baseline policies of LLaDA and
Fast-dLLM, then the R² confidence cluster, token cluster and temporal finalisation);
:func:`commit_step` chains them the way one forward of the sampler applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
import torch.nn.functional as F

from r2sft.decoding.config import DecoderConfig


class CommitRule(IntEnum):
    """Which rule committed a position (stored as int8 in ``DecodeResult.rule_map``)."""

    UNCOMMITTED = 0
    BASELINE = 1  # the policy: fixed / threshold / factor
    CONFIDENCE_CLUSTER = 2
    TOKEN_CLUSTER = 3
    TEMPORAL = 4
    EARLY_EXIT = 5  # end-of-text fill after a complete answer (DecoderConfig.early_exit)


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


def _rank_descending(conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Rank (0 = most confident) of every masked position; unmasked ones rank last."""
    scores = conf.masked_fill(~masked, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(conf.shape[-1], device=conf.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def fixed_commit(
    conf: torch.Tensor, masked: torch.Tensor, num_tokens: torch.Tensor
) -> torch.Tensor:
    """LLaDA low-confidence schedule: the ``num_tokens[n]`` most confident masked positions."""
    return masked & (_rank_descending(conf, masked) < num_tokens.unsqueeze(-1))


def threshold_commit(conf: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM threshold: the most confident masked position plus all with conf >= tau."""
    best = conf.masked_fill(~masked, float("-inf")).argmax(dim=-1, keepdim=True)
    is_best = torch.zeros_like(masked).scatter_(-1, best, True)
    return masked & (is_best | (conf >= threshold))


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
    return masked & (_rank_descending(conf, masked) < count.unsqueeze(-1))


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
class TemporalState:
    """Per block position: the tracked top-1 token and its streak statistics."""

    token: torch.Tensor  # [N, L] long, -1 when not tracking
    count: torch.Tensor  # [N, L] long: consecutive forwards with this top-1
    conf_sum: torch.Tensor  # [N, L] fp32
    conf_max: torch.Tensor  # [N, L] fp32

    @classmethod
    def empty(cls, rows: int, length: int, device: torch.device | str) -> TemporalState:
        return cls(
            torch.full((rows, length), -1, dtype=torch.long, device=device),
            torch.zeros(rows, length, dtype=torch.long, device=device),
            torch.zeros(rows, length, device=device),
            torch.zeros(rows, length, device=device),
        )

    def select(self, rows: torch.Tensor) -> TemporalState:
        return TemporalState(self.token[rows], self.count[rows], self.conf_sum[rows],
                             self.conf_max[rows])  # fmt: skip

    def write(self, rows: torch.Tensor, other: TemporalState, reset: torch.Tensor) -> None:
        """Store ``other`` into ``rows`` in place, clearing rows whose block just ended."""
        keep = ~reset.unsqueeze(-1)
        self.token[rows] = torch.where(keep, other.token, -1)
        self.count[rows] = torch.where(keep, other.count, 0)
        self.conf_sum[rows] = torch.where(keep, other.conf_sum, 0.0)
        self.conf_max[rows] = torch.where(keep, other.conf_max, 0.0)


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


def token_cluster_enabled(config: DecoderConfig) -> bool:
    """Whether the R² token cluster runs: a mode is set and, as in the official code, the
    confidence-cluster window is too."""
    return config.r2 and config.token_cluster_mode != "none" and config.window > 0


def answer_complete(tokens: torch.Tensor, mask_id: int, end_ids: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: rows whose generated canvas ``tokens`` (``[N, G]``) holds a committed
    end token (any of ``end_ids``: end of text, end of turn) with every position before it
    committed. The response text, cut at the first end token, can no longer change."""
    committed_prefix = (tokens != mask_id).long().cumprod(dim=-1).bool()
    return (torch.isin(tokens, end_ids) & committed_prefix).any(dim=-1)


def commit_step(
    cand: torch.Tensor,
    conf: torch.Tensor,
    masked: torch.Tensor,
    config: DecoderConfig,
    *,
    num_tokens: torch.Tensor | None = None,
    temporal: TemporalState | None = None,
    uniform: torch.Tensor | None = None,
    cluster_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, TemporalState | None]:
    """Which positions of the active block one forward commits, and by which rule.

    The baseline policy of ``config`` runs first; with ``config.r2`` the R² rules follow in
    the official order, each on the positions the rules before it left masked: confidence
    cluster, token cluster, temporal finalisation. A position keeps the first rule that
    committed it. As in the official code, ``window = 0`` turns off the token cluster too.

    Args:
        cand, conf, masked: ``[N, L]`` candidate tokens, their confidences and the open
            positions of the block (see the module docstring).
        config: the policy and R² parameters.
        num_tokens: fixed policy only: ``[N]`` tokens to commit this forward.
        temporal: the rows' temporal streaks; required when the temporal rule runs
            (``config.r2`` and ``temporal_k > 0``), ignored otherwise.
        uniform: ``[N, L + 1]`` draws in [0, 1) for ``token_cluster_mode="random"``.
        cluster_conf: the confidences the token cluster tests against tau_s and ranks by
            (default ``conf``). The sampler passes the fp32 softmax the official code uses
            there: near 1 it rounds to ties, and the official choice is the first of them.

    Returns:
        ``rule``: ``[N, L]`` int8 :class:`CommitRule` per position (0: stays masked), and
        the updated temporal state (None when the temporal rule does not run). The caller
        resets the state of rows whose block this forward completed.
    """
    if config.policy == "fixed":
        if num_tokens is None:
            raise ValueError("commit_step: the fixed policy needs num_tokens")
        committed = fixed_commit(conf, masked, num_tokens)
    elif config.policy == "threshold":
        committed = threshold_commit(conf, masked, config.threshold)
    else:
        committed = factor_commit(conf, masked, config.factor, config.factor_rule)
    rule = torch.where(committed, int(CommitRule.BASELINE), 0).to(torch.int8)
    if not config.r2:
        return rule, None
    open_positions = masked & ~committed
    cluster = confidence_cluster_commit(
        conf, open_positions, config.window, config.tau_s, config.u_max
    )
    rule = torch.where(cluster, int(CommitRule.CONFIDENCE_CLUSTER), rule).to(torch.int8)
    open_positions = open_positions & ~cluster
    if token_cluster_enabled(config):
        runs = token_cluster_commit(
            cand, conf if cluster_conf is None else cluster_conf, open_positions, config.tau_s,
            config.token_cluster_mode, uniform,
        )  # fmt: skip
        rule = torch.where(runs, int(CommitRule.TOKEN_CLUSTER), rule).to(torch.int8)
        open_positions = open_positions & ~runs
    if config.temporal_k <= 0:
        return rule, None
    if temporal is None:
        raise ValueError("commit_step: the temporal rule needs the rows' TemporalState")
    state, final = temporal_commit(
        temporal, cand, conf, open_positions, config.temporal_k, config.tau_t,
        config.temporal_agg,
    )  # fmt: skip
    rule = torch.where(final, int(CommitRule.TEMPORAL), rule).to(torch.int8)
    return rule, state
