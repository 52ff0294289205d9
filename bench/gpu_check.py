"""One GPU check: every GPU measurement of the project in one run, into one JSON file.

    PYTHONPATH=$PWD python bench/gpu_check.py --output gpu_check.json     # a GPU, <= 6 min
    python bench/gpu_check.py --tiny --output /tmp/gpu_check.json         # CPU, tiny sizes
    python bench/gpu_check.py --modes dual,dual+cache_refresh=8          # bench_scale's modes

Sections, in order, each with a time budget (a section that fails records its error and the
check goes on; past the global ``--deadline_s`` the remaining sections are skipped with a
note; progress lines with the elapsed time go to stderr; the JSON is rewritten after every
section, so a killed run still leaves what it measured):

- ``versions``: python, torch, transformers, accelerate, peft, deepspeed, datasets,
  math-verify, pyarrow..., CUDA, the device; ``missing`` names every package that is not
  installed and what needs it.
- ``ceilings``: bf16 matmul TFLOP/s on random 8192^3 data and device-to-device copy GB/s
  (``ceilings.py``).
- ``bench_scale``: ``bench_scale.py`` at the 8B shape: forward parity against transformers'
  Llama, decode rows at batch 1 / 8 / 32 for ``--modes`` (block-opening share, roofline
  fraction), the LoRA step's steady state.
- ``embedded_cuda_vs_cpu``: the embedded model's ``r2sft.evaluate`` (r2 decoder, a fixed
  ``--limit``), ``accelerate launch collect.py`` (a few prompts) and
  ``train.py`` (a few steps on that collect's CPU output) run on CUDA and on the CPU
  (``CUDA_VISIBLE_DEVICES=``): both figures and whether they are equal.
- ``startup``: where a short collect's wall time goes, from the CUDA collect above: each
  interpreter's import time (the launcher's and collect's), the start of collection, the
  decode, the summary line, the process exit; and the CUDA initialisation.
- ``lora_train_bf16``: ``accelerate launch train.py --lora true --bf16 true`` on the
  embedded model for a few steps: exit status, steps/s, losses.
- ``deepspeed_zero2``: the same under ``launch/accelerate/zero2.yaml`` when deepspeed
  imports; else a "skipped: not installed" note.

``--tiny`` runs the same sections at tiny sizes on the CPU (the CUDA half of the comparison
is skipped with a note; training in fp32, as bf16 is a GPU check).
"""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # the deadline counts torch's import (seconds on a cold disk)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# What needs each optional package; the device machine lacks some (the lead carries wheels).
PACKAGES = {
    "torch": "everything", "transformers": "everything", "accelerate": "collect, train",
    "peft": "LoRA", "datasets": "collect's output and train's input",
    "math-verify": "math answer checking", "pyarrow": "collect's shards",
    "safetensors": "model loading", "tokenizers": "the tokenizer",
    "huggingface_hub": "model loading", "deepspeed": "the ZeRO-2 section",
}  # fmt: skip


@dataclass
class GpuCheckArgs:
    tiny: bool = field(default=False, metadata={"help": "tiny sizes on the CPU (the tests)"})
    output: str | None = field(default=None, metadata={"help": "the JSON file to write"})
    deadline_s: float | None = field(
        default=None, metadata={"help": "seconds for the whole check (default 345; 480 tiny)"}
    )
    modes: str | None = field(
        default=None,
        metadata={
            "help": "bench_scale's --modes (default: GPU_MODES on a GPU; its own with --tiny)"
        },
    )
    sections: str | None = field(
        default=None, metadata={"help": "comma-separated sections to run (default: all)"}
    )
    keep: bool = field(default=False, metadata={"help": "keep the work folder (outputs, logs)"})


@dataclass
class Sizes:
    """What each section runs, per mode (GPU, --tiny)."""

    budgets: dict[str, float]
    eval_limit: int
    train_eval_limit: int  # the tracked decode at the end of the short training
    collect_prompts: int
    train_steps: int
    lora_steps: int
    row_budget_s: float


# The decoders the GPU run times at batch 1 and 32 (random 8B-shaped weights, scripted
# commits): the refresh the embedded model needs (the old default), the plain dual cache
# (the default now), compiled, suffix-pruned with cheaper block openings, and all together.
GPU_MODES = ("dual:16,dual,dual+compile=true,dual+suffix_window=32+cache_reuse=4,"
             "dual+suffix_window=32+cache_reuse=4+compile=true")  # fmt: skip
