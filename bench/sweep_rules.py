"""Sweep the R² rule thresholds of a model on a tuning split against threshold decoding (JSON).

    OMP_NUM_THREADS=2 python bench/sweep_rules.py                       # embedded model, dev 200
    python bench/sweep_rules.py --taus 0.8,0.5,0.3 --temporal_ks 3,2 --limit 100
    python bench/sweep_rules.py --model GSAI-ML/LLaDA-8B-Instruct --task gsm8k \\
        --data_path data/gsm8k --split train --limit 200 --device cuda \\
        --dtype bfloat16 --gen_length 256 --block_length 32

The official R² values (tau_s = tau_t = 0.8, K = 3) were chosen for LLaDA-8B, which commits
~3 tokens per forward under threshold 0.9; a model that is already more confident leaves the
rules less to remove, and the same thresholds cut fewer forwards. This script measures, per
setting of (tau_s = tau_t, K), accuracy and mean NFE on a tuning split (not the test split),
next to plain threshold decoding with the same canvas, and names the setting with the lowest
NFE ratio whose accuracy is at most ``--max_accuracy_drop`` below threshold decoding's.
Pass its values as ``--tau_s / --tau_t / --temporal_k`` to ``r2sft.evaluate`` or
``collect.py``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass
from typing import Any

from r2sft.config import parse_config
from r2sft.decoding import DecoderArgs
from r2sft.evaluate import evaluate
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.specs import default_device, load_model
from r2sft.tasks import TaskArgs


@dataclass
class SweepArgs(TaskArgs, DecoderArgs):
    """The task and decoder options of every entry point (the decoder fields fix what the
    sweep does not vary, e.g. the canvas), plus the sweep grid."""

    model: str = str(EMBEDDED_MODEL_DIR)
    split: str = "dev"  # tune on a split you do not report
    limit: int | None = 200
    taus: str = "0.8,0.7,0.6,0.5,0.4,0.3"  # tau_s = tau_t values
    temporal_ks: str = "3,2"
    threshold: float | None = 0.9
    max_accuracy_drop: float = 0.01  # allowed accuracy loss vs threshold decoding
    batch_size: int = 32
    device: str | None = None  # default: cuda when available, else cpu
    dtype: str = "auto"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "mean_nfe", "tokens_per_forward", "mean_r_total", "wall_seconds")
    return {key: metrics[key] for key in keys}


def sweep(args: SweepArgs) -> dict[str, Any]:
    taus, ks = _floats(args.taus), [int(k) for k in _floats(args.temporal_ks)]
    if not taus or not ks:
        raise SystemExit("error: --taus and --temporal_ks need at least one value each.")
    loaded = load_model(args.model, dtype=args.dtype, device=default_device(args.device))
    task = args.make_task()
    examples = task.load(args.split, limit=args.limit)

    def run(name: str, **rules: Any) -> dict[str, Any]:
        decoder = dataclasses.replace(args, decoder=name).resolve(task, **rules)
        return evaluate(loaded, task, examples, decoder, batch_size=args.batch_size,
                        progress=False)  # fmt: skip

    baseline = _summary(run("threshold"))
    settings = []
    for tau in taus:
        for k in ks:
            metrics = _summary(run("r2", tau_s=tau, tau_t=tau, temporal_k=k))
            metrics.update(
                tau_s=tau,
                tau_t=tau,
                temporal_k=k,
                nfe_ratio=metrics["mean_nfe"] / baseline["mean_nfe"],
                accuracy_delta=metrics["accuracy"] - baseline["accuracy"],
            )
            settings.append(metrics)
    eligible = [s for s in settings if s["accuracy_delta"] >= -args.max_accuracy_drop - 1e-9]
    best = min(eligible, key=lambda s: (s["nfe_ratio"], -s["accuracy"]), default=None)
    return {
        "model": args.model,
        "task": args.task,
        "split": args.split,
        "num_examples": len(examples),
        "threshold": baseline,
        "r2": settings,
        "best": best,
        "max_accuracy_drop": args.max_accuracy_drop,
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    result = sweep(parse_config(SweepArgs, args=argv))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
