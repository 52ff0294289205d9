"""Masked-diffusion training objectives as pure functions on tensors.

Every objective is split into a *masking* function (which positions the model must
predict, drawn from an explicit ``torch.Generator``) and a *loss* function (cross entropy
on those positions with the objective's weighting), so each half can be tested on
hand-built tensors.

Three objectives (docs/method.md section 4):

- ``llada``: LLaDA SFT. Per row ``t ~ U(eps, 1)``; answer tokens masked with probability
  ``t``; CE on masked tokens weighted ``1 / t``.
- ``trajectory``: trajectory replay (TraceRL). The recorded step map says at which forward
  each answer token was committed. Consecutive distinct steps are grouped by ``shrink``; for
  a sampled group ``g``, tokens of earlier groups are visible, tokens of ``g`` and later are
  masked, and the targets are the tokens of ``g`` (or, with block-completion targets, every
  masked token of the block ``g`` decodes). Weight ``n_groups`` per row. An optional
  certainty (entropy) term as in certainty forcing.
- ``certainty_forcing``: dParallel. A block ``k`` of the answer is sampled; earlier blocks
  are visible, later blocks masked; inside block ``k`` two complementary random masks make
  two views, so every token of the block is a target exactly once. CE plus
  ``entropy_weight`` times the entropy at temperature ``T`` on targets the model already
  predicts correctly (pushing confident-and-right tokens to become more confident, which
  lets a threshold decoder commit them earlier). Weight ``n_blocks`` per row.

Loss normalisation. Loss functions return per-row *sums* ``(B,)``; the weights above make
each sum an unbiased estimate of the summed per-token loss over the whole answer (the
weight undoes the sampling of ``t``, of the step group, or of the block; with block-completion
targets, of the loss summed over every replayed state). The trainer turns
row sums into the loss with :func:`normalise_loss` and a denominator counted by
:func:`normalisation_units` over the WHOLE optimizer step (all accumulated micro-batches on
all processes), so the gradient does not depend on how a global batch is split:

- ``"sample"``: each row is divided by its answer length and rows are averaged: every
  sample weighs the same (LLaDA's convention).
- ``"token"``: all rows are summed and divided by the number of answer tokens: every answer
  token weighs the same.

Note: dParallel divides its entropy term by the number of correctly predicted tokens of the
micro-batch, a ratio that changes with the batch split; here it is a per-token term
normalised like the CE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossNormalisation = Literal["sample", "token"]


# --------------------------------------------------------------------------- helpers


def masked_token_ce(
    logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Cross entropy (fp32) at ``positions`` of ``(B, L, V)`` logits, 0 elsewhere: ``(B, L)``.

    Only the selected rows of the vocabulary are upcast and normalised, which matters for
    8B models (a fp32 copy of all ``B * L * 126k`` logits is gigabytes).
    """
    index = positions.nonzero(as_tuple=True)
    token_ce = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
    if index[0].numel() == 0:
        # Keep the graph connected so every process runs the same backward (DDP / ZeRO).
        return token_ce + 0.0 * logits.sum()
    token_ce[index] = F.cross_entropy(logits[index].float(), labels[index], reduction="none")
    return token_ce


