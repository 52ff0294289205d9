"""Training objectives on hand-built tensors: masks, weights, normalisation, invariance."""

import math

import pytest
import torch
import torch.nn.functional as F

from r2sft.training.objectives import (
    Noise,
    apply_mask,
    certainty_forcing_mask,
    certainty_forcing_row_loss,
    hashed_noise,
    llada_mask,
    llada_row_loss,
    masked_token_ce,
    masked_token_entropy,
    normalisation_units,
    normalise_loss,
    trajectory_groups,
    trajectory_mask,
    trajectory_row_loss,
)


def test_masked_token_ce_matches_full_cross_entropy_on_selected_positions():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    positions = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    full = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(2, 5)
    assert torch.allclose(masked_token_ce(logits, labels, positions), full * positions)


def test_masked_token_entropy_of_uniform_logits_is_log_vocab_at_any_temperature():
    logits = torch.zeros(1, 3, 8)
    positions = torch.tensor([[True, False, True]])
    entropy = masked_token_entropy(logits, positions, temperature=0.5)
    assert torch.allclose(entropy, torch.tensor([[math.log(8), 0.0, math.log(8)]]))


def test_empty_selection_keeps_the_graph_connected():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    none = torch.zeros(1, 3, dtype=torch.bool)
    masked_token_ce(logits, torch.zeros(1, 3, dtype=torch.long), none).sum().backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_apply_mask_replaces_only_masked_positions():
    ids = torch.tensor([[5, 6, 7]])
    masked = torch.tensor([[False, True, False]])
    assert apply_mask(ids, masked, 99).tolist() == [[5, 99, 7]]


# ----------------------------------------------------------------------------- noise


def test_hashed_noise_is_a_function_of_sample_step_seed_and_position():
    a = hashed_noise(torch.tensor([3, 8]), step=5, seed=1, length=6)
    b = hashed_noise(torch.tensor([8]), step=5, seed=1, length=6)
    assert torch.equal(a.row[1:], b.row) and torch.equal(a.position[1:], b.position)
    c = hashed_noise(torch.tensor([8]), step=6, seed=1, length=6)
    d = hashed_noise(torch.tensor([8]), step=5, seed=2, length=6)
    assert not torch.equal(b.position, c.position) and not torch.equal(b.position, d.position)


def test_hashed_noise_is_uniform_on_the_unit_interval():
    noise = hashed_noise(torch.arange(4000), step=0, seed=0, length=64)
    assert noise.row.min() >= 0 and noise.row.max() < 1
    assert noise.position.min() >= 0 and noise.position.max() < 1
    assert noise.row.mean().item() == pytest.approx(0.5, abs=0.02)
    assert noise.position.mean().item() == pytest.approx(0.5, abs=0.005)
    # Decorrelated across positions and rows.
    flat = noise.position
    assert torch.corrcoef(torch.stack([flat[:, 0], flat[:, 1]]))[0, 1].abs() < 0.05


def test_llada_mask_uses_explicit_noise():
    answer = torch.tensor([[False, True, True, True]])
    noise = Noise(torch.tensor([0.5]), torch.tensor([[0.1, 0.2, 0.9, 0.3]]))
    masked, t = llada_mask(answer, eps=0.0, noise=noise)
    assert t.tolist() == [0.5]
    assert masked.tolist() == [[False, True, False, True]]


def test_llada_row_loss_weights_by_inverse_t():
    logits = torch.zeros(1, 3, 4)
    labels = torch.zeros(1, 3, dtype=torch.long)
    masked = torch.tensor([[True, True, False]])
    row = llada_row_loss(logits, labels, masked, torch.tensor([0.25]))
    assert row.item() == pytest.approx(2 * math.log(4) / 0.25)


# ----------------------------------------------------------------------------- trajectory


def test_trajectory_groups_dense_ranks_steps_and_merges_by_shrink():
    # Two prompt positions (off the answer), then answer steps with a gap (4 is absent).
    step_map = torch.tensor([[-1, -1, 0, 0, 1, 3, 3, 2, 5]])
    answer = torch.tensor([[False, False] + [True] * 7])
    group, n_groups = trajectory_groups(step_map, answer, shrink=1)
    assert group.tolist() == [[-1, -1, 0, 0, 1, 3, 3, 2, 4]]
    assert n_groups.tolist() == [5]
    group, n_groups = trajectory_groups(step_map, answer, shrink=2)
    assert group.tolist() == [[-1, -1, 0, 0, 0, 1, 1, 1, 2]]
    assert n_groups.tolist() == [3]