GPU_DECODE_BATCHES = "1,32"

GPU_SIZES = Sizes(
    budgets={"versions": 10, "ceilings": 15, "bench_scale": 200, "embedded_cuda_vs_cpu": 100,
             "startup": 5, "lora_train_bf16": 40, "deepspeed_zero2": 50},
    eval_limit=100, train_eval_limit=32, collect_prompts=64, train_steps=10, lora_steps=30,
    row_budget_s=30,
)  # fmt: skip
TINY_SIZES = Sizes(
    budgets={"versions": 10, "ceilings": 10, "bench_scale": 120, "embedded_cuda_vs_cpu": 150,
             "startup": 5, "lora_train_bf16": 90, "deepspeed_zero2": 120},
    eval_limit=4, train_eval_limit=4, collect_prompts=4, train_steps=2, lora_steps=2,
    row_budget_s=10,
)  # fmt: skip


class Check:
    """The run: its clock, its work folder, its report (written after every section)."""

    def __init__(self, args: GpuCheckArgs) -> None:
        self.args = args
        self.tiny = args.tiny
        self.sizes = TINY_SIZES if args.tiny else GPU_SIZES
        self.cuda = torch.cuda.is_available() and not args.tiny
        self.device = "cuda" if self.cuda else "cpu"
        deadline = args.deadline_s if args.deadline_s is not None else (480 if args.tiny else 345)
        self.deadline = STARTED + deadline
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.collected: Path | None = None  # a collect output the training sections use
        self.collect_timeline: dict[str, Any] | None = None
        self.report: dict[str, Any] = {
            "gpu_check": {
                "tiny": args.tiny,
                "device": self.device,
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "deadline_s": deadline,
                "work_folder": str(self.work) if args.keep else None,
                "sections": {},
            }
        }

    def elapsed(self) -> float:
        return time.perf_counter() - STARTED

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def log(self, message: str) -> None:
        print(f"[gpu_check +{self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)

    def write(self) -> None:
        self.report["gpu_check"]["seconds"] = self.elapsed()
        if self.args.output:
            path = Path(self.args.output)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(json.dumps(self.report, indent=2, default=str))
            temporary.replace(path)

    def run_section(self, name: str, body: Callable[[float], dict[str, Any]]) -> None:
        """``body(budget_s)`` into ``report[name]`` with its status and seconds."""
        wanted = self.args.sections
        if wanted and name not in [item.strip() for item in wanted.split(",")]:
            result = {"status": "skipped", "note": "not in --sections"}
        elif self.left() <= 5:
            result = {"status": "skipped", "note": "the global deadline was reached first"}
        else:
            budget = min(self.sizes.budgets[name], self.left() - 5)
            self.log(f"{name}: start (budget {budget:.0f} s)")
            start = time.perf_counter()
            try:
                result = {"status": "ok", **body(budget)}
            except Exception as error:  # noqa: BLE001 - a failing section must not stop the rest
                traceback.print_exc()
                result = {"status": "error", "error": f"{type(error).__name__}: {error}"[:3000]}
            result["seconds"] = time.perf_counter() - start
            if self.cuda:
                gc.collect()
                torch.cuda.empty_cache()
        self.report[name] = result
        self.report["gpu_check"]["sections"][name] = result["status"]
        self.log(f"{name}: {result['status']}"
                 + (f" ({result.get('error') or result.get('note')})"
                    if result["status"] != "ok" else ""))  # fmt: skip
        self.write()

    # ------------------------------------------------------------------ subprocesses

    def command(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
                label: str = "") -> dict[str, Any]:  # fmt: skip
        """Run ``argv`` from the repository root (its own process group, killed on timeout);
        returns the exit status, seconds, timestamped output lines and the output's tail."""
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [environment.get("PYTHONPATH")])]
        )
        timeout = max(min(timeout, self.left() - 3), 1.0)
        self.log(f"  run {label or argv[-1]} (timeout {timeout:.0f} s)")
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        lines: list[tuple[float, str]] = []
        pending = b""
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        timed_out = False
        while True:
            if time.perf_counter() - start > timeout:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                break
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            now = time.perf_counter() - start
            lines.extend((now, line.decode(errors="replace")) for line in complete if line.strip())
        try:  # the output closed: the process is exiting (or it was killed)
            returncode = process.wait(timeout=max(timeout - (time.perf_counter() - start), 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
        seconds = time.perf_counter() - start
        selector.close()
        process.stdout.close()
        if pending.strip():
            lines.append((seconds, pending.decode(errors="replace")))
        self.log(f"  {label or argv[-1]}: exit {returncode} after {seconds:.1f} s"
                 + (" (timed out)" if timed_out else ""))  # fmt: skip
        tail = "\n".join(line for _, line in lines[-40:])[-4000:]
        return {"returncode": returncode, "seconds": seconds, "timed_out": timed_out,
                "lines": lines, "output_tail": tail}  # fmt: skip

    def launch(self, *extra: str) -> list[str]:
        """``accelerate launch`` (as a module: no console script needed), one process."""
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                *extra]  # fmt: skip


def _failed(result: dict[str, Any], what: str) -> RuntimeError:
    reason = "timed out" if result["timed_out"] else f"exit status {result['returncode']}"
    return RuntimeError(f"{what}: {reason}; output tail:\n{result['output_tail']}")


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in ("returncode", "seconds", "timed_out")}


