"""The candidate record is defined once: shards, card and docs all follow r2sft.records."""

from pathlib import Path

import pytest

from r2sft.collect import shards
from r2sft.records import COLUMN_NAMES, DECODE_COLUMNS, SCHEMA, check_record, columns_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def test_shard_schema_is_the_record_schema():
    assert shards.SCHEMA is SCHEMA
    assert tuple(SCHEMA.names) == COLUMN_NAMES


def test_architecture_doc_lists_exactly_the_record_columns():
    text = DOC.read_text()
    table = text.split("<!-- columns:begin -->\n", 1)[1].split("\n<!-- columns:end -->", 1)[0]
    assert table == columns_markdown(), "regenerate the table with r2sft.records.columns_markdown"


def test_check_record_names_missing_and_unknown_columns():
    record = dict.fromkeys(COLUMN_NAMES, 0)
    assert check_record(record) is record
    del record["nfe"]
    record["nfes"] = 1
    with pytest.raises(ValueError, match=r"missing columns \['nfe'\], unknown columns \['nfes'\]"):
        check_record(record)
    assert set(DECODE_COLUMNS) < set(COLUMN_NAMES) and "correct" in DECODE_COLUMNS