def test_trajectory_groups_rows_are_independent_and_padding_ignored():
    step_map = torch.tensor([[7, 7, 9, 0], [2, 1, 0, 0]])
    answer = torch.tensor([[True, True, True, False], [True, True, True, True]])
    group, n_groups = trajectory_groups(step_map, answer)
    assert group.tolist() == [[0, 0, 1, -1], [2, 1, 0, 0]]
    assert n_groups.tolist() == [2, 3]


def test_trajectory_replay_from_a_hand_built_step_map():
    # Answer of 6 tokens committed at forwards [0, 2, 1, 2, 3, 1]; shrink 1 -> 4 groups.
    step_map = torch.tensor([[-1, 0, 2, 1, 2, 3, 1]])
    answer = torch.tensor([[False] + [True] * 6])
    # row draw 0.5 of 4 groups -> group 2 (= step 2).
    noise = Noise(torch.tensor([0.5]), torch.zeros(1, 7))
    masked, targets, n_groups = trajectory_mask(step_map, answer, shrink=1, noise=noise)
    assert n_groups.tolist() == [4.0]
    # Visible: prompt and tokens committed at steps 0, 1; masked: steps 2 and 3.
    assert masked.tolist() == [[False, False, True, False, True, True, False]]
    assert targets.tolist() == [[False, False, True, False, True, False, False]]
    # Last group: only step 3 masked; first group: the whole answer masked.
    masked, targets, _ = trajectory_mask(
        step_map, answer, noise=Noise(torch.tensor([0.99]), noise.position)
    )
    assert masked.tolist() == targets.tolist() == [[False, False, False, False, False, True, False]]
    masked, targets, _ = trajectory_mask(
        step_map, answer, noise=Noise(torch.tensor([0.0]), noise.position)
    )
    assert masked.tolist() == [[False] + [True] * 6]
    assert targets.tolist() == [[False, True, False, False, False, False, False]]


def test_trajectory_block_targets_are_the_masked_rest_of_the_active_block():
    # Answer of 6 in blocks of 3: [0, 0, 0, 1, 1, 1]. Steps: block 0 at forwards 0, 1;
    # block 1 at forwards 2, 3 -> groups 0..3.
    step_map = torch.tensor([[-1, 0, 1, 0, 2, 3, 2]])
    answer = torch.tensor([[False] + [True] * 6])
    block_open = Noise(torch.tensor([0.0]), torch.zeros(1, 7))  # group 0: block 0 opens
    masked, targets, n_groups = trajectory_mask(step_map, answer, noise=block_open, block_length=3)
    assert n_groups.tolist() == [4.0]
    assert masked.tolist() == [[False] + [True] * 6]
    # Step targets would be positions 1 and 3 only; block targets add the later position 2
    # and stop at the block boundary.
    assert targets.tolist() == [[False, True, True, True, False, False, False]]
    second_step = Noise(torch.tensor([0.3]), torch.zeros(1, 7))  # group 1: rest of block 0
    masked, targets, _ = trajectory_mask(step_map, answer, noise=second_step, block_length=3)
    assert targets.tolist() == [[False, False, True, False, False, False, False]]
    assert masked.tolist() == [[False, False, True, False, True, True, True]]
    block_one = Noise(torch.tensor([0.5]), torch.zeros(1, 7))  # group 2: block 1 opens
    _, targets, _ = trajectory_mask(step_map, answer, noise=block_one, block_length=3)
    assert targets.tolist() == [[False, False, False, False, True, True, True]]


def test_trajectory_block_targets_with_shrink_span_the_blocks_the_group_touches():
    # shrink 2 merges forwards {1, 2}: the end of block 0 and the start of block 1.
    step_map = torch.tensor([[0, 1, 0, 2, 3, 2]])
    answer = torch.ones(1, 6, dtype=torch.bool)
    noise = Noise(torch.tensor([0.0]), torch.zeros(1, 6))  # group {0, 1}
    masked, targets, _ = trajectory_mask(step_map, answer, shrink=2, noise=noise, block_length=3)
    assert torch.equal(targets, masked & torch.tensor([[True] * 3 + [False] * 3]))
    noise = Noise(torch.tensor([0.9]), torch.zeros(1, 6))  # group {2, 3}
    masked, targets, _ = trajectory_mask(step_map, answer, shrink=2, noise=noise, block_length=3)
    assert targets.tolist() == masked.tolist() == [[False] * 3 + [True] * 3]