# ---------------------------------------------------------------------------- sections


def versions(check: Check, budget: float) -> dict[str, Any]:
    found, missing = {}, {}
    for name, needed_by in PACKAGES.items():
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
            missing[name] = f"not installed: {needed_by} needs it (pip install {name})"
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": found,
        "missing": missing,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        start = time.perf_counter()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        result["cuda_init_s"] = time.perf_counter() - start
        result["device_name"] = torch.cuda.get_device_name()
        result["device_count"] = torch.cuda.device_count()
        result["device_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        result["cudnn"] = torch.backends.cudnn.version()
    if missing:
        check.log("  MISSING: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    return result


def ceilings_section(check: Check, budget: float) -> dict[str, Any]:
    from ceilings import ceilings

    return ceilings(check.device, check.tiny)


def bench_scale_section(check: Check, budget: float) -> dict[str, Any]:
    import bench_scale

    from r2sft.config import parse_config

    argv = ["--repeats", "1", "--row_budget_s", str(check.sizes.row_budget_s),
            "--deadline_s", str(max(budget - 10, 1))]  # fmt: skip
    if check.tiny:
        argv += ["--tiny", "--device", "cpu"]
    else:
        argv += ["--batch_sizes", GPU_DECODE_BATCHES]
    if check.args.modes or not check.tiny:
        argv += ["--modes", check.args.modes or GPU_MODES]
    args = parse_config(bench_scale.BenchScaleArgs, args=argv)
    report = bench_scale.run(args)
    failed = [name for name in ("ceiling", "forward_parity", "decode", "lora_step")
              if isinstance(report.get(name), dict) and "error" in report[name]]  # fmt: skip
    report["failed_parts"] = failed
    return report


def _evaluate(check: Check, device: str, timeout: float) -> dict[str, Any]:
    output = check.work / f"evaluate_{device}.json"
    argv = [sys.executable, "-m", "r2sft.evaluate", "--decoder", "r2", "--progress", "false",
            "--limit", str(check.sizes.eval_limit), "--output", str(output)]  # fmt: skip
    result = check.command(argv, timeout, _device_env(check, device), f"evaluate on {device}")
    if result["returncode"] != 0:
        raise _failed(result, f"r2sft.evaluate on {device}")
    metrics = json.loads(output.read_text())
    keys = ("accuracy", "mean_nfe", "mean_r_total", "num_examples", "wall_seconds")
    return {**{key: metrics[key] for key in keys}, **_brief(result)}


def _collect(check: Check, device: str, timeout: float) -> dict[str, Any]:
    """``accelerate launch collect.py`` (as the issue ran it) with the import times of both
    interpreters (``PYTHONPROFILEIMPORTTIME``) and the timeline of its output."""
    folder = check.work / f"collect_{device}"
    argv = [*check.launch(), "collect.py", "--num_prompts", str(check.sizes.collect_prompts),
            "--output_dir", str(folder)]  # fmt: skip
    env = {**_device_env(check, device), "PYTHONPROFILEIMPORTTIME": "1"}
    result = check.command(argv, timeout, env, f"collect on {device}")
    imports = import_times([line for _, line in result["lines"]])
    result["lines"] = [(t, line) for t, line in result["lines"]
                       if not line.startswith("import time:")]  # fmt: skip
    result["output_tail"] = "\n".join(line for _, line in result["lines"][-40:])[-4000:]
    if result["returncode"] != 0:
        raise _failed(result, f"collect.py on {device}")
    summary = json.loads((folder / "summary.json").read_text())
    figures = {key: summary[key] for key in ("prompts", "candidates", "candidate_accuracy",
                                             "prompts_with_correct", "selected")}  # fmt: skip
    figures["selected_mean_nfe"] = summary["stats"]["selected"].get("mean_nfe")
    for label, made in summary.get("per_decoder", {}).items():
        figures[f"{label}_accuracy"] = made["accuracy"]
        figures[f"{label}_correct_mean_nfe"] = made["all_correct"].get("mean_nfe")
    start = _first(result["lines"], "to do over")
    printed = _first(result["lines"], '"selected_vs_all_correct"')
    figures["timeline"] = {
        "imports_per_process": imports,
        "collect_started_s": start,  # after imports, accelerator, task and model load
        "load_decode_score_s": summary["wall_seconds"],
        "decode_s": summary["decode_seconds"],
        "summary_printed_s": printed,
        "exit_s": result["seconds"],
        "exit_after_summary_s": None if printed is None else result["seconds"] - printed,
    }
    if device == "cpu" or check.collected is None:
        check.collected = folder
    return {**figures, **_brief(result)}


def _first(lines: list[tuple[float, str]], text: str) -> float | None:
    return next((t for t, line in lines if text in line), None)


IMPORT_WATCH = ("accelerate", "torch", "transformers", "peft", "datasets", "r2sft", "scipy",
                "sympy", "pandas")  # fmt: skip


def import_times(lines: list[str]) -> list[dict[str, Any]]:
    """Per interpreter of a ``PYTHONPROFILEIMPORTTIME`` output (each prints the header line
    first): the seconds of all its imports, and of the packages in ``IMPORT_WATCH`` (each
    cumulative, so a package imported by another is inside that one's time too)."""
    processes: list[dict[str, Any]] = []
    for line in lines:
        if not line.startswith("import time:"):
            continue
        if "cumulative" in line:  # the header: a new interpreter
            processes.append({"total_s": 0.0, "packages_s": {}})
            continue
        if not processes:
            processes.append({"total_s": 0.0, "packages_s": {}})
        _, cumulative, name = line.split("|", 2)
        seconds = int(cumulative) / 1e6
        if not name.startswith("  "):  # top level: nested ones are in its cumulative time
            processes[-1]["total_s"] += seconds
        name = name.strip()
        if name in IMPORT_WATCH:
            processes[-1]["packages_s"].setdefault(name, seconds)
    return processes


def _train(check: Check, device: str, timeout: float) -> dict[str, Any]:
    if check.collected is None:
        raise RuntimeError("no collected data: the collect runs above failed")
    folder = check.work / f"train_{device}"
    steps = check.sizes.train_steps
    argv = [sys.executable, "train.py", "--data_dir", str(check.collected), "--output_dir",
            str(folder), "--max_steps", str(steps), "--save_steps", str(steps),
            "--logging_steps", "1", "--eval_limit", str(check.sizes.train_eval_limit),
            "--eval_before_training", "false", "--report_to", "none"]  # fmt: skip
    result = check.command(argv, timeout, _device_env(check, device), f"train on {device}")
    if result["returncode"] != 0:
        raise _failed(result, f"train.py on {device}")
    figures = _train_figures(folder, steps, result)
    tracked = json.loads((folder / f"checkpoint-{steps}" / "r2sft_metrics.json").read_text())
    figures["tracked"] = {key: tracked.get(key) for key in ("accuracy", "mean_nfe")}
    return figures


def _train_figures(folder: Path, steps: int, result: dict[str, Any]) -> dict[str, Any]:
    """The logged losses, the Trainer's own steps/s (first step and saving included) and
    the steady steps/s between the first and the last loss line (``--logging_steps 1``)."""
    state = json.loads((folder / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    output = "\n".join(line for _, line in result["lines"])
    rate = re.findall(r"train_steps_per_second['\"]?\s*[:=]\s*['\"]?([0-9.]+)", output)
    logged = [t for t, line in result["lines"] if re.match(r"\{'loss'", line.strip())]
    # Lines are stamped when read: None when they came in one read (a loaded machine).
    span = logged[-1] - logged[0] if len(logged) > 1 else 0.0
    steady = (len(logged) - 1) / span if span > 0 else None
    return {"losses": losses, "steps": steps, "steps_per_s": steady,
            "trainer_steps_per_s": float(rate[-1]) if rate else None,
            **_brief(result)}  # fmt: skip


def _device_env(check: Check, device: str) -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
    if check.tiny:  # tiny models gain nothing from threads, and a busy CPU makes them wait
        env["OMP_NUM_THREADS"] = "1"
    return env


# Figures that must agree between the devices. Collect's sampled candidates draw their
# Gumbel noise from the device's own generator (CUDA and CPU streams differ by design), so
# only its greedy candidates are compared; training compares the tracked decode of the
# trained model, and its losses within MAX_LOSS_REL_DIFF.
COMPARED = {
    "evaluate": ("accuracy", "mean_nfe", "mean_r_total"),
    "collect": ("greedy_accuracy", "greedy_correct_mean_nfe"),
    "train": ("tracked",),
}
MAX_LOSS_REL_DIFF = 1e-3


def cuda_vs_cpu(check: Check, budget: float) -> dict[str, Any]:
    """evaluate / collect / train on both devices; equal figures and both numbers."""
    stop = time.perf_counter() + budget
    devices = ["cuda", "cpu"] if check.cuda else ["cpu"]
    result: dict[str, Any] = {"eval_limit": check.sizes.eval_limit,
                              "collect_prompts": check.sizes.collect_prompts,
                              "train_steps": check.sizes.train_steps}  # fmt: skip
    if not check.cuda:
        result["note"] = "--tiny: the CUDA half is skipped, the CPU half runs as on a GPU machine"
    runners = {"evaluate": _evaluate, "collect": _collect, "train": _train}
    for name, run_one in runners.items():
        figures: dict[str, Any] = {}
        for device in devices:
            left = stop - time.perf_counter()
            if left <= 2:
                figures[device] = {"skipped": "the section's budget was spent"}
                continue
            try:
                figures[device] = run_one(check, device, left)
            except Exception as error:  # noqa: BLE001 - the other runs still compare
                figures[device] = {"error": str(error)[:3000]}
        if len(devices) == 2 and all("returncode" in figures[device] for device in devices):
            figures.update(_compare(name, figures["cuda"], figures["cpu"]))
        if not check.cuda:
            figures["cuda"] = {"skipped": "--tiny runs on the CPU only"}
        result[name] = figures
        if name == "collect":
            check.collect_timeline = figures[devices[0]].get("timeline")
    errors = [f"{name} on {device}" for name in runners for device in devices
              if "error" in result[name][device]]  # fmt: skip
    if errors:
        result["failed_runs"] = errors
    return result


def _compare(name: str, cuda: dict[str, Any], cpu: dict[str, Any]) -> dict[str, Any]:
    keys = COMPARED[name]
    equal = all(cuda.get(key) == cpu.get(key) for key in keys)
    compared: dict[str, Any] = {"compared": list(keys)}
    if name == "train":
        pairs = list(zip(cuda["losses"], cpu["losses"], strict=False))
        worst = max((abs(a - b) / max(abs(b), 1e-12) for a, b in pairs), default=None)
        compared["max_loss_rel_diff"] = worst
        equal = equal and worst is not None and worst <= MAX_LOSS_REL_DIFF
    compared["equal"] = equal
    return compared


def startup(check: Check, budget: float) -> dict[str, Any]:
    """Where a short collect's wall time goes, from the CUDA (else CPU) collect run above:
    each interpreter's imports, the start of collection, the decode, the summary, the exit;
    and this process's CUDA initialisation."""
    if check.collect_timeline is None:
        raise RuntimeError("needs the embedded_cuda_vs_cpu section's collect run")
    return {"collect_device": check.device, "collect": check.collect_timeline,
            "cuda_init_s": check.report.get("versions", {}).get("cuda_init_s")}  # fmt: skip


def _short_training(check: Check, budget: float, launch: list[str], name: str) -> dict[str, Any]:
    if check.collected is None:
        raise RuntimeError("no collected data (the embedded_cuda_vs_cpu section's collect "
                           "did not produce one)")  # fmt: skip
    folder = check.work / name
    steps = check.sizes.lora_steps
    argv = [*launch, "train.py", "--data_dir", str(check.collected), "--output_dir", str(folder),
            "--lora", "true", "--bf16", str(check.cuda).lower(), "--max_steps", str(steps),
            "--save_steps", str(steps), "--logging_steps", "1", "--eval_limit", "0",
            "--report_to", "none"]  # fmt: skip
    result = check.command(argv, budget, _device_env(check, check.device), name)
    if result["returncode"] != 0:
        raise _failed(result, name)
    figures = {"bf16": check.cuda, **_train_figures(folder, steps, result)}
    figures["final_exported"] = (folder / "final").is_dir()
    figures["nccl_destroy_warning"] = any("destroy_process_group" in line
                                          for _, line in result["lines"])  # fmt: skip
    return figures


def lora_train_bf16(check: Check, budget: float) -> dict[str, Any]:
    return _short_training(check, budget, check.launch(), "lora_train_bf16")


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def deepspeed_zero2(check: Check, budget: float) -> dict[str, Any]:
    if not deepspeed_installed():
        return {"status": "skipped", "note": "not installed (pip install deepspeed)"}
    config = str(REPO / "launch" / "accelerate" / "zero2.yaml")
    return _short_training(check, budget, check.launch("--config_file", config),
                           "deepspeed_zero2")  # fmt: skip


# Each section: what it runs, and the packages it cannot run without (a missing one makes
# it an error that names the package before anything starts).
_PIPELINE = ("datasets", "math-verify", "accelerate")  # the arith task checks with math-verify
SECTIONS: dict[str, tuple[Callable[[Check, float], dict[str, Any]], tuple[str, ...]]] = {
    "versions": (versions, ()),
    "ceilings": (ceilings_section, ()),
    "bench_scale": (bench_scale_section, ("transformers", "peft")),
    "embedded_cuda_vs_cpu": (cuda_vs_cpu, _PIPELINE),
    "startup": (startup, ()),
    "lora_train_bf16": (lora_train_bf16, (*_PIPELINE, "peft")),
    "deepspeed_zero2": (deepspeed_zero2, (*_PIPELINE, "peft")),
}


def missing_packages(names: tuple[str, ...]) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _section_body(check: Check, name: str) -> Callable[[float], dict[str, Any]]:
    body, requires = SECTIONS[name]

    def run_body(budget: float) -> dict[str, Any]:
        missing = missing_packages(requires)
        if missing:
            raise ModuleNotFoundError(f"{name} needs {', '.join(missing)}, not installed here "
                                      f"(pip install {' '.join(missing)})")  # fmt: skip
        return body(check, budget)

    return run_body


def run(args: GpuCheckArgs) -> dict[str, Any]:
    if not args.tiny and not torch.cuda.is_available():
        raise ValueError("gpu_check: no CUDA device here; run it on a GPU machine, or with "
                         "--tiny for the same sections at tiny sizes on the CPU.")  # fmt: skip
    if args.sections:
        unknown = sorted(set(item.strip() for item in args.sections.split(",")) - set(SECTIONS))
        if unknown:
            raise ValueError(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    if args.modes:  # a bad mode fails now, not minutes into the check
        from bench_scale import BenchScaleArgs

        modes = BenchScaleArgs(tiny=args.tiny, modes=args.modes)
        modes.resolve()
        modes.decode_configs()
    check = Check(args)
    check.log(f"device {check.device}, deadline {check.left():.0f} s, work folder {check.work}")
    try:
        for name in SECTIONS:
            check.run_section(name, _section_body(check, name))
    finally:
        check.write()
        if not args.keep:
            shutil.rmtree(check.work, ignore_errors=True)
    statuses = check.report["gpu_check"]["sections"]
    check.log("done: " + ", ".join(f"{name} {status}" for name, status in statuses.items()))
    return check.report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from r2sft.config import parse_config

    return run(parse_config(GpuCheckArgs, args=argv))


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
