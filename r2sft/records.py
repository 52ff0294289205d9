"""The candidate record: one decoded trajectory with its scores (collect writes, train reads).

This is the one definition of the record's columns. The shard writer's Arrow schema, the
dataset card's column list, train.py's input check and the table in docs/architecture.md
are all derived from :data:`CANDIDATE_COLUMNS` (a test keeps the doc in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One column of a candidate record: its name, Arrow type and meaning."""

    name: str
    type: pa.DataType
    description: str
    origin: str  # "prompt": the prompt's; "decode": the scoring path's; "collect": the run's


CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("prompt_id", pa.string(), "the task's example id (keys resume and selection)", "prompt"),
    Column("prompt_index", pa.int64(), "position in the run's prompt list", "prompt"),
    Column("candidate", pa.int32(), "k in 0..K-1", "collect"),
    Column("prompt", pa.string(), "chat-rendered prompt text", "prompt"),
    Column("prompt_ids", pa.list_(pa.int32()), "token ids of the prompt", "prompt"),
    Column("response", pa.string(), "decoded text up to end of text / turn", "decode"),
    Column(
        "response_ids",
        pa.list_(pa.int32()),
        "the whole canvas (gen_length tokens, end-of-text fill included)",
        "decode",
    ),
    Column("step_map", pa.list_(pa.int32()), "forward that committed each position", "decode"),
    Column(
        "rule_map",
        pa.list_(pa.int8()),
        "rule that committed each position: 1 baseline, 2 confidence cluster, 3 token "
        "cluster, 4 temporal, 5 end-of-text fill of an early exit",
        "decode",
    ),
    Column("nfe", pa.int32(), "forward passes of the decode", "decode"),
    Column("response_length", pa.int32(), "answer tokens up to the first end of text", "decode"),
    Column("r_s", pa.float64(), "spatial redundancy R_s", "decode"),
    Column("r_t", pa.float64(), "temporal redundancy R_t", "decode"),
    Column("r_total", pa.float64(), "lambda_s * R_s + lambda_t * R_t", "decode"),
    Column("r_total_per_token", pa.float64(), "R_total / response_length", "decode"),
    Column("correct", pa.bool_(), "the task's verdict on the response", "decode"),
    Column("seed", pa.int64(), "seed of the candidate's sampling", "collect"),
    Column("decoder", pa.string(), "JSON of the candidate's DecoderConfig", "collect"),
    Column("reference", pa.string(), "the task's reference (answer or tests)", "prompt"),
)
COLUMN_NAMES = tuple(column.name for column in CANDIDATE_COLUMNS)
SCHEMA = pa.schema([(column.name, column.type) for column in CANDIDATE_COLUMNS])
# What the scoring path fills for every decoded row (the rest comes from the caller).
DECODE_COLUMNS = tuple(c.name for c in CANDIDATE_COLUMNS if c.origin == "decode")
# What training needs of a row.
TRAINING_COLUMNS = ("prompt_ids", "response_ids", "step_map", "correct")


def check_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` itself when it has exactly the candidate columns, else a ValueError."""
    missing = [name for name in COLUMN_NAMES if name not in record]
    extra = sorted(set(record) - set(COLUMN_NAMES))
    if missing or extra:
        raise ValueError(f"candidate record: missing columns {missing}, unknown columns {extra}")
    return record


def _type_name(data_type: pa.DataType) -> str:
    if pa.types.is_list(data_type):
        return f"list[{_type_name(data_type.value_type)}]"
    return {"string": "str", "bool": "bool"}.get(str(data_type), str(data_type))


def columns_markdown() -> str:
    """The columns as a Markdown table (dataset card, docs/architecture.md)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for column in CANDIDATE_COLUMNS:
        lines.append(f"| `{column.name}` | {_type_name(column.type)} | {column.description} |")
    return "\n".join(lines)