def masked_token_entropy(
    logits: torch.Tensor, positions: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` at ``positions``, 0 elsewhere: ``(B, L)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    index = positions.nonzero(as_tuple=True)
    entropy = torch.zeros(positions.shape, dtype=torch.float32, device=logits.device)
    if index[0].numel() == 0:
        return entropy + 0.0 * logits.sum()
    log_probs = F.log_softmax(logits[index].float() / temperature, dim=-1)
    entropy[index] = -(log_probs.exp() * log_probs).sum(dim=-1)
    return entropy


def certainty_token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    entropy_weight: float,
    temperature: float,
) -> torch.Tensor:
    """``CE_i + entropy_weight * 1{argmax_i = label_i} * H_T(i)`` at ``targets``: ``(B, L)``.

    dParallel's certainty forcing: the entropy (at ``temperature``) of targets the model
    already predicts correctly is pushed down, so a threshold decoder commits them earlier.
    """
    tokens = masked_token_ce(logits, labels, targets)
    if entropy_weight:
        # Correct under greedy decoding; argmax needs no gradient (and ignores temperature).
        correct = targets & (logits.detach().argmax(dim=-1) == labels)
        tokens = tokens + entropy_weight * masked_token_entropy(logits, correct, temperature)
    return tokens


def apply_mask(input_ids: torch.Tensor, masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """The noised canvas: ``mask_token_id`` where ``masked``, the clean token elsewhere."""
    return input_ids.masked_fill(masked, mask_token_id)


def answer_offsets(answer_mask: torch.Tensor) -> torch.Tensor:
    """Index of each answer position within its row's answer (0-based); -1 off the answer."""
    offsets = answer_mask.long().cumsum(dim=1) - 1
    return offsets.masked_fill(~answer_mask, -1)


def normalisation_units(loss_mask: torch.Tensor, mode: LossNormalisation) -> torch.Tensor:
    """How many units a micro-batch adds to the loss denominator (long scalar).

    ``"sample"``: rows with at least one supervised token; ``"token"``: supervised tokens.
    """
    if mode == "sample":
        return loss_mask.any(dim=1).sum()
    if mode == "token":
        return loss_mask.sum()
    raise ValueError(f"loss normalisation must be 'sample' or 'token', got {mode!r}")


def normalise_loss(
    row_sums: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: LossNormalisation,
    num_units: torch.Tensor | float,
) -> torch.Tensor:
    """Scalar loss from per-row sums and the denominator of the whole optimizer step.

    Summing this over every micro-batch of a step (on every process) gives the loss of the
    global batch, whatever the split, when ``num_units`` is the global
    :func:`normalisation_units` count.
    """
    if mode == "sample":
        lengths = loss_mask.sum(dim=1).clamp(min=1)
        total = (row_sums / lengths).sum()
    elif mode == "token":
        total = row_sums.sum()
    else:
        raise ValueError(f"loss normalisation must be 'sample' or 'token', got {mode!r}")
    if isinstance(num_units, torch.Tensor):
        num_units = num_units.to(total.device, total.dtype)
    return total / num_units


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class Noise:
    """The uniform draws a masking function consumes: one per row and one per position."""

    row: torch.Tensor  # float (B,) in [0, 1)
    position: torch.Tensor  # float (B, L) in [0, 1)


def draw_noise(
    shape: tuple[int, int], device: torch.device, generator: torch.Generator | None = None
) -> Noise:
    """Uniform noise from a ``torch.Generator`` (row draws first, then position draws)."""
    batch, length = shape
    row = torch.rand(batch, device=device, generator=generator)
    return Noise(row, torch.rand(batch, length, device=device, generator=generator))


_MASK32 = 0xFFFFFFFF


def _hash32(values: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' "lowbias32") on int64 tensors holding 32-bit values.

    Hand-written because torch has no counter-based random generator: noise that is a pure
    function of (seed, step, sample, position) makes training independent of how samples
    are split into micro-batches and processes. Products are masked to 32 bits, so int64
    wrap-around never reaches the kept bits and shifts stay logical.
    """
    x = values & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _to_unit(hashed: torch.Tensor) -> torch.Tensor:
    # The top 24 bits, exactly representable in float32: values in [0, 1).
    return (hashed >> 8).float() / float(1 << 24)


def hashed_noise(sample_keys: torch.Tensor, step: int, seed: int, length: int) -> Noise:
    """Noise determined by ``(seed, step, sample key, position)`` alone.

    Args:
        sample_keys: long ``(B,)`` a stable id per sample (its index in the data set).
        step: the optimizer step (the same for every micro-batch of one step).
        seed: the run seed.
        length: canvas length ``L``.
    """
    keys = sample_keys.long()
    base = _hash32(_hash32(_hash32(torch.full_like(keys, seed)) ^ step) ^ keys)
    positions = torch.arange(length, device=keys.device, dtype=torch.long)
    row = _to_unit(_hash32(base ^ 0x9E3779B9))
    position = _to_unit(_hash32(_hash32(base[:, None] ^ 0x85EBCA6B) ^ positions[None, :]))
    return Noise(row, position)


# --------------------------------------------------------------------------- llada


def llada_mask(
    answer_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    noise: Noise | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample LLaDA SFT noise: per row ``t ~ U(eps, 1)``, each answer position masked w.p. ``t``.

    Args:
        answer_mask: bool ``(B, L)``, True on answer positions (end-of-text fill included);
            prompt and padding positions are never masked.
        generator: source of randomness (on the same device as ``answer_mask``).
        eps: lower bound of ``t`` so the ``1 / t`` weight stays finite.
        noise: explicit uniform draws (e.g. :func:`hashed_noise`); overrides ``generator``.

    Returns:
        ``(masked, t)``: bool ``(B, L)`` positions to replace by the mask token, and the
        float ``(B,)`` masking ratio of each row.
    """
    if noise is None:
        noise = draw_noise(answer_mask.shape, answer_mask.device, generator)
    t = eps + (1.0 - eps) * noise.row
    masked = (noise.position < t[:, None]) & answer_mask
    return masked, t


def llada_row_loss(
    logits: torch.Tensor, labels: torch.Tensor, masked: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Per-row ``sum_{i masked} CE(logits[b, i], labels[b, i]) / t_b``: ``(B,)``."""
    return masked_token_ce(logits, labels, masked).sum(dim=1) / t


def llada_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    answer_mask: torch.Tensor,
) -> torch.Tensor:
    """LLaDA SFT loss: CE on masked positions weighted by ``1 / t``, per-row answer-length mean.

    ``loss = mean_b [ sum_{i masked} CE(logits[b, i], labels[b, i]) / t_b / |answer_b| ]``.
    The per-row normalisation by answer length (not by the number of masked tokens) is
    what makes this an unbiased estimate of the masked-diffusion ELBO per answer token.

    Args:
        logits: ``(B, L, V)`` model outputs on the noised canvas.
        labels: ``(B, L)`` clean token ids.
        masked: bool ``(B, L)`` positions that were masked (from :func:`llada_mask`).
        t: ``(B,)`` masking ratio of each row.
        answer_mask: bool ``(B, L)`` answer positions; defines the answer length.

    Returns:
        Scalar loss (mean over the rows of the batch).
    """
    per_row = llada_row_loss(logits, labels, masked, t)
    answer_lengths = answer_mask.sum(dim=1).clamp(min=1)
    return (per_row / answer_lengths).mean()


# --------------------------------------------------------------------------- trajectory


def trajectory_groups(
    step_map: torch.Tensor, answer_mask: torch.Tensor, shrink: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group each row's distinct commit steps in runs of ``shrink``.

    The ``k``-th distinct step of a row (in increasing order) belongs to group
    ``k // shrink``; gaps in step numbers do not matter (a row decoded in 20 forwards has 20
    distinct steps whatever their indices).

    Args:
        step_map: int ``(B, L)`` forward index that committed each position (any value off
            the answer).
        answer_mask: bool ``(B, L)`` answer positions.
        shrink: number of consecutive distinct steps merged into one training step.

    Returns:
        ``(group, n_groups)``: long ``(B, L)`` group of each answer position (-1 off the
        answer) and long ``(B,)`` number of groups of each row (0 for an empty answer).
    """
    if shrink < 1:
        raise ValueError(f"trajectory shrink must be >= 1, got {shrink}")
    # Dense rank of each step within its row, vectorised: sort, flag value changes, cumsum,
    # scatter back. Off-answer positions sort last (their rank is discarded).
    sentinel = torch.iinfo(torch.long).max
    keys = step_map.long().masked_fill(~answer_mask, sentinel)
    sorted_keys, order = keys.sort(dim=1, stable=True)
    changes = torch.zeros_like(sorted_keys)
    changes[:, 1:] = (sorted_keys[:, 1:] != sorted_keys[:, :-1]).long()
    dense_rank = torch.empty_like(changes).scatter_(1, order, changes.cumsum(dim=1))
    group = torch.div(dense_rank, shrink, rounding_mode="floor").masked_fill(~answer_mask, -1)
    n_groups = group.max(dim=1).values + 1
    return group, n_groups.clamp(min=0)


def trajectory_mask(
    step_map: torch.Tensor,
    answer_mask: torch.Tensor,
    shrink: int = 1,
    generator: torch.Generator | None = None,
    noise: Noise | None = None,
    block_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one step group per row and replay the recorded trajectory at that point.

    Args:
        block_length: None: the targets are the tokens committed in the sampled group
            (TraceRL replay). A decoder block length: the targets are every still-masked
            token of the block(s) the sampled group decodes ("block completion"), so from
            each state of its own trajectory the model learns to finish the whole block,
            which is what lets a threshold decoder commit it in fewer forwards.

    Returns:
        ``(masked, targets, n_groups)``: bool ``(B, L)`` positions masked in the input
        (committed in the sampled group or later), bool ``(B, L)`` targets and the float
        ``(B,)`` number of groups (the row weight).
    """
    group, n_groups = trajectory_groups(step_map, answer_mask, shrink)
    if noise is None:
        noise = draw_noise(answer_mask.shape, answer_mask.device, generator)
    sampled = (noise.row * n_groups).floor().long().clamp(max=(n_groups - 1).clamp(min=0))
    masked = answer_mask & (group >= sampled[:, None])
    targets = answer_mask & (group == sampled[:, None])
    if block_length is not None:
        if block_length < 1:
            raise ValueError(f"block_length must be >= 1, got {block_length}")
        block = torch.div(answer_offsets(answer_mask), block_length, rounding_mode="floor")
        last_block = block.masked_fill(~targets, -1).max(dim=1).values
        # Earlier blocks are fully committed, so this is the masked rest of the active block.
        targets = masked & (block <= last_block[:, None])
    return masked, targets, n_groups.float()


def trajectory_row_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    n_groups: torch.Tensor,
    entropy_weight: float = 0.0,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Per-row ``n_groups_b * sum_{i target} [CE_i + entropy_weight * 1{argmax_i = label_i}
    * H_T(i)]``: ``(B,)``, unbiased for the sum over the whole trajectory's states.

    The entropy term is certainty forcing's (see :func:`certainty_forcing_row_loss`); off by
    default (TraceRL's replay is CE only).
    """
    tokens = certainty_token_loss(logits, labels, targets, entropy_weight, temperature)
    return tokens.sum(dim=1) * n_groups


# --------------------------------------------------------------------------- certainty forcing


def certainty_forcing_mask(
    answer_mask: torch.Tensor,
    block_length: int,
    mask_ratio: float = 0.5,
    generator: torch.Generator | None = None,
    noise: Noise | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dParallel's semi-autoregressive block masking with two complementary views.

    Per row a block ``k`` of the answer (blocks of ``block_length`` from the answer start)
    is drawn uniformly. Blocks before ``k`` are visible, blocks after it are masked in both
    views (as during semi-autoregressive decoding), and inside block ``k`` each position is
    masked in view A with probability ``mask_ratio`` and in view B otherwise.

    Returns:
        ``(masked_a, masked_b, targets_a, targets_b, n_blocks)``: the input masks and the
        targets (block-``k`` positions masked in that view) of both views, bool ``(B, L)``,
        and the float ``(B,)`` number of blocks of each row (the row weight).
    """
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if noise is None:
        noise = draw_noise(answer_mask.shape, answer_mask.device, generator)
    block = torch.div(answer_offsets(answer_mask), block_length, rounding_mode="floor")
    answer_lengths = answer_mask.sum(dim=1)
    n_blocks = torch.div(answer_lengths + block_length - 1, block_length, rounding_mode="floor")
    sampled = (noise.row * n_blocks).floor().long().clamp(max=(n_blocks - 1).clamp(min=0))
    in_block = answer_mask & (block == sampled[:, None])
    later = answer_mask & (block > sampled[:, None])
    view_a = noise.position < mask_ratio
    targets_a = in_block & view_a
    targets_b = in_block & ~view_a
    return later | targets_a, later | targets_b, targets_a, targets_b, n_blocks.float()


def certainty_forcing_row_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    targets_a: torch.Tensor,
    targets_b: torch.Tensor,
    n_blocks: torch.Tensor,
    entropy_weight: float = 2.0,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Per-row certainty-forcing loss of both views: ``(B,)``.

    ``n_blocks_b * sum_{views} sum_{i target} [CE_i + entropy_weight * 1{argmax_i = label_i}
    * H_T(i)]``, where ``H_T`` is the entropy of ``softmax(logits / temperature)``.
    Defaults are dParallel's LLaDA settings (weight 2, temperature 0.5).
    """
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    for logits, targets in ((logits_a, targets_a), (logits_b, targets_b)):
        tokens = certainty_token_loss(logits, labels, targets, entropy_weight, temperature)
        total = total + tokens.sum(dim=1)
    return total * n_blocks