def test_trajectory_entropy_term_applies_to_correct_targets_only():
    logits = torch.tensor([[[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 1, 0]])  # right, wrong, (not a target)
    targets = torch.tensor([[True, True, False]])
    n_groups = torch.tensor([2.0])
    ce_only = trajectory_row_loss(logits, labels, targets, n_groups)
    with_entropy = trajectory_row_loss(
        logits, labels, targets, n_groups, entropy_weight=0.5, temperature=0.5
    )
    correct_only = torch.tensor([[True, False, False]])
    entropy = masked_token_entropy(logits, correct_only, temperature=0.5).sum()
    assert with_entropy.item() == pytest.approx(ce_only.item() + 2.0 * 0.5 * entropy.item())
    assert entropy.item() > 0


def test_trajectory_samples_every_group_uniformly():
    step_map = torch.tensor([[0, 1, 1, 2, 3, 4]]).repeat(3000, 1)
    answer = torch.ones_like(step_map, dtype=torch.bool)
    _, targets, _ = trajectory_mask(
        step_map, answer, shrink=2, generator=torch.Generator().manual_seed(0)
    )
    # Groups (shrink 2): {0, 1} -> positions 0-2, {2, 3} -> 3-4, {4} -> 5.
    first = targets[:, 0].float().mean().item()
    second = targets[:, 3].float().mean().item()
    third = targets[:, 5].float().mean().item()
    assert first == pytest.approx(1 / 3, abs=0.03)
    assert second == pytest.approx(1 / 3, abs=0.03)
    assert third == pytest.approx(1 / 3, abs=0.03)
    assert (targets.sum(dim=1) > 0).all()


def test_trajectory_row_loss_is_unbiased_for_the_whole_answer():
    # Averaging n_groups * sum_{targets} CE over all groups gives the CE summed over the answer.
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 6)
    labels = torch.randint(0, 6, (1, 5))
    step_map = torch.tensor([[0, 2, 1, 2, 0]])
    answer = torch.ones(1, 5, dtype=torch.bool)
    group, n_groups = trajectory_groups(step_map, answer)
    rows = [
        trajectory_row_loss(logits, labels, group == g, n_groups.float())
        for g in range(int(n_groups))
    ]
    full = masked_token_ce(logits, labels, answer).sum()
    assert torch.stack(rows).mean().item() == pytest.approx(full.item(), rel=1e-5)


# ----------------------------------------------------------------------------- certainty forcing


def test_certainty_forcing_masks_are_complementary_inside_the_sampled_block():
    # Prompt of 2, answer of 7 with block length 3 -> blocks [0,0,0,1,1,1,2], n_blocks 3.
    answer = torch.tensor([[False, False] + [True] * 7])
    position_draws = torch.tensor([[0.0, 0.0, 0.1, 0.9, 0.2, 0.7, 0.3, 0.8, 0.4]])
    noise = Noise(torch.tensor([0.5]), position_draws)  # block 1
    masked_a, masked_b, targets_a, targets_b, n_blocks = certainty_forcing_mask(
        answer, block_length=3, mask_ratio=0.5, noise=noise
    )
    assert n_blocks.tolist() == [3.0]
    in_block = torch.tensor([[False] * 5 + [True] * 3 + [False]])
    later = torch.tensor([[False] * 8 + [True]])
    assert torch.equal(targets_a | targets_b, in_block)
    assert not (targets_a & targets_b).any()
    assert targets_a.tolist() == [[False] * 5 + [False, True, False, False]]  # draws .7 .3 .8
    assert torch.equal(masked_a, targets_a | later) and torch.equal(masked_b, targets_b | later)


def test_certainty_forcing_mask_blocks_follow_each_row_answer_start():
    answer = torch.tensor([[False, True, True, True, True], [False, False, False, True, True]])
    noise = Noise(torch.tensor([0.0, 0.0]), torch.full((2, 5), 0.9))  # first block, view B
    _, masked_b, _, targets_b, n_blocks = certainty_forcing_mask(answer, 2, noise=noise)
    assert n_blocks.tolist() == [2.0, 1.0]
    assert targets_b.tolist() == [
        [False, True, True, False, False],
        [False, False, False, True, True],
    ]
    assert masked_b.tolist() == [[False, True, True, True, True], [False, False, False, True, True]]


def test_certainty_forcing_row_loss_matches_hand_computation():
    # Uniform logits over V=4: CE = log 4, entropy at any T = log 4, argmax = token 0.
    vocab = 4
    logits = torch.zeros(1, 4, vocab)
    labels = torch.tensor([[0, 2, 0, 3]])
    targets_a = torch.tensor([[True, True, False, False]])  # label 0 correct, label 2 wrong
    targets_b = torch.tensor([[False, False, True, True]])  # label 0 correct, label 3 wrong
    row = certainty_forcing_row_loss(
        logits, logits, labels, targets_a, targets_b, torch.tensor([3.0]),
        entropy_weight=2.0, temperature=0.5,
    )  # fmt: skip
    expected = 3.0 * (4 * math.log(4) + 2.0 * 2 * math.log(4))
    assert row.item() == pytest.approx(expected)


