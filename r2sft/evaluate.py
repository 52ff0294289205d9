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

The library function :func:`evaluate` is what training calls at every checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from r2sft.config import option
from r2sft.decoding import DecoderArgs, DecoderConfig, RedundancyConfig
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.scoring import cost_summary, decode_and_score, model_max_length, prepare_prompts
from r2sft.specs import LoadedModel
from r2sft.tasks import Example, Task, TaskArgs


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


def evaluate(
    loaded: LoadedModel,
    task: Task,
    examples: list[Example],
    decoder: DecoderConfig,
    batch_size: int = 16,
    progress: bool = True,
    redundancy_config: RedundancyConfig | None = None,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode ``examples`` with ``decoder`` and score them (``r2sft.scoring``).

    Every prompt is checked first (empty, prompt + canvas beyond the model's positions:
    an error before any decoding). Example ``i`` uses seed ``seed + i``. ``on_batch``
    (called with each batch's size) replaces the progress bar, for callers with their own.

    Returns a JSON-ready dict: ``accuracy``, ``mean_nfe``, ``tokens_per_forward``
    (generated canvas positions per forward), ``mean_r_s``, ``mean_r_t``, ``mean_r_total``,
    ``mean_r_total_per_token``, ``mean_response_tokens``, ``num_examples``,
    ``wall_seconds``, ``decoder`` and ``redundancy`` (the configs as dicts) and
    ``per_example`` (id, correct, nfe, r_s, r_t, r_total, response).
    """
    if not examples:
        raise ValueError("evaluate() got no examples; check the task split and --limit.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    redundancy_config = redundancy_config or RedundancyConfig()
    start = time.perf_counter()
    items, _ = prepare_prompts(
        task, examples, loaded.tokenizer, decoder.gen_length, model_max_length(loaded.model)
    )
    own_bar = progress and on_batch is None
    with tqdm(total=len(items), desc=f"decode {decoder.name}", disable=not own_bar) as bar:
        rows = decode_and_score(
            loaded.model, loaded.spec, loaded.tokenizer, task, items, decoder,
            seeds=[seed + i for i in range(len(items))], batch_size=batch_size,
            redundancy_config=redundancy_config, on_batch=on_batch or bar.update,
        )  # fmt: skip
    return {
        "accuracy": sum(row["correct"] for row in rows) / len(rows),
        **cost_summary(rows, decoder.gen_length),
        "wall_seconds": time.perf_counter() - start,
        "decoder": {**decoder.to_dict(), "record_trace": True},
        "redundancy": redundancy_config.to_dict(),
        "per_example": [
            {
                "id": item.example.id,
                "correct": row["correct"],
                "nfe": row["nfe"],
                "r_s": row["r_s"],
                "r_t": row["r_t"],
                "r_total": row["r_total"],
                "response": row["response"],
            }
            for item, row in zip(items, rows, strict=True)
        ],  # fmt: skip
    }


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


def check_writable(path: Path, flag: str) -> None:
    """Fail now, not after a long evaluation, when ``path`` cannot be written (a file left
    in place is unchanged; a new one is removed again)."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as error:
        raise OSError(f"{flag} {path} cannot be written ({error}); choose another path.") from None
    if not existed:
        path.unlink()


def run(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluate ``args.model`` on ``args.task``; returns the metrics (and writes them)."""
    from r2sft.specs import default_device, load_model, require_model_download

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
    from r2sft.config import parse_config

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
