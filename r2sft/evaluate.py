"""Decode a task's prompts with a dLLM and report accuracy, NFE and redundancy.

Launch::

    # embedded default: tiny LLaDA (data/tiny-llada) on the arith test split
    python -m r2sft.evaluate --decoder r2 --limit 100 --output outputs/eval_r2.json
    python -m r2sft.evaluate --decoder threshold --limit 100
    # LLaDA-8B-Instruct on local GSM8K, official R² settings, on a GPU
    python -m r2sft.evaluate --model GSAI-ML/LLaDA-8B-Instruct --task gsm8k \\
        --data_path data/gsm8k --split test --limit 200 --decoder r2 \\
        --batch_size 16 --dtype bfloat16 --device cuda --output gsm8k_r2.json
    # any rule option overrides the preset: --threshold 0.8 --tau_t 0.7 --temporal_agg ave
    python -m r2sft.evaluate --config my_eval.yaml --limit 20

This module is the command line only: the library function it calls,
:func:`r2sft.scoring.evaluate`, is what training's tracking, tune and report call too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2sft.config import option, parse_config
from r2sft.decoding import DecoderArgs
from r2sft.io import check_writable
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.scoring import evaluate
from r2sft.specs import default_device, load_model, require_model_download
from r2sft.tasks import TaskArgs


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


@dataclass
class EvaluateArgs(TaskArgs, DecoderArgs):
    """Command line of ``python -m r2sft.evaluate``: the task and decoder options shared
    with collect and training, plus what to evaluate and where to write it."""

    _argument_group_name = "model and data"  # --help heading of fields without a group

    model: str = field(default=str(EMBEDDED_MODEL_DIR), metadata=_help("model folder or Hub id."))
    split: str = field(default="test", metadata=_help("split of the task to evaluate."))
    limit: int | None = field(default=None, metadata=_help("first N examples (None: all)."))
    batch_size: int = field(default=16, metadata=_help("sequences per forward batch.", "decoding"))
    output: str | None = field(
        default=None,
        metadata=_help("JSON file for the metrics and per-example results.", "run and output"),
    )
    dtype: str = field(default="auto", metadata=_help("auto | bfloat16 | float32."))
    device: str | None = field(
        default=None, metadata=_help("e.g. cuda, cpu (None: cuda when available, else cpu).")
    )
    seed: int = field(default=0, metadata=_help("example i decodes with seed + i.", "decoding"))
    progress: bool = field(default=True, metadata=_help("show a progress bar.", "run and output"))

    def __post_init__(self) -> None:
        self.check_task_args()
        self.check_decoder_args()
        for name in ("limit", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value} must be >= 1.")
        if self.device is not None:
            import torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(
                    f"--device {self.device!r} is not a torch device; use cpu, cuda or cuda:N."
                ) from None


def _print_table(metrics: dict[str, Any]) -> None:
    keys = ["accuracy", "mean_nfe", "tokens_per_forward", "mean_r_s", "mean_r_t",
            "mean_r_total", "mean_r_total_per_token", "num_examples", "wall_seconds"]  # fmt: skip
    print(f"decoder: {json.dumps(metrics['decoder'], sort_keys=True)}")
    for key in keys:
        value = metrics[key]
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<24}{text:>12}")


def run(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluate ``args.model`` on ``args.task``; returns the metrics (and writes them)."""
    task = args.make_task()
    require_model_download(args.model)  # before the preset is read from the model's Hub repo
    decoder = args.resolve(task, model=args.model)
    if args.model == str(EMBEDDED_MODEL_DIR) and not EMBEDDED_MODEL_DIR.is_dir():
        raise FileNotFoundError(
            f"the embedded default model folder {EMBEDDED_MODEL_DIR} does not exist. Build it "
            "with `python launch/pretrain_embedded.py`, or pass --model."
        )
    if args.output:
        check_writable(Path(args.output), "--output")
    examples = task.load(args.split, limit=args.limit)
    loaded = load_model(args.model, dtype=args.dtype, device=default_device(args.device))
    metrics = evaluate(loaded, task, examples, decoder, batch_size=args.batch_size,
                       progress=args.progress, seed=args.seed)  # fmt: skip
    metrics = {"model": args.model, "task": args.task, "split": args.split, **metrics}
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_config(
        EvaluateArgs, args=argv, command="python -m r2sft.evaluate", summary=__doc__
    )
    metrics = run(args)
    _print_table(metrics)
    if args.output:
        print(f"wrote {args.output}")
    return metrics


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
