"""Crash-safe storage of collected candidates: atomic shard files, resume, merge.

Layout of an output directory::

    OUT/run.json                 settings, model and prompt fingerprints (resume must match)
    OUT/shards/<name>.parquet    all K candidates of a few prompts, written by one process
    OUT/candidates/, selected/   merged datasets (``datasets.save_to_disk``), rebuilt by merge
    OUT/summary.json, README.md

A shard holds complete prompts only and appears under its final name through
``os.replace`` of a fully written and fsynced temporary file (atomic on POSIX), so after a
crash at any instant, including ``kill -9``, every shard on disk is whole and a prompt is
either entirely collected or not at all. Resumption skips prompts found in shards; merge
keeps one copy of a prompt even if a misuse (two runs on one directory) wrote it twice.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from r2sft.io import TEMP_PREFIX, atomic_file, atomic_write_text, fsync_dir
from r2sft.records import SCHEMA

# The setting naming the model (CollectConfig.model): a path or Hub id as the user spelled it.
_MODEL_SETTING = "model"
# The settings' entry for the decoders the options resolved to (presets read). Collections made
# before it was recorded lack it; they are compared by their options alone.
RESOLVED_DECODERS = "resolved_decoders"


class IncompatibleRunError(ValueError):
    """The output directory holds a collection made with different settings."""


def describe_model_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two model fingerprints (``pipeline.model_fingerprint``), briefly."""
    old_source, new_source = old.get("path", old.get("hub_id")), new.get("path", new.get("hub_id"))
    if old_source != new_source:
        return f"{old_source} -> {new_source}"
    if old.get("revision") != new.get("revision"):
        return f"{new_source}: Hub revision {old.get('revision')} -> {new.get('revision')}"
    old_files, new_files = old.get("files", {}), new.get("files", {})
    changes = [f"{name} added" for name in sorted(new_files.keys() - old_files.keys())]
    changes += [f"{name} removed" for name in sorted(old_files.keys() - new_files.keys())]
    for name in sorted(old_files.keys() & new_files.keys()):
        (old_size, old_time), (new_size, new_time) = old_files[name], new_files[name]
        if old_size != new_size:
            changes.append(f"{name} size {old_size} -> {new_size} bytes")
        elif old_time != new_time:
            changes.append(f"{name} rewritten (modification time changed)")
    return f"{new_source}: {', '.join(changes) or 'fingerprint changed'}"


