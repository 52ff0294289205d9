"""Selection of the least redundant correct candidate, on hand-built candidates."""

from __future__ import annotations

import random

import pytest

from r2sft.collect.selection import describe, select_per_prompt, summarize


def cand(prompt: str, seed: int, correct: bool, r_total: float, nfe: int) -> dict:
    return {
        "prompt_id": prompt,
        "seed": seed,
        "correct": correct,
        "r_total": r_total,
        "nfe": nfe,
        "r_s": r_total / 2,
        "r_t": r_total / 2,
    }


CANDIDATES = [
    # p0: the lowest R_total overall is wrong; among correct ones 5.0 wins.
    cand("p0", 11, False, 1.0, 10),
    cand("p0", 12, True, 7.0, 9),
    cand("p0", 13, True, 5.0, 20),
    # p1: tie on R_total -> fewer NFE wins, whatever the order.
    cand("p1", 21, True, 3.0, 12),
    cand("p1", 22, True, 3.0, 11),
    # p2: tie on R_total and NFE -> lower seed wins.
    cand("p2", 39, True, 2.0, 8),
    cand("p2", 31, True, 2.0, 8),
    # p3: nothing correct -> listed, not selected.
    cand("p3", 41, False, 0.0, 8),
    cand("p3", 42, False, 9.0, 8),
]


def test_selects_lowest_r_total_correct_with_tie_breaks() -> None:
    selection = select_per_prompt(CANDIDATES)
    assert [(r["prompt_id"], r["seed"]) for r in selection.selected] == [
        ("p0", 13),
        ("p1", 22),
        ("p2", 31),
    ]
    assert selection.without_correct == ["p3"]


@pytest.mark.parametrize("shuffle_seed", range(5))
def test_selection_does_not_depend_on_candidate_order(shuffle_seed: int) -> None:
    shuffled = CANDIDATES[:]
    random.Random(shuffle_seed).shuffle(shuffled)
    selection = select_per_prompt(shuffled)
    picked = {r["prompt_id"]: r["seed"] for r in selection.selected}
    assert picked == {"p0": 13, "p1": 22, "p2": 31}
    assert selection.without_correct == ["p3"]


def test_summary_counts_and_statistics() -> None:
    selection = select_per_prompt(CANDIDATES)
    summary = summarize(CANDIDATES, selection)
    assert summary["prompts"] == 4 and summary["candidates"] == 9
    assert summary["correct_candidates"] == 6
    assert summary["candidate_accuracy"] == pytest.approx(6 / 9)
    assert summary["prompts_with_correct"] == summary["selected"] == 3
    assert summary["prompts_without_correct"] == 1
    assert summary["prompt_ids_without_correct"] == ["p3"]
    selected = summary["stats"]["selected"]
    assert selected["mean_r_total"] == pytest.approx((5.0 + 3.0 + 2.0) / 3)
    assert selected["median_nfe"] == 11
    correct = summary["stats"]["all_correct"]
    assert correct["mean_r_total"] == pytest.approx((7 + 5 + 3 + 3 + 2 + 2) / 6)
    assert correct["mean_nfe"] == pytest.approx((9 + 20 + 12 + 11 + 8 + 8) / 6)
    ratio = summary["selected_vs_all_correct"]["mean_r_total_ratio"]
    assert ratio == pytest.approx(selected["mean_r_total"] / correct["mean_r_total"])


def test_describe_empty() -> None:
    stats = describe([])
    assert stats["count"] == 0 and stats["mean_nfe"] is None and stats["median_r_total"] is None


def test_selection_policies_on_hand_built_candidates() -> None:
    rows = [
        {**cand("p", 5, True, 4.0, 6), "r_total_per_token": 0.4},
        {**cand("p", 3, True, 2.0, 9), "r_total_per_token": 0.5},
        {**cand("p", 9, True, 6.0, 5), "r_total_per_token": 0.1},
        {**cand("p", 1, False, 0.0, 2), "r_total_per_token": 0.0},  # wrong: never chosen
    ]
    chosen = {
        policy: select_per_prompt(rows, policy).selected[0]["seed"]
        for policy in ("r_total", "nfe", "r_total_per_token", "random_correct")
    }
    assert chosen == {"r_total": 3, "nfe": 9, "r_total_per_token": 9, "random_correct": 3}
    with pytest.raises(ValueError, match="selection 'fastest' is unknown"):
        select_per_prompt(rows, "fastest")


def test_summary_reports_each_decoder_of_the_mix() -> None:
    rows = [
        {**cand("p0", 1, True, 2.0, 4), "decoder": "fast"},
        {**cand("p0", 2, True, 5.0, 8), "decoder": "slow"},
        {**cand("p1", 3, False, 1.0, 3), "decoder": "fast"},
        {**cand("p1", 4, True, 3.0, 7), "decoder": "slow"},
    ]
    summary = summarize(rows, select_per_prompt(rows))
    fast, slow = summary["per_decoder"]["fast"], summary["per_decoder"]["slow"]
    assert (fast["candidates"], fast["accuracy"], fast["selected"]["count"]) == (2, 0.5, 1)
    assert (slow["candidates"], slow["accuracy"], slow["selected"]["count"]) == (2, 1.0, 1)
    assert slow["all_correct"]["mean_nfe"] == 7.5 and fast["selected"]["mean_nfe"] == 4
