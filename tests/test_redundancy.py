"""R_s, R_t and R_total on hand-built trajectories whose counts are worked out by hand."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from r2sft.decoding import (
    CommitRule,
    DecodeResult,
    RedundancyConfig,
    Trace,
    decoder_config,
    generate,
    measure_redundancy,
)

BASE, TEMP = int(CommitRule.BASELINE), int(CommitRule.TEMPORAL)


def hand_trajectory() -> DecodeResult:
    """One row, one block of 4, three forwards.

    final tokens [10, 11, 12, 13]; position 0 committed at forward 0 (baseline), 1 at 1
    (baseline), 3 at 1 (temporal), 2 at 2 (baseline).

    forward 0: top1 [10, 11,  9, 13]  conf [.99, .90, .85, .30]
    forward 1: top1 [10, 11, 12, 12]  conf [.99, .95, .60, .70]
    forward 2: top1 [10, 11, 12, 13]  conf [.99, .95, .95, .90]
    """
    trace = Trace(
        top1=torch.tensor(
            [[[10, 11, 9, 13], [10, 11, 12, 12], [10, 11, 12, 13]]], dtype=torch.int32
        ),  # fmt: skip
        conf=torch.tensor(
            [[[0.99, 0.90, 0.85, 0.30], [0.99, 0.95, 0.60, 0.70], [0.99, 0.95, 0.95, 0.90]]]
        ),  # fmt: skip
        block=torch.tensor([[0, 0, 0]], dtype=torch.int32),
        block_length=4,
    )
    return DecodeResult(
        tokens=torch.tensor([[10, 11, 12, 13]]),
        step_map=torch.tensor([[0, 1, 2, 1]], dtype=torch.int32),
        rule_map=torch.tensor([[BASE, BASE, BASE, TEMP]], dtype=torch.int8),
        nfe=torch.tensor([3], dtype=torch.int32),
        trace=trace,
    )


def test_temporal_redundancy_by_hand():
    # Still masked after forward 0: 1, 2, 3; top1 equals final at 1 (11) and 3 (13): 2.
    # Still masked after forward 1: only 2; top1 12 equals final: 1. After forward 2: none.
    scores = measure_redundancy(hand_trajectory())
    assert scores.r_t.tolist() == [3.0]
    # K = 2: pair (1, 2) has final-token streak 1 (forward 0 said 9): none count.
    assert measure_redundancy(hand_trajectory(), RedundancyConfig(temporal_k=2)).r_t.tolist() == [
        0.0
    ]
    # tau_t = 0.8: of the 3 pairs only (0, 1) had conf >= 0.8 (0.90; (0, 3) .30, (1, 2) .60).
    assert measure_redundancy(hand_trajectory(), RedundancyConfig(tau_t=0.8)).r_t.tolist() == [1.0]


def test_spatial_redundancy_by_hand():
    # After the baseline commit of forward 0: masked 1, 2, 3 (0 committed). Windows (w 3):
    #   [0,1,2] 1 committed, mean(.90, .85) = .875 >= .8: 1 event; [1,2,3] mean .683: none.
    #   Token runs of masks: 11, 9, 13: none.
    # Forward 1: 1 was committed by the baseline, 3 by temporal -> masked after baseline
    #   are 2 and 3. Windows [0,1,2] 2 committed; [1,2,3] mean(.60, .70): none. Token run
    #   12, 12 at 2, 3: 1 event (no confidence condition by default).
    # Forward 2: 2 committed by the baseline: nothing masked.
    scores = measure_redundancy(hand_trajectory())
    assert scores.confidence_clusters.tolist() == [1.0]
    assert scores.token_clusters.tolist() == [1.0]
    assert scores.r_s.tolist() == [2.0]
    # With the decoding rule's condition (max conf > 0.8) the run (max .70) is no event.
    strict = measure_redundancy(hand_trajectory(), RedundancyConfig(token_cluster_tau=0.8))
    assert strict.token_clusters.tolist() == [0.0]
    # u_max 0 drops the first window (it holds one committed token).
    assert measure_redundancy(hand_trajectory(), RedundancyConfig(u_max=0)).r_s.tolist() == [1.0]


def test_total_and_per_token():
    scores = measure_redundancy(hand_trajectory(), RedundancyConfig(lambda_s=2.0, lambda_t=0.5))
    assert scores.r_total.tolist() == [2.0 * 2 + 0.5 * 3]
    # Response up to and including the first EOS (id 12 here, at position 2): 3 tokens.
    per_token = measure_redundancy(hand_trajectory(), eos_token_id=12).r_total_per_token
    assert per_token.tolist() == pytest.approx([5.0 / 3])
    assert measure_redundancy(hand_trajectory()).r_total_per_token.tolist() == pytest.approx(
        [5.0 / 4]
    )


def test_padding_forwards_and_rows_are_independent():
    # A second row with fewer forwards: concatenation pads the trace; scores per row equal
    # those of the rows scored alone.
    first = hand_trajectory()
    second = hand_trajectory()
    second.trace = second.trace.row(0, 2)
    second.nfe = torch.tensor([2], dtype=torch.int32)
    second.step_map = torch.tensor([[0, 1, 1, 1]], dtype=torch.int32)
    both = DecodeResult.concatenate([first, second])
    assert both.trace.top1.shape == (2, 3, 4)
    together = measure_redundancy(both)
    assert together.r_total[0] == measure_redundancy(first).r_total[0]
    assert together.r_total[1] == measure_redundancy(second).r_total[0]


def test_requires_trace():
    result = hand_trajectory()
    result.trace = None
    with pytest.raises(ValueError, match="record_trace"):
        measure_redundancy(result)


@dataclass(frozen=True)
class Spec:
    mask_token_id: int = 0
    eos_token_id: int = 1
    eot_token_id: int | None = None
    pad_token_id: int = 2
    shifted_logits: bool = False


class RandomModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(
            torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, input_ids, attention_mask=None):
        mixed = input_ids + input_ids.roll(1, dims=1) * 3 + torch.arange(input_ids.shape[1])
        return SimpleNamespace(logits=self.table[mixed % 64] * 2)


def test_real_decodes_respect_count_bounds():
    # R_t counts (forward, position) pairs still masked after the forward inside the active
    # block: at most sum_i (step_map[i] - first forward of i's block). Each forward holds
    # at most L - w + 1 windows and L // 2 token runs.
    model = RandomModel()
    prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 11]]
    for name in ("fixed", "threshold", "r2"):
        result = generate(model, Spec(), prompts, decoder_config(name, gen_length=16,
                          block_length=8, threshold=0.5))  # fmt: skip
        scores = measure_redundancy(result)
        for row in range(len(prompts)):
            blocks = result.trace.block[row, : int(result.nfe[row])]
            first = torch.stack([(blocks == b).nonzero().min() for b in range(2)])
            opened = first.repeat_interleave(8)
            assert scores.r_t[row] <= (result.step_map[row] - opened).sum()
            assert scores.confidence_clusters[row] <= int(result.nfe[row]) * (8 - 3 + 1)
            assert scores.token_clusters[row] <= int(result.nfe[row]) * 4
        assert torch.equal(scores.r_total, scores.r_s + scores.r_t)
