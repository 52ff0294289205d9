"""CPU threads of an r2sft process: a count that fits the model and the machine, no spinning.

torch's CPU kernels run on OpenMP worker threads. Between two parallel regions an idle
worker busy-waits (libgomp: 300,000 spins) before it sleeps. On cores shared with other
processes a spinning thread burns the time slice that the thread it waits for needs, and a
1M-parameter model's kernels are so short that its threads spend most of their time in that
wait: beside two busy processes the embedded model trained at 1/16 to 1/73 of its speed,
far below the CPU share it kept. With ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at
once) it trains as fast alone and at 0.34-0.42 of that speed beside them; a short spin
(``GOMP_SPINCOUNT`` 1000 or 10000) or one thread did worse (docs/results.md, "Training beside
other processes"; ``bench/bench_shared_cpu.py``). A small model also gains nothing from
more threads than it has work for.

Both variables are read once, when the OpenMP runtime loads (``import torch``), so the
launcher sets them: ``launch/pipeline_embedded.sh`` and ``python -m r2sft.rounds`` use
:func:`cpu_thread_env` (``eval "$(python -m r2sft.threads --model MODEL)"`` in a shell).
Values the user set (``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) are kept.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from r2sft.config import parse_config

# Below this many parameters a model's kernels are too small to share among many threads
# (two were measured, on the 2-core machine; more were not).
SMALL_MODEL_PARAMETERS = 20_000_000
SMALL_MODEL_THREADS = 2
WAIT_POLICY = "PASSIVE"


def count_parameters(model: str | Path) -> int | None:
    """Parameters of a local model folder, from its safetensors headers (no weights read);
    None for a Hub id or a folder without safetensors files."""
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for size in tensor["shape"]:
                    count *= size
                total += count
    return total


def cpu_thread_env(
    model: str | Path | None,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> dict[str, str]:
    """The OpenMP variables for a CPU process running ``model``.

    ``OMP_NUM_THREADS``: every core, at most :data:`SMALL_MODEL_THREADS` for a model under
    :data:`SMALL_MODEL_PARAMETERS` parameters; ``OMP_WAIT_POLICY``: PASSIVE. A variable
    already in ``environ`` (default ``os.environ``) keeps its value, and a set
    ``GOMP_SPINCOUNT`` leaves the waiting to it.
    """
    environ = os.environ if environ is None else environ
    cores = cores or os.cpu_count() or 1
    parameters = count_parameters(model) if model is not None else None
    threads = cores
    if parameters is not None and parameters < SMALL_MODEL_PARAMETERS:
        threads = min(cores, SMALL_MODEL_THREADS)
    chosen = {"OMP_NUM_THREADS": str(threads)}
    if "GOMP_SPINCOUNT" not in environ:
        chosen["OMP_WAIT_POLICY"] = WAIT_POLICY
    return {name: environ.get(name, value) for name, value in chosen.items()}


@dataclass
class ThreadsArgs:
    """Print the OpenMP settings for a CPU run of a model, as shell exports.

    Launch: ``eval "$(python -m r2sft.threads --model data/tiny-llada)"``."""

    _argument_group_name = "model and data"

    model: str | None = field(
        default=None, metadata={"help": "model folder (None or a Hub id: a large model)."}
    )


def main(argv: list[str] | None = None) -> str:

    args = parse_config(ThreadsArgs, args=argv, command="python -m r2sft.threads", summary=__doc__)
    exports = cpu_thread_env(args.model)
    line = "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items())
    print(line)
    return line


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
