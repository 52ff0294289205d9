"""Collected trajectories in, training canvases out.

``collect.py`` writes a ``datasets.save_to_disk`` folder of candidate records
(``r2sft.records``); :func:`load_trajectories` reads and checks it and
:class:`TrajectoryCollator` turns rows into the fixed-layout canvas every objective uses::

    [ prompt_ids | response_ids (gen_length, EOS fill included) | pad ... ]

Right padding keeps each sample's positions identical whatever batch it lands in, so the
hashed masking noise (keyed by sample and position) does not depend on the batch split.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2sft.records import TRAINING_COLUMNS

SAMPLE_KEY = "sample_index"


class MissingDataError(FileNotFoundError):
    """No collected trajectories where the config says; the message says how to make them."""


def collect_command(data_dir: str | Path) -> str:
    return f"accelerate launch collect.py --output_dir {data_dir}"


def resolve_data_path(data_dir: str | Path) -> Path:
    """``data_dir/selected`` when it exists, else ``data_dir`` if it is a saved dataset."""
    root = Path(data_dir)
    for candidate in (root / "selected", root):
        if (candidate / "dataset_info.json").is_file() or (candidate / "state.json").is_file():
            return candidate
    raise MissingDataError(
        f"No collected trajectories at {root} (expected a datasets.save_to_disk folder at "
        f"{root / 'selected'} or {root}). Collect them first:\n    {collect_command(root)}\n"
        "or pass --data_dir pointing at a collect.py output folder."
    )


class EmptyDataError(ValueError):
    """The collected data has no rows (no prompt had a correct candidate)."""


class UnselectedDataError(ValueError):
    """The data is not a selected set: it has incorrect rows or several rows per prompt."""


def unselected_rows(dataset: Any) -> tuple[int, list[str]]:
    """Why ``dataset`` is not a selected set: its number of incorrect rows and the prompts
    that have several rows ((0, []) for collect.py's ``selected/``)."""
    incorrect = dataset["correct"].count(False)
    repeated = []
    if "prompt_id" in dataset.column_names:
        counts = Counter(dataset["prompt_id"])
        repeated = [prompt for prompt, count in counts.items() if count > 1]
    return incorrect, repeated


def check_selected(dataset: Any, path: Path) -> None:
    """Raise :class:`UnselectedDataError` unless every row is correct and prompts are unique
    (what collect.py's ``selected/`` holds; its ``candidates/`` holds every candidate)."""
    incorrect, repeated = unselected_rows(dataset)
    if incorrect:
        raise UnselectedDataError(
            f"{path}: {incorrect} of {len(dataset)} rows are incorrect candidates; this looks "
            "like collect.py's candidates/, not selected/. Point --data_dir at the collect "
            "output folder (its selected/ is used), or pass --allow_unselected_data."
        )
    if repeated:
        raise UnselectedDataError(
            f"{path}: {len(repeated)} prompt(s) have several rows (e.g. {repeated[:3]}); a "
            "selected set has one per prompt. Use the collect output's selected/, or pass "
            "--allow_unselected_data."
        )


def load_trajectories(
    data_dir: str | Path, max_samples: int | None = None, allow_unselected: bool = False
) -> Any:
    """The selected trajectories as a ``datasets.Dataset`` with a stable ``sample_index``.

    Raises:
        MissingDataError: no dataset folder (the message prints the collect command).
        UnselectedDataError: incorrect rows or repeated prompts (unless ``allow_unselected``).
        ValueError: a required column is missing, or a row's step map and response differ
            in length (naming the row).
    """
    from datasets import load_from_disk

    path = resolve_data_path(data_dir)
    empty = EmptyDataError(
        f"{path} holds no trajectories: no prompt had a correct candidate (see the "
        "collection's summary.json). Collect more prompts or candidates (--num_prompts, "
        "--num_candidates) or use a stronger model."
    )
    state = path / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files", True):
        raise empty  # an empty set saved without shards, which datasets cannot load
    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # noqa: BLE001  (arrow / json / os errors alike)
        raise ValueError(
            f"cannot read {path} as a saved dataset ({type(error).__name__}: {error}); re-run "
            "collect.py into a new --output_dir."
        ) from error
    if hasattr(dataset, "keys"):  # a DatasetDict: take its only / train split
        splits = list(dataset.keys())
        dataset = dataset["train"] if "train" in splits else dataset[splits[0]]
    missing = [c for c in TRAINING_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{path}: collected data lacks column(s) {missing} (has {dataset.column_names}); "
            f"re-run collect.py to write the format of docs/architecture.md."
        )
    if len(dataset) == 0:
        raise empty
    if not allow_unselected:
        check_selected(dataset, path)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    lengths = dataset.map(
        lambda row: {"_bad": len(row["step_map"]) != len(row["response_ids"])},
        desc="checking trajectories",
    )["_bad"]
    if any(lengths):
        bad = lengths.index(True)
        raise ValueError(
            f"{path}: row {bad} has a step_map of a different length than its response_ids; "
            "the collected data is corrupt, re-run collect.py."
        )
    if SAMPLE_KEY not in dataset.column_names:
        dataset = dataset.add_column(SAMPLE_KEY, list(range(len(dataset))))
    return dataset


def collect_decoder_settings(dataset: Any) -> dict[str, Any]:
    """The (most common) DecoderConfig the trajectories were decoded with, {} when unknown."""
    if "decoder" not in dataset.column_names:
        return {}
    text, _ = Counter(dataset["decoder"]).most_common(1)[0]
    try:
        return dict(json.loads(text))
    except (TypeError, ValueError):
        return {}


def data_summary(dataset: Any) -> dict[str, Any]:
    """Numbers for the model card: size, mean NFE / R_total of the trajectories and, for data
    that is not a selected set, its incorrect rows and repeated prompts."""
    incorrect, repeated = unselected_rows(dataset)
    summary: dict[str, Any] = {"num_trajectories": len(dataset), "incorrect_rows": incorrect,
                               "repeated_prompts": len(repeated)}  # fmt: skip
    for column in ("nfe", "r_total"):
        if column in dataset.column_names:
            values = dataset[column]
            summary[f"mean_{column}"] = float(sum(values) / max(len(values), 1))
    summary["gen_length"] = len(dataset[0]["response_ids"])
    return summary


@dataclass
class TrajectoryCollator:
    """Rows of collected trajectories -> a right-padded batch of canvases.

    Output tensors, all ``(B, L)`` unless noted:
        ``input_ids`` clean canvas; ``attention_mask`` 1 on prompt and response;
        ``answer_mask`` response positions (the positions objectives may mask);
        ``loss_mask`` supervised answer positions (the EOS fill only when
        ``supervise_eos_fill``); ``step_map`` commit step of each response position (-1
        elsewhere); ``sample_index`` ``(B,)`` stable id of each sample.
    """

    pad_token_id: int
    eos_token_id: int
    supervise_eos_fill: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(batch, width, dtype=torch.long)
        answer_mask = torch.zeros(batch, width, dtype=torch.bool)
        step_map = torch.full((batch, width), -1, dtype=torch.long)
        for i, row in enumerate(rows):  # one copy per row; no per-position Python work
            prompt = torch.as_tensor(row["prompt_ids"], dtype=torch.long)
            response = torch.as_tensor(row["response_ids"], dtype=torch.long)
            start, end = len(prompt), len(prompt) + len(response)
            input_ids[i, :start] = prompt
            input_ids[i, start:end] = response
            attention_mask[i, :end] = 1
            answer_mask[i, start:end] = True
            step_map[i, start:end] = torch.as_tensor(row["step_map"], dtype=torch.long)
        loss_mask = answer_mask.clone()
        if not self.supervise_eos_fill:
            # Keep the first end-of-text of the answer (the model must learn to stop), drop
            # the fill after it.
            eos = answer_mask & (input_ids == self.eos_token_id)
            loss_mask &= ~(eos & (eos.long().cumsum(dim=1) > 1))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "answer_mask": answer_mask,
            "loss_mask": loss_mask,
            "step_map": step_map,
            SAMPLE_KEY: torch.as_tensor([int(r[SAMPLE_KEY]) for r in rows], dtype=torch.long),
        }
