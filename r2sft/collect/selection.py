"""Per-prompt selection of the least redundant correct candidate, and run statistics.

Pure functions on candidate records (dicts with at least ``prompt_id``, ``correct``,
``r_total``, ``nfe`` and ``seed``): no model, no files, so they are tested on hand-built
candidates.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


def selection_key(record: Record) -> tuple[float, int, int]:
    """Order of preference among correct candidates: lowest R_total, then fewer forwards
    (NFE), then the lower seed so the choice never depends on arrival order."""
    return (float(record["r_total"]), int(record["nfe"]), int(record["seed"]))


@dataclass
class Selection:
    """Outcome of selection over a collection.

    ``selected``: one record per prompt that has a correct candidate, in first-seen prompt
    order. ``without_correct``: prompt ids whose candidates are all wrong (listed, never
    silently dropped).
    """

    selected: list[Record]
    without_correct: list[str]


def select_lowest_redundancy(candidates: Iterable[Record]) -> Selection:
    """For each prompt, the correct candidate with the lowest :func:`selection_key`."""
    best: dict[str, Record | None] = {}
    for record in candidates:
        prompt_id = record["prompt_id"]
        current = best.setdefault(prompt_id, None)
        if record["correct"] and (
            current is None or selection_key(record) < selection_key(current)
        ):
            best[prompt_id] = record
    selected = [record for record in best.values() if record is not None]
    without = [prompt_id for prompt_id, record in best.items() if record is None]
    return Selection(selected=selected, without_correct=without)


def describe(records: Sequence[Record]) -> dict[str, float | int | None]:
    """Count plus mean / median of NFE, R_s, R_t, R_total (None when there are no records)."""
    stats: dict[str, float | int | None] = {"count": len(records)}
    for key in ("nfe", "r_s", "r_t", "r_total", "r_total_per_token"):
        values = [float(record[key]) for record in records if key in record]
        stats[f"mean_{key}"] = statistics.fmean(values) if values else None
        stats[f"median_{key}"] = statistics.median(values) if values else None
    return stats


def summarize(candidates: Sequence[Record], selection: Selection) -> dict[str, Any]:
    """The counts and statistics of ``summary.json``: selected vs all correct vs all."""
    correct = [record for record in candidates if record["correct"]]
    prompts = len({record["prompt_id"] for record in candidates})
    selected_stats = describe(selection.selected)
    correct_stats = describe(correct)

    def ratio(key: str) -> float | None:
        sel, cor = selected_stats[key], correct_stats[key]
        return sel / cor if sel is not None and cor else None

    return {
        "prompts": prompts,
        "candidates": len(candidates),
        "correct_candidates": len(correct),
        "candidate_accuracy": len(correct) / len(candidates) if candidates else None,
        "prompts_with_correct": len(selection.selected),
        "prompts_without_correct": len(selection.without_correct),
        "selected": len(selection.selected),
        "stats": {
            "selected": selected_stats,
            "all_correct": correct_stats,
            "all_candidates": describe(candidates),
        },
        "selected_vs_all_correct": {
            "mean_nfe_ratio": ratio("mean_nfe"),
            "mean_r_total_ratio": ratio("mean_r_total"),
        },
        "prompt_ids_without_correct": selection.without_correct,
    }