def _same_model(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Fingerprints match; a Hub revision counts only when both runs resolved one (runs made
    before revisions were recorded, or an unresolvable id, which the model load reports)."""
    if old is None:
        return True
    if old.get("revision") is None or new.get("revision") is None:
        old, new = ({k: v for k, v in fp.items() if k != "revision"} for fp in (old, new))
    return old == new


class ShardStore:
    """Shard files of one output directory."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)
        self.shard_dir = self.root / "shards"
        self.manifest = self.root / "run.json"

    def check_compatible(
        self,
        settings: dict[str, Any],
        model: dict[str, Any] | None = None,
        prompts: dict[str, str] | None = None,
    ) -> bool:
        """Raise if an earlier run here differs; True when there is one to resume.

        Compared: the settings, the model's fingerprint (resolved path, weight files' sizes
        and modification times; it stands for the ``model`` setting, so another spelling of
        the same folder resumes) and the content hash of every prompt both runs know (a resumed
        run may ask for more or fewer prompts, but a prompt whose text or reference changed
        under the same id would mix old and new candidates). Read-only, so every process can
        call it (all then fail alike instead of some waiting at a barrier for a main
        process that died).
        """
        if not self.manifest.exists():
            return False
        previous = json.loads(self.manifest.read_text())
        if "settings" not in previous:
            raise IncompatibleRunError(
                f"{self.root} holds a collection made by an older r2sft (run.json without "
                "'settings'); choose a new --output_dir."
            )
        old = previous["settings"]
        # With both fingerprints at hand the model is compared by them (its resolved path
        # and weight files), not by how --model was spelled: 'data/tiny-llada', its absolute
        # path or a symlink to it name the same model.
        not_compared = {_MODEL_SETTING} if model and previous.get("model") else set()
        if RESOLVED_DECODERS not in old:
            not_compared.add(RESOLVED_DECODERS)
        problems = [
            f"{key}: {old.get(key)!r} -> {settings.get(key)!r}"
            for key in sorted((set(old) | set(settings)) - not_compared)
            if old.get(key) != settings.get(key)
        ]
        if model is not None and not _same_model(previous.get("model"), model):
            problems.append(f"the model: {describe_model_change(previous['model'], model)}")
        if prompts is not None:
            known = previous.get("prompts", {})
            changed = sorted(key for key in prompts.keys() & known.keys()
                             if prompts[key] != known[key])  # fmt: skip
            if changed:
                problems.append(
                    f"the data: {len(changed)} prompt(s) changed content under the same id "
                    f"(e.g. {changed[:3]})"
                )
        if problems:
            raise IncompatibleRunError(
                f"{self.root} holds a collection made from other inputs ({'; '.join(problems)}). "
                "Resume with the same settings, data and model, or choose a new --output_dir."
            )
        return True

    def prepare(
        self,
        settings: dict[str, Any],
        model: dict[str, Any] | None = None,
        prompts: dict[str, str] | None = None,
    ) -> bool:
        """Check compatibility, create the layout, record the inputs, drop temp files.

        Returns True when resuming an earlier run. Call on the main process only, before
        the other processes look at the shards.
        """
        resuming = self.check_compatible(settings, model, prompts)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.shard_dir.glob(f"{TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)  # a write interrupted by a crash
        known = json.loads(self.manifest.read_text()).get("prompts", {}) if resuming else {}
        manifest = {"settings": settings, "model": model, "prompts": {**known, **(prompts or {})}}
        atomic_write_text(self.manifest, json.dumps(manifest, indent=1, sort_keys=True))
        return resuming

    def shard_files(self) -> list[Path]:
        """Complete shards (pathlib's glob also matches the hidden temporary files: skip them)."""
        if not self.shard_dir.exists():
            return []
        paths = self.shard_dir.glob("*.parquet")
        return sorted(path for path in paths if not path.name.startswith(TEMP_PREFIX))

    def finished_prompt_ids(self) -> set[str]:
        """Prompts already collected (only the id column of each shard is read)."""
        done: set[str] = set()
        for path in self.shard_files():
            done.update(pq.read_table(path, columns=["prompt_id"]).column(0).to_pylist())
        return done

    def write_shard(self, records: Sequence[dict[str, Any]], name: str) -> Path:
        """Write ``records`` (complete prompts) as one shard, atomically."""
        if not records:
            raise ValueError("write_shard got no records")
        table = pa.Table.from_pylist(list(records), schema=SCHEMA)
        final = self.shard_dir / f"{name}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_file(final, "wb", temp_name=f"{TEMP_PREFIX}{final.name}") as handle:
            pq.write_table(table, handle)
        fsync_dir(self.shard_dir)
        return final

    def read_candidates(self, prompt_ids: Sequence[str] | None = None) -> pa.Table:
        """All shards as one table, one copy per prompt, sorted by (prompt_index, candidate).

        ``prompt_ids`` restricts the result to the current run's prompts (a resumed run may
        ask for fewer prompts than an earlier one collected).
        """
        tables, seen = [], set()
        for path in self.shard_files():
            table = pq.read_table(path, schema=SCHEMA)
            ids = table.column("prompt_id").to_pylist()
            fresh = sorted(set(ids) - seen)
            if len(fresh) < len(set(ids)):
                keep = pa.array([prompt_id in set(fresh) for prompt_id in ids])
                table = table.filter(keep)
            seen.update(fresh)
            tables.append(table)
        merged = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        if prompt_ids is not None:
            wanted = pa.array(list(prompt_ids), type=pa.string())
            merged = merged.filter(pc.is_in(merged.column("prompt_id"), wanted))
        return merged.sort_by([("prompt_index", "ascending"), ("candidate", "ascending")])


def save_dataset_atomically(dataset: Any, path: Path) -> None:
    """``dataset.save_to_disk`` into a temporary folder, then swap it into ``path``."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    if temp.exists():
        shutil.rmtree(temp)
    # An empty set gets one (empty) shard: with none, datasets cannot load it back.
    dataset.save_to_disk(str(temp), num_shards=1 if len(dataset) == 0 else None)
    if path.exists():
        shutil.rmtree(path)
    os.replace(temp, path)
