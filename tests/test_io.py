"""r2sft.io: crash-safe writes and early output checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from r2sft.io import TEMP_PREFIX, atomic_file, atomic_write_text, check_writable


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "shard.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_file(path, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.parquet"]
    with pytest.raises(ValueError, match=f"must start with '{TEMP_PREFIX}'"):
        with atomic_file(path, "wb", temp_name="visible.parquet"):
            pass


def test_check_writable_fails_early_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=r"--output .*a_file/m.json cannot be written"):
        check_writable(tmp_path / "a_file" / "m.json", "--output")
    check_writable(tmp_path / "new" / "m.json", "--output")
    assert not (tmp_path / "new" / "m.json").exists()
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    check_writable(kept, "--output")
    assert kept.read_text() == "{}"
