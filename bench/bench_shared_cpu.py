"""Training steps/s and tracking-decode time on a CPU shared with busy processes.

    python bench/bench_shared_cpu.py                         # before vs after, 3 rounds
    python bench/bench_shared_cpu.py --rounds 2 --steps 30 --settings "t1:OMP_NUM_THREADS=1"

Each measurement is a fresh process running ``train.py``'s own path
(:func:`r2sft.training.train`) on the embedded model: ``--steps`` timed optimizer steps
after a few warm-up steps, then the tracking decode of ``--eval_limit`` dev prompts at the
final save, as ``launch/pipeline_embedded.sh`` trains. Every setting (an OpenMP
environment) is measured (a) on the machine as it is ("idle") and (b) with ``--hogs`` busy
processes (``python -c 'while True: pass'``) beside it, alternating a/b round by round in
one run; the report gives medians and the loaded / idle ratio per setting. Settings:
``before`` (OMP_NUM_THREADS = every core, the launch script's old value, with OpenMP's
default spinning wait), ``after`` (what :func:`r2sft.threads.cpu_thread_env` chooses for
the model: the launch script's values now), or ``NAME:VAR=VALUE,VAR=VALUE``. Prints one JSON
object (the per-run lines go to stderr as they come).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2sft.paths import EMBEDDED_MODEL_DIR, REPO_ROOT

WARMUP_STEPS = 5
# The OpenMP variables a setting may set; the others are removed from the worker's environment
# so that the caller's own values do not leak into a setting that leaves them unset.
OPENMP_VARIABLES = ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
HOG = "while True: pass"


@dataclass
class BenchSharedCpuArgs:
    """Training steps/s and tracking decode time, idle and beside busy processes.

    Launch: ``python bench/bench_shared_cpu.py``."""

    _argument_group_name = "bench"

    model: str = field(default=str(EMBEDDED_MODEL_DIR), metadata={"help": "model folder."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "collect.py output to train on (None: a 64-prompt collect run, "
                          "made once in a temporary folder)."},
    )  # fmt: skip
    steps: int = field(default=40, metadata={"help": "timed optimizer steps per measurement."})
    eval_limit: int = field(
        default=48, metadata={"help": "dev prompts of the tracking decode (the pipeline's 48)."}
    )
    rounds: int = field(default=3, metadata={"help": "idle / loaded alternations."})
    hogs: int = field(default=2, metadata={"help": "busy processes beside the loaded runs."})
    settings: list[str] = field(
        default_factory=lambda: ["before", "after"],
        metadata={"help": "OpenMP environments to compare: before | after | "
                          "NAME:VAR=VALUE,VAR=VALUE."},
    )  # fmt: skip
    output: str | None = field(default=None, metadata={"help": "also write the JSON here."})


def setting_env(setting: str, model: str) -> tuple[str, dict[str, str]]:
    """(name, OpenMP variables) of a ``--settings`` entry."""
    from r2sft.threads import cpu_thread_env

    if setting == "before":
        return setting, {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    if setting == "after":
        return setting, cpu_thread_env(model, environ={})
    name, _, assignments = setting.partition(":")
    values = dict(item.split("=", 1) for item in assignments.split(",") if item)
    unknown = sorted(set(values) - set(OPENMP_VARIABLES))
    if not name or unknown:
        raise ValueError(
            f"--settings entry {setting!r}: expected before, after or NAME:VAR=VALUE,... with "
            f"VAR among {', '.join(OPENMP_VARIABLES)}."
        )
    return name, values


def make_data(model: str, folder: Path) -> str:
    """A small collect run (64 arith prompts, 2 candidates) to train on."""
    from r2sft.collect import CollectConfig, run_collect

    run_collect(
        CollectConfig(model=model, num_prompts=64, num_candidates=2, output_dir=str(folder))
    )
    return str(folder)


def worker(model: str, data_dir: str, steps: int, eval_limit: int) -> dict[str, Any]:
    """One measurement in this process: train ``steps`` timed steps, then the tracking decode
    at the final save (its wall time from the tracked record)."""
    import torch
    from transformers import TrainerCallback

    from r2sft.training import TrainConfig
    from r2sft.training.run import train
    from r2sft.training.tracking import read_metrics

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    total = WARMUP_STEPS + steps
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model=model, data_dir=data_dir, output_dir=out, max_steps=total, save_steps=total,
            eval_limit=eval_limit, eval_before_training=False, report_to="none",
            logging_steps=10_000, disable_tqdm=True, save_only_model=True,
        )  # fmt: skip
        timer = StepTimer()
        train(config, callbacks=[timer])
        record = read_metrics(out)[-1]
    timed = timer.times[WARMUP_STEPS - 1 :]
    return {
        "steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]),
        "decode_s": record["wall_seconds"],
        "torch_threads": torch.get_num_threads(),
    }


def measure(env: dict[str, str], args: BenchSharedCpuArgs, data_dir: str) -> dict[str, Any]:
    """Run :func:`worker` in a fresh process with the OpenMP variables ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    command = [sys.executable, __file__, "--worker", args.model, data_dir, str(args.steps),
               str(args.eval_limit)]  # fmt: skip
    done = subprocess.run(
        command, env={**base, **env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"worker failed ({env}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Medians per (setting, load) and the loaded / idle ratios, per round and of medians."""
    summary: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for key in ("steps_per_s", "decode_s"):
            by_load = {
                load: [r[key] for r in runs if r["setting"] == name and r["load"] == load]
                for load in ("idle", "loaded")
            }
            idle, loaded = (statistics.median(by_load[load]) for load in ("idle", "loaded"))
            entry[key] = {"idle": idle, "loaded": loaded, "loaded_over_idle": loaded / idle}
        entry["rounds_loaded_over_idle_steps_per_s"] = [
            loaded["steps_per_s"] / idle["steps_per_s"]
            for idle, loaded in zip(
                (r for r in runs if r["setting"] == name and r["load"] == "idle"),
                (r for r in runs if r["setting"] == name and r["load"] == "loaded"),
                strict=True,
            )
        ]
        summary[name] = entry
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from r2sft.config import parse_config

    args = parse_config(
        BenchSharedCpuArgs, args=argv, command="python bench/bench_shared_cpu.py", summary=__doc__
    )
    settings = [setting_env(setting, args.model) for setting in args.settings]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or make_data(args.model, Path(scratch) / "collect")
        load_before = os.getloadavg()
        for round_index in range(args.rounds):
            loads = ("idle", "loaded") if round_index % 2 == 0 else ("loaded", "idle")
            for load in loads:
                hogs = start_hogs(args.hogs) if load == "loaded" else []
                try:
                    for name, env in settings:
                        result = measure(env, args, data_dir)
                        runs.append({"round": round_index, "load": load, "setting": name,
                                     "env": env, **result})  # fmt: skip
                        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
                finally:
                    stop_hogs(hogs)
    report = {
        "command": "python bench/bench_shared_cpu.py " + " ".join(argv or sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "hogs": args.hogs,
        "steps": args.steps,
        "eval_limit": args.eval_limit,
        "settings": dict(settings),
        # Other processes may share the machine: "idle" is the machine as it was.
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "summary": summarize(runs, [name for name, _ in settings]),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        model, data_dir, steps, eval_limit = sys.argv[2:6]
        print(json.dumps(worker(model, data_dir, int(steps), int(eval_limit))))
    else:
        main()
