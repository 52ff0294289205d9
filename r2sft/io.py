"""File helpers every stage uses: crash-safe writes and early checks of output paths.

A file written with :func:`atomic_file` (or :func:`atomic_write_text`) appears under its final
name through ``os.replace`` of a fully written and fsynced temporary sibling (atomic on
POSIX), so a reader, or a run resumed after ``kill -9``, sees the old file or the new one,
never a part. Temporary files start with :data:`TEMP_PREFIX`, so a folder's leftovers from a
crash are easy to recognise and remove.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a file just renamed into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: str = "w", temp_name: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; when the block ends without an error,
    fsync it and move it to ``path`` (else remove it).

    Args:
        path: the final file.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        temp_name: the temporary file's name (``TEMP_PREFIX`` + a random part + the final
            name when None); it must start with ``TEMP_PREFIX``.
    """
    temp = path.with_name(temp_name or f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    if not temp.name.startswith(TEMP_PREFIX):
        raise ValueError(f"temporary file {temp.name!r} must start with {TEMP_PREFIX!r}")
    try:
        with temp.open(mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a part."""
    with atomic_file(path) as handle:
        handle.write(text)


def check_writable(path: Path, flag: str) -> None:
    """Fail now, not after a long run, when ``path`` cannot be written (a file left in place
    is unchanged; a new one is removed again). ``flag`` names the option in the error."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as error:
        raise OSError(f"{flag} {path} cannot be written ({error}); choose another path.") from None
    if not existed:
        path.unlink()
