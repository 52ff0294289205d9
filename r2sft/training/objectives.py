"""Masked-diffusion training objectives as pure functions on tensors.

Every objective is split into a *masking* function (which positions the model must
predict, drawn from an explicit ``torch.Generator``) and a *loss* function (cross entropy
on those positions with the objective's weighting), so each half can be tested on
hand-built tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def llada_mask(
    answer_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample LLaDA SFT noise: per row ``t ~ U(eps, 1)``, each answer position masked w.p. ``t``.

    Args:
        answer_mask: bool ``(B, L)``, True on answer positions (end-of-text fill included);
            prompt and padding positions are never masked.
        generator: source of randomness (on the same device as ``answer_mask``).
        eps: lower bound of ``t`` so the ``1 / t`` weight stays finite.

    Returns:
        ``(masked, t)``: bool ``(B, L)`` positions to replace by the mask token, and the
        float ``(B,)`` masking ratio of each row.
    """
    batch, length = answer_mask.shape
    device = answer_mask.device
    t = eps + (1.0 - eps) * torch.rand(batch, device=device, generator=generator)
    draws = torch.rand(batch, length, device=device, generator=generator)
    masked = (draws < t[:, None]) & answer_mask
    return masked, t


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
    token_ce = F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), reduction="none"
    ).view_as(labels)
    per_row = (token_ce * masked).sum(dim=1) / t
    answer_lengths = answer_mask.sum(dim=1).clamp(min=1)
    return (per_row / answer_lengths).mean()
