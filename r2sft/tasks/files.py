"""Reading a task's data: local JSONL(.gz) files, split folders and Hub data sets.

Every task reads its records through these helpers, so a malformed line, a missing field or
a missing split is reported the same way everywhere: with the file, the line and the fix.
``reject_record`` is the one place that decides between failing and skipping
(``skip_invalid``) an unusable record.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from r2sft.hub import hub_offline, require_hub


class InvalidRecordError(ValueError):
    """A data record cannot be used; the message names the file, line and problem."""


def _open_bytes(path: Path) -> IO[bytes]:
    # Bytes, decoded line by line: a non-UTF-8 byte is then reported with its line.
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def reject_record(problem: str, skip_invalid: bool, skipped: list[str] | None) -> None:
    """Handle an invalid data record: raise naming it, or (``skip_invalid``) record it in
    ``skipped`` so the caller can drop it and count it."""
    if not skip_invalid:
        raise InvalidRecordError(f"{problem}. Fix or remove the line, or pass --skip_invalid.")
    if skipped is not None:
        skipped.append(problem)


def read_jsonl(
    path: Path,
    required: Iterable[str],
    skip_invalid: bool = False,
    skipped: list[str] | None = None,
    text_fields: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL(.gz) file that carry every ``required`` field.

    Each record gets ``_line`` (its 1-based line number) for error messages. A line that is
    not UTF-8 or not JSON, a non-object, a missing / empty required field or a
    ``text_fields`` field that is not a string raises :class:`InvalidRecordError` naming
    ``path:line``; with ``skip_invalid`` the line is skipped and its reason appended to
    ``skipped`` instead.
    """
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist; check the task's --data_path.")
    required, text_fields = tuple(required), tuple(text_fields)
    records = []
    with _open_bytes(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            record = _parse_record(raw, required, text_fields)
            if record is None:  # a blank line
                continue
            if isinstance(record, str):
                reject_record(f"{path}:{line_number}: {record}", skip_invalid, skipped)
                continue
            record["_line"] = line_number
            records.append(record)
    return records


def _parse_record(
    raw: bytes, required: tuple[str, ...], text_fields: tuple[str, ...]
) -> dict[str, Any] | str | None:
    """The record of one JSONL line, what is wrong with it (a string), or None (blank)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
            "re-save the file as UTF-8"
        )
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return f"malformed JSON ({error.msg})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [key for key in required if _is_empty(record.get(key))]
    if missing:
        return f"missing or empty field(s) {missing}"
    for key in text_fields:
        if key in record and not isinstance(record[key], str):
            return f"field {key!r} must be a string, got {type(record[key]).__name__}"
    return record


def _is_empty(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def find_split_file(root: Path, split: str) -> Path:
    """``root`` itself if it is a file, else ``root/{split}.jsonl`` or ``.jsonl.gz``.

    A folder without the split's file is an error, never a fallback to another file: reading
    ``train.jsonl`` for ``--split test`` would silently evaluate on training data.
    """
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"data path {root} does not exist; check --data_path.")
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (root / name).is_file():
            return root / name
    found = sorted(path.name for path in [*root.glob("*.jsonl"), *root.glob("*.jsonl.gz")])
    raise FileNotFoundError(
        f"no {split}.jsonl(.gz) in {root} for --split {split} (found {found}); pick a split "
        "that exists there, or point --data_path at the file itself."
    )


def load_hub_rows(name: str, split: str, config_name: str | None = None) -> list[dict[str, Any]]:
    """The rows of a Hub data set's split, each with ``_line`` (needs network, or
    ``HF_HUB_OFFLINE=1`` and the data set in the cache).

    Raises:
        HubUnreachableError: the Hub cannot be reached (asked once, in seconds).
        FileNotFoundError: offline, and the data set is not in the cache.
    """

    fix = f"Pass --data_path a local copy (a folder with {split}.jsonl, or a JSONL file)"
    require_hub(f"data set {name!r} (split {split})", fix)
    from datasets import load_dataset  # only when a Hub name is used (a slow import)

    try:
        rows = [dict(row) for row in load_dataset(name, config_name, split=split)]
    except (ConnectionError, OSError) as error:
        if not hub_offline():
            raise
        raise FileNotFoundError(
            f"data set {name!r} (split {split}) is not in the Hugging Face cache and "
            f"HF_HUB_OFFLINE is set ({type(error).__name__}). {fix}, or unset HF_HUB_OFFLINE "
            "to download it."
        ) from None
    for index, row in enumerate(rows):
        row["_line"] = index + 1
    return rows
