"""Per-prompt selection of one correct candidate, and run statistics.

Pure functions on candidate records (dicts with at least ``prompt_id``, ``correct``,
``r_total``, ``r_total_per_token``, ``nfe`` and ``seed``; optionally ``decoder``, the label
of the decoder-mix entry that made it): no model, no files, so they are tested on hand-built
candidates.

Selection policies (``collect.py --selection``) are the entries of :data:`POLICIES`: a sort
key among a prompt's correct candidates (ties broken by the next keys and finally the seed)
and the words ``--help`` and the dataset card use for it. ``r_total`` is the paper's;
``random_correct`` keeps the lowest seed (seeds are hashes, so this is a uniform,
reproducible draw): the control that says whether selecting helps at all.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True)
class SelectionPolicy:
    """A way to keep one correct candidate per prompt.

    Attributes:
        name: the ``--selection`` value.
        key: sort key of a record among a prompt's correct candidates (lower is better); it
            ends with the seed, so the choice never depends on arrival order.
        description: which candidate it keeps, in words (``--help`` and the dataset card).
    """

    name: str
    key: Callable[[Record], tuple]
    description: str

    def __post_init__(self) -> None:
        if not (self.name and self.description and callable(self.key)):
            raise ValueError(
                f"selection policy {self.name!r} needs a name, a key and a description."
            )


POLICIES: dict[str, SelectionPolicy] = {}


def register_policy(policy: SelectionPolicy) -> SelectionPolicy:
    """Add ``policy`` to :data:`POLICIES` (a name registered twice is an error)."""
    if policy.name in POLICIES:
        raise ValueError(f"selection policy {policy.name!r} is registered twice")
    POLICIES[policy.name] = policy
    return policy


register_policy(SelectionPolicy(
    "r_total",
    lambda r: (float(r["r_total"]), int(r["nfe"]), int(r["seed"])),
    "the lowest R_total (ties: fewer forwards, then lower seed)",
))  # fmt: skip
register_policy(SelectionPolicy(
    "nfe",
    lambda r: (int(r["nfe"]), float(r["r_total"]), int(r["seed"])),
    "the fewest forwards (ties: lower R_total, then lower seed)",
))  # fmt: skip
register_policy(SelectionPolicy(
    "r_total_per_token",
    lambda r: (float(r["r_total_per_token"]), int(r["nfe"]), int(r["seed"])),
    "the lowest R_total per answer token (ties: fewer forwards)",
))  # fmt: skip
register_policy(SelectionPolicy(
    "random_correct",
    lambda r: (int(r["seed"]),),
    "a random one (the control of the selection ablation)",
))  # fmt: skip
SELECTION_POLICIES = tuple(POLICIES)


def get_policy(name: str) -> SelectionPolicy:
    """The registered policy ``name`` (a clear error naming the valid ones)."""
    if name not in POLICIES:
        raise ValueError(f"selection {name!r} is unknown; choose one of {tuple(POLICIES)}.")
    return POLICIES[name]


def policy_help() -> str:
    """``--selection``'s help: every registered policy and what it keeps."""
    return "; ".join(f"{name}: {policy.description}" for name, policy in POLICIES.items())


def policy_key(policy: str) -> Callable[[Record], tuple]:
    """The sort key of ``policy`` (lower is better); the seed breaks the last tie so the
    choice never depends on arrival order."""
    return get_policy(policy).key


def selection_key(record: Record, policy: str = "r_total") -> tuple:
    """Order of preference of ``record`` among correct candidates under ``policy``."""
    return policy_key(policy)(record)


@dataclass
class Selection:
    """Outcome of selection over a collection.

    ``selected``: one record per prompt that has a correct candidate, in first-seen prompt
    order. ``without_correct``: prompt ids whose candidates are all wrong (listed, never
    silently dropped).
    """

    selected: list[Record]
    without_correct: list[str]


def select_per_prompt(candidates: Iterable[Record], policy: str = "r_total") -> Selection:
    """For each prompt, the correct candidate with the lowest :func:`selection_key`."""
    key = policy_key(policy)
    best: dict[str, Record | None] = {}
    for record in candidates:
        prompt_id = record["prompt_id"]
        current = best.setdefault(prompt_id, None)
        if record["correct"] and (current is None or key(record) < key(current)):
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

    per_decoder = {}
    for label in dict.fromkeys(record["decoder"] for record in candidates if "decoder" in record):
        made = [record for record in candidates if record.get("decoder") == label]
        right = [record for record in made if record["correct"]]
        per_decoder[label] = {
            "candidates": len(made),
            "accuracy": len(right) / len(made),
            "selected": describe([r for r in selection.selected if r.get("decoder") == label]),
            "all_correct": describe(right),
        }
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
        "per_decoder": per_decoder,
        "prompt_ids_without_correct": selection.without_correct,
    }
