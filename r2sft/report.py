"""Before / after: a base and a fine-tuned model decoded on one split with the same decoders.

Launch::

    # what `bash launch/run.sh pipeline` ends with
    python -m r2sft.report --finetuned outputs/train/final --output outputs/pipeline_report.json
    # every lever apart: official values or the model's preset, with and without early exit
    python -m r2sft.report --finetuned outputs/train/final --levers true --limit 200

Writes (and prints) a JSON report::

    {"base": {"threshold": {"accuracy", "mean_nfe", ...}, "r2": {...}},
     "finetuned": {...same...},
     "finetuned_vs_base": {"threshold": {"mean_nfe_ratio", "accuracy_delta"}, "r2": {...}},
     "levers": {...}            # with --levers: each model under each decoder setting
     "decoders": {...}, "commands": [...], ...}

Both models decode with the same decoder options: ``--preset model`` (the default) reads each
model's ``r2sft_decoding.json``; train.py copies the base model's into ``final/``, so both
decode with the same values.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2sft.config import option, parse_config
from r2sft.decoding import DecoderArgs
from r2sft.paths import DEFAULT_TRAIN_DIR, EMBEDDED_MODEL_DIR, OUTPUTS_DIR
from r2sft.scoring import evaluate
from r2sft.specs import default_device, load_model, require_model_download
from r2sft.tasks import Task, TaskArgs

REPORTED_KEYS = ("accuracy", "mean_nfe", "tokens_per_forward", "mean_r_total", "num_examples")
# --levers: the decoder settings that take the levers apart, as DecoderArgs changes.
LEVERS = {
    "official": {"preset": "official", "early_exit": False},
    "official+early_exit": {"preset": "official", "early_exit": True},
    "preset": {"preset": "model"},
    "preset-early_exit": {"preset": "model", "early_exit": False},
}


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


@dataclass
class ReportArgs(TaskArgs):
    """Command line of ``python -m r2sft.report``."""

    _argument_group_name = "model and data"  # --help heading of fields without a group

    base: str = field(default=str(EMBEDDED_MODEL_DIR), metadata=_help("the base model."))
    finetuned: str = field(
        default=str(DEFAULT_TRAIN_DIR / "final"), metadata=_help("the fine-tuned model.")
    )
    split: str = field(default="test", metadata=_help("split to decode (the whole split)."))
    limit: int | None = field(default=None, metadata=_help("first N examples (None: all)."))
    decoders: str = field(
        default="threshold,r2", metadata=_help("decoders, comma-separated.", "decoding")
    )
    preset: str = field(
        default="model",
        metadata=_help("decoder settings of both models (see r2sft.evaluate).", "decoding"),
    )
    levers: bool = field(
        default=False,
        metadata=_help(
            "also decode with official values / the preset, early exit off / on.", "decoding"
        ),
    )
    output: str = field(
        default=str(OUTPUTS_DIR / "pipeline_report.json"),
        metadata=_help("JSON report path.", "run and output"),
    )
    commands: list[str] | None = field(
        default=None,
        metadata=_help("the commands that made the models (recorded as given).", "run and output"),
    )
    batch_size: int = field(default=32, metadata=_help("sequences per forward batch.", "decoding"))
    dtype: str = field(default="auto", metadata=_help("auto | bfloat16 | float32."))
    device: str | None = field(default=None, metadata=_help("e.g. cuda (None: CPU / CUDA)."))

    def __post_init__(self) -> None:
        self.check_task_args()
        names = self.decoder_names()
        if not names:
            raise ValueError("--decoders needs at least one decoder.")
        for name in names:
            DecoderArgs(decoder=name, preset=self.preset)  # checks the name and the preset
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit} must be >= 1.")

    def decoder_names(self) -> list[str]:
        return [name.strip() for name in self.decoders.split(",") if name.strip()]


def measure_model(
    model: str,
    task: Task,
    examples: list[Any],
    settings: dict[str, DecoderArgs],
    batch_size: int = 32,
    dtype: str = "auto",
    device: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Load ``model`` once and decode ``examples`` with each of ``settings`` (label ->
    decoder options, resolved against this model's preset): label -> metrics and decoder."""
    from tqdm.auto import tqdm

    # Every setting resolved (presets read, values checked) before the model loads.
    require_model_download(model)
    decoders = {label: options.resolve(task, model=model) for label, options in settings.items()}
    loaded = load_model(model, dtype=dtype, device=default_device(device))
    results = {}
    # One bar over (setting, problem): with --levers a report decodes 10 settings per model.
    total = len(settings) * len(examples)
    with tqdm(total=total, desc=f"measure {Path(model).name}", unit="problem") as bar:
        for label, decoder in decoders.items():
            bar.set_postfix_str(label)
            metrics = evaluate(loaded, task, examples, decoder, batch_size=batch_size,
                               on_batch=bar.update)  # fmt: skip
            results[label] = {key: metrics[key] for key in REPORTED_KEYS}
            results[label]["decoder"] = metrics["decoder"]
    return results


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per decoder: the fine-tuned model's mean NFE over the base's, and the accuracy change."""
    return {
        name: {
            "mean_nfe_ratio": after[name]["mean_nfe"] / before[name]["mean_nfe"],
            "accuracy_delta": after[name]["accuracy"] - before[name]["accuracy"],
        }
        for name in before
        if name in after
    }


def report(args: ReportArgs) -> dict[str, Any]:
    """Decode both models on the split; returns (and writes) the report."""
    start = time.perf_counter()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)  # an unwritable path fails now
    task = args.make_task()
    examples = task.load(args.split, limit=args.limit)
    if not examples:
        raise ValueError(f"task {args.task!r} split {args.split!r} has no examples.")
    main = {name: DecoderArgs(decoder=name, preset=args.preset) for name in args.decoder_names()}
    levers = {
        f"{name}/{lever}": DecoderArgs(decoder=name, **changes)
        for name in args.decoder_names()
        for lever, changes in LEVERS.items()
    }
    measured = {}
    for role, model in (("base", args.base), ("finetuned", args.finetuned)):
        settings = {**main, **(levers if args.levers else {})}
        measured[role] = measure_model(model, task, examples, settings, args.batch_size,
                                       args.dtype, args.device)  # fmt: skip
    result: dict[str, Any] = {
        "task": args.task,
        "split": args.split,
        "num_examples": len(examples),
        "models": {"base": args.base, "finetuned": args.finetuned},
        "preset": args.preset,
    }
    for role in ("base", "finetuned"):
        result[role] = {name: measured[role][name] for name in main}
    result["finetuned_vs_base"] = compare(result["base"], result["finetuned"])
    if args.levers:
        result["levers"] = {
            role: {label: measured[role][label] for label in levers} for role in measured
        }
        result["levers_finetuned_vs_base"] = compare(
            result["levers"]["base"], result["levers"]["finetuned"]
        )
    result["commands"] = list(args.commands or [])
    result["wall_seconds"] = time.perf_counter() - start
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_config(ReportArgs, args=argv, command="python -m r2sft.report", summary=__doc__)
    result = report(args)
    for role in ("base", "finetuned"):
        for name, metrics in result[role].items():
            print(f"{role:<10} {name:<10} accuracy {metrics['accuracy']:.4f}  "
                  f"mean NFE {metrics['mean_nfe']:.3f}")  # fmt: skip
    for name, change in result["finetuned_vs_base"].items():
        print(f"finetuned / base, {name}: mean NFE x{change['mean_nfe_ratio']:.3f}, "
              f"accuracy {change['accuracy_delta']:+.4f}")  # fmt: skip
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
