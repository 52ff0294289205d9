"""Spatio-temporal redundancy of decoding trajectories (docs/method.md section 3).

The one place where R_s, R_t and R_total are defined. All are computed from a
:class:`DecodeResult` with its trace, vectorised over rows, forwards and positions:

* ``R_t`` (temporal): the number of (forward s, position i) pairs where i was in the
  active block at s, was still masked after s (``step_map[i] > s``), and the top-1
  candidate at s already equalled the token finally committed at i (Fig. 4 of the paper).
  Positions of later blocks are not counted: no decoder may commit them at s. Optionally
  (``temporal_k`` > 1, ``tau_t`` > 0) only pairs whose final-token streak is at least K
  forwards long and whose confidence at s is >= tau_t count, i.e. what temporal
  finalisation with (K, tau_t) could have saved.
* ``R_s`` (spatial): the number of spatial events on the canvas left by the baseline
  commit of each forward s (positions committed before s or by the baseline rule at s are
  committed, the rest of the active block masked; derivable from step_map and rule_map):
  every sliding window that qualifies as a confidence cluster (<= u_max committed tokens,
  >= 1 mask, mean masked confidence >= tau_s) plus every token cluster (maximal run of
  >= 2 adjacent masked positions with the same top-1 token; with ``token_cluster_tau`` set,
  only runs whose highest confidence is > it).
* ``R_total = lambda_s * R_s + lambda_t * R_t``, also divided by the response length.

The thresholds come from :class:`RedundancyConfig`, never from the decoder that produced the
trajectory, so candidates decoded with different settings are scored on the same scale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from r2sft.decoding.options import (
    at_least,
    check_options,
    confidence,
    option,
    optional_twin,
    set_fields,
)
from r2sft.decoding.rules import CommitRule, confidence_cluster_windows, token_runs
from r2sft.decoding.trace import DecodeResult


@dataclass
class RedundancyConfig:
    """Measurement thresholds of the redundancy score (independent of the decoder); each
    field's help says what it does. Command lines (collect) take them as ``--score_*`` /
    ``--lambda_*`` options (:data:`ScoreArgs`)."""

    window: int = option(3, "R_s: confidence-cluster window w", check=at_least(0),
                         flag="score_window")  # fmt: skip
    tau_s: float = option(
        0.8, "R_s: a window counts when its masked positions' mean confidence is >= tau_s",
        check=confidence, flag="score_tau_s",
    )  # fmt: skip
    u_max: int = option(1, "R_s: most committed tokens a counted window may hold",
                        check=at_least(0), flag="score_u_max")  # fmt: skip
    token_cluster_tau: float | None = option(
        None, "R_s token clusters: None counts every same-token run of >= 2 masks "
        "(method.md); a value counts only runs whose highest confidence is > it",
        check=confidence, flag="score_token_cluster_tau",
    )  # fmt: skip
    temporal_k: int = option(
        1, "R_t: a redundant (s, i) pair needs the top-1 to have equalled the final token "
        "for >= K forwards ending at s (1: method.md's count)",
        check=at_least(0), flag="score_temporal_k",
    )  # fmt: skip
    tau_t: float = option(0.0, "R_t: ... and a confidence >= tau_t at s (0: method.md's count)",
                          check=confidence, flag="score_tau_t")  # fmt: skip
    lambda_s: float = option(1.0, "weight of R_s in R_total", check=at_least(0))
    lambda_t: float = option(1.0, "weight of R_t in R_total", check=at_least(0))

    def __post_init__(self) -> None:
        check_options(self)

    def to_dict(self) -> dict:
        return asdict(self)


class _ScoreArgsMethods:
    def check_score_args(self) -> None:
        """Range-check the values set here (at parse time, before any work)."""
        names = [f.name for f in dataclasses.fields(ScoreArgs)]
        check_options(self, names, prefix="--")

    def resolve_redundancy(self) -> RedundancyConfig:
        """The redundancy settings: the options set here over the defaults."""
        return RedundancyConfig(**set_fields(self, ScoreArgs))


ScoreArgs = optional_twin(RedundancyConfig, "ScoreArgs", bases=(_ScoreArgsMethods,),
                          module=__name__)  # fmt: skip
ScoreArgs._argument_group_name = "redundancy scoring"  # its --help heading (r2sft.config)
ScoreArgs.__doc__ = """The redundancy measurement of a command line: every
:class:`RedundancyConfig` field as an optional ``--score_*`` / ``--lambda_*`` option."""


@dataclass
class Redundancy:
    """Per-row redundancy counts (float tensors of shape [B])."""

    confidence_clusters: torch.Tensor
    token_clusters: torch.Tensor
    r_s: torch.Tensor
    r_t: torch.Tensor
    r_total: torch.Tensor
    r_total_per_token: torch.Tensor
    response_length: torch.Tensor


def response_lengths(tokens: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """Tokens up to and including the first EOS per row (the whole canvas when none)."""
    gen = tokens.shape[-1]
    if eos_token_id is None:
        return torch.full((tokens.shape[0],), gen, dtype=torch.long)
    positions = torch.arange(gen).expand_as(tokens)
    first_eos = torch.where(tokens == eos_token_id, positions, gen).amin(-1)
    return (first_eos + 1).clamp(max=gen)


def measure_redundancy(
    result: DecodeResult, config: RedundancyConfig | None = None, eos_token_id: int | None = None
) -> Redundancy:
    """R_s, R_t and R_total of every row of ``result`` (which must carry a trace).

    ``eos_token_id`` sets the length used for ``r_total_per_token`` (answer up to its first
    EOS); without it the whole canvas length is used.
    """
    config = config or RedundancyConfig()
    trace = result.trace
    if trace is None:
        raise ValueError(
            "measure_redundancy() needs the decode trace; decode with "
            "DecoderConfig(record_trace=True)."
        )
    rows, steps, length = trace.top1.shape
    gen = result.tokens.shape[1]
    step_index = torch.arange(steps)[None, :, None]
    valid = (step_index < result.nfe.long()[:, None, None]) & (trace.block[:, :, None] >= 0)
    positions = trace.block.long().clamp(min=0)[:, :, None] * length + torch.arange(length)
    positions = positions.clamp(max=gen - 1).reshape(rows, -1)

    def at_positions(values: torch.Tensor) -> torch.Tensor:
        return values.long().gather(1, positions).reshape(rows, steps, length)

    committed_at = at_positions(result.step_map)
    rule = at_positions(result.rule_map)
    final = at_positions(result.tokens)
    masked_before = valid & (committed_at >= step_index)
    baseline_now = (committed_at == step_index) & (rule == int(CommitRule.BASELINE))
    masked_after_baseline = masked_before & ~baseline_now
    # End-of-text fill written by early exit is no answer token a decoder could have
    # committed sooner: it is never counted as a redundant step.
    masked_after = valid & (committed_at > step_index) & (rule != int(CommitRule.EARLY_EXIT))

    # Temporal: streak of "top-1 equals the final token" over consecutive forwards of the
    # same block (K is small: a loop over k, not over positions or forwards).
    agrees = masked_before & (trace.top1.long() == final)
    streak = agrees.clone()
    for back in range(1, config.temporal_k):
        earlier = torch.zeros_like(agrees)
        earlier[:, back:] = agrees[:, :-back] & (
            trace.block[:, back:, None] == trace.block[:, :-back, None]
        )
        streak &= earlier
    redundant_pairs = masked_after & streak & (trace.conf >= config.tau_t)
    r_t = redundant_pairs.flatten(1).sum(-1).float()

    flat_conf = trace.conf.reshape(rows * steps, length)
    flat_masked = masked_after_baseline.reshape(rows * steps, length)
    windows = confidence_cluster_windows(
        flat_conf, flat_masked, config.window, config.tau_s, config.u_max
    )
    confidence_clusters = windows.reshape(rows, -1).sum(-1).float()
    runs = token_runs(trace.top1.reshape(rows * steps, length).long(), flat_conf, flat_masked)
    is_cluster = runs.length >= 2
    if config.token_cluster_tau is not None:
        is_cluster &= runs.max_conf > config.token_cluster_tau
    token_clusters = is_cluster.reshape(rows, -1).sum(-1).float()

    r_s = confidence_clusters + token_clusters
    r_total = config.lambda_s * r_s + config.lambda_t * r_t
    lengths = response_lengths(result.tokens, eos_token_id)
    return Redundancy(
        confidence_clusters=confidence_clusters,
        token_clusters=token_clusters,
        r_s=r_s,
        r_t=r_t,
        r_total=r_total,
        r_total_per_token=r_total / lengths.float(),
        response_length=lengths,
    )