def test_certainty_forcing_entropy_gradient_sharpens_correct_predictions():
    logits = torch.tensor([[[2.0, 1.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[0]])
    targets = torch.tensor([[True]])
    none = torch.zeros(1, 1, dtype=torch.bool)
    entropy_only = (
        certainty_forcing_row_loss(
            logits, logits, labels, targets, none, torch.tensor([1.0]), entropy_weight=1.0
        )
        - masked_token_ce(logits, labels, targets).sum()
    )
    entropy_only.sum().backward()
    # Gradient descent raises the top logit relative to the others: lower entropy.
    assert logits.grad[0, 0, 0] < 0 < logits.grad[0, 0, 2]


# ----------------------------------------------------------------------------- normalisation


def test_normalise_loss_sample_and_token_modes_by_hand():
    row_sums = torch.tensor([6.0, 4.0, 0.0])
    loss_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert normalisation_units(loss_mask, "sample").item() == 2
    assert normalisation_units(loss_mask, "token").item() == 5
    sample = normalise_loss(row_sums, loss_mask, "sample", normalisation_units(loss_mask, "sample"))
    assert sample.item() == pytest.approx((6 / 3 + 4 / 2) / 2)
    token = normalise_loss(row_sums, loss_mask, "token", normalisation_units(loss_mask, "token"))
    assert token.item() == pytest.approx(10 / 5)
    with pytest.raises(ValueError, match="normalisation"):
        normalisation_units(loss_mask, "batch")


@pytest.mark.parametrize("mode", ["sample", "token"])
@pytest.mark.parametrize("objective", ["llada", "trajectory", "certainty_forcing"])
def test_loss_and_gradient_are_invariant_to_the_micro_batch_split(mode, objective):
    """One global batch of 6 rows vs micro-batches of 4 + 2 (or 3 processes x 2 rows)."""
    torch.manual_seed(0)
    vocab, length, mask_id = 11, 8, 10
    embedding = torch.nn.Embedding(vocab, 16)
    head = torch.nn.Linear(16, vocab)
    ids = torch.randint(0, 10, (6, length))
    answer = torch.zeros(6, length, dtype=torch.bool)
    for row, start in enumerate([2, 3, 1, 4, 2, 5]):  # different prompt lengths
        answer[row, start:] = True
    step_map = torch.randint(0, 4, (6, length))
    sample_keys = torch.arange(6)

    def row_sums(rows: slice) -> torch.Tensor:
        noise = hashed_noise(sample_keys[rows], step=3, seed=0, length=length)
        a, labels = answer[rows], ids[rows]
        if objective == "llada":
            masked, t = llada_mask(a, noise=noise)
            logits = head(embedding(apply_mask(labels, masked, mask_id)))
            return llada_row_loss(logits, labels, masked, t)
        if objective == "trajectory":
            masked, targets, n = trajectory_mask(step_map[rows], a, shrink=2, noise=noise)
            logits = head(embedding(apply_mask(labels, masked, mask_id)))
            return trajectory_row_loss(logits, labels, targets, n)
        m_a, m_b, t_a, t_b, n = certainty_forcing_mask(a, 3, noise=noise)
        logits_a = head(embedding(apply_mask(labels, m_a, mask_id)))
        logits_b = head(embedding(apply_mask(labels, m_b, mask_id)))
        return certainty_forcing_row_loss(logits_a, logits_b, labels, t_a, t_b, n)

    def step(splits: list[slice]) -> tuple[float, torch.Tensor]:
        head.zero_grad()
        units = sum(normalisation_units(answer[s], mode) for s in splits)
        total = 0.0
        for rows in splits:  # accumulate like the trainer does
            loss = normalise_loss(row_sums(rows), answer[rows], mode, units)
            loss.backward()
            total += loss.item()
        return total, head.weight.grad.clone()

    whole_loss, whole_grad = step([slice(0, 6)])
    accum_loss, accum_grad = step([slice(0, 4), slice(4, 6)])
    procs_loss, procs_grad = step([slice(0, 2), slice(2, 4), slice(4, 6)])
    assert accum_loss == pytest.approx(whole_loss, rel=1e-5)
    assert procs_loss == pytest.approx(whole_loss, rel=1e-5)
    assert torch.allclose(accum_grad, whole_grad, atol=1e-6)
    assert torch.allclose(procs_grad, whole_grad, atol=1e-6)
