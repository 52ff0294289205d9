import math

import pytest
import torch

from r2sft.training.objectives import llada_loss, llada_mask


def test_llada_mask_only_touches_answer_positions_and_follows_t():
    answer = torch.zeros(4, 1000, dtype=torch.bool)
    answer[:, 200:] = True
    gen = torch.Generator().manual_seed(0)
    masked, t = llada_mask(answer, gen, eps=1e-3)
    assert not masked[:, :200].any()
    assert ((t >= 1e-3) & (t <= 1.0)).all()
    ratio = masked[:, 200:].float().mean(dim=1)
    assert torch.allclose(ratio, t, atol=0.06)


def test_llada_mask_is_reproducible_from_generator():
    answer = torch.ones(2, 16, dtype=torch.bool)
    a = llada_mask(answer, torch.Generator().manual_seed(3))
    b = llada_mask(answer, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_llada_loss_matches_hand_computation():
    # Row 0: two answer positions, one masked, t = 0.5. Row 1: four answer positions,
    # two masked, t = 0.25. Uniform logits over V=4 give CE = log 4 per masked token.
    vocab = 4
    logits = torch.zeros(2, 5, vocab)
    labels = torch.tensor([[0, 1, 2, 3, 0], [1, 1, 1, 1, 1]])
    answer = torch.tensor([[False, False, False, True, True], [False, True, True, True, True]])
    masked = torch.tensor([[False, False, False, True, False], [False, True, False, True, False]])
    t = torch.tensor([0.5, 0.25])
    expected = ((1 * math.log(4) / 0.5) / 2 + (2 * math.log(4) / 0.25) / 4) / 2
    assert llada_loss(logits, labels, masked, t, answer).item() == pytest.approx(expected)


def test_llada_loss_ignores_unmasked_positions():
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[1, 2, 3]])
    answer = torch.ones(1, 3, dtype=torch.bool)
    none_masked = torch.zeros(1, 3, dtype=torch.bool)
    assert llada_loss(logits, labels, none_masked, torch.tensor([0.3]), answer).item() == 0.0
