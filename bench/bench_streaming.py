"""Streaming-dLLM on a real model: accuracy, mean NFE and decode wall time of each decoder
with and without suffix pruning and the mask-aware threshold, at several canvas lengths, in
one interleaved run. Prints (and writes) one JSON object.

    OMP_NUM_THREADS=1 python bench/bench_streaming.py --output streaming.json   # embedded model
    python bench/bench_streaming.py --split dev --limit 200 --suffix_windows 16,32,48 \\
        --gen_lengths 176 --variants prune                                    # choose W on dev

Settings are the product of ``--decoders`` (each with its preset, ``--preset``),
``--gen_lengths`` (block ``--block_length``), ``--caches`` and ``--variants``: ``plain``
(no pruning, alpha 0), ``prune`` (``--suffix_windows`` x ``--suffix_tails``), ``alpha``
(``--threshold_alpha``, no pruning) and ``prune+alpha``. Every repeat decodes every setting
once, in turn, so load on a shared machine hits all of them; the fastest repeat's wall time
is reported (accuracy and NFE do not change between repeats). ``vs_first_gen_length``: per
setting, the accuracy difference and wall-time ratio against the same decoder, cache and
variant (unpruned) at the first ``--gen_lengths`` entry: the #27 targets compare a pruned
long canvas with the default short one.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2sft.config import parse_config
from r2sft.decoding import DecoderArgs, DecoderConfig
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.scoring import evaluate
from r2sft.specs import default_device, load_model
from r2sft.tasks import TaskArgs

VARIANTS = ("plain", "prune", "alpha", "prune+alpha")


@dataclass
class BenchStreamingArgs(TaskArgs):
    model: str = str(EMBEDDED_MODEL_DIR)
    preset: str = "model"
    split: str = "test"
    limit: int | None = None
    decoders: str = "threshold,r2"
    gen_lengths: str = "64,176"
    block_length: int = 16
    caches: str = "none,auto"
    variants: str = ",".join(VARIANTS)
    suffix_windows: str = "48"
    suffix_tails: str = "1"
    threshold_alpha: float = 0.3
    repeats: int = 2
    batch_size: int = 16
    device: str | None = None
    dtype: str = "auto"
    output: str | None = None

    def __post_init__(self) -> None:
        self.check_task_args()
        unknown = set(self.names(self.variants)) - set(VARIANTS)
        if unknown:
            raise ValueError(f"--variants {sorted(unknown)} unknown; choose from {VARIANTS}.")
        if self.repeats < 1 or self.batch_size < 1:
            raise ValueError("--repeats and --batch_size must be >= 1.")

    @staticmethod
    def names(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    def settings(self, task: Any) -> dict[str, DecoderConfig]:
        """Every setting's label and decoder (resolved now: a bad value fails before work)."""
        found = {}
        windows = [int(w) for w in self.names(self.suffix_windows)]
        tails = [int(t) for t in self.names(self.suffix_tails)]
        for decoder, gen, cache, variant in itertools.product(
            self.names(self.decoders), [int(g) for g in self.names(self.gen_lengths)],
            self.names(self.caches), self.names(self.variants),
        ):  # fmt: skip
            alpha = self.threshold_alpha if "alpha" in variant else 0.0
            pruning = list(itertools.product(windows, tails)) if "prune" in variant else [None]
            for choice in pruning:
                window, tail = choice if choice else (None, None)
                label = f"{decoder} gen{gen} {cache} {variant}"
                if choice:
                    label += f" W{window} T{tail}"
                args = DecoderArgs(decoder=decoder, preset=self.preset, gen_length=gen,
                                   block_length=self.block_length, cache=cache,
                                   threshold_alpha=alpha, suffix_window=window,
                                   suffix_tail=tail)  # fmt: skip
                # Unpruned rows are unpruned whatever the preset says (None = "not set" above).
                unpruned = {} if choice else {"suffix_window": None, "suffix_tail": None}
                found[label] = args.resolve(task, model=self.model, **unpruned)
        return found


def run(args: BenchStreamingArgs) -> dict[str, Any]:
    task = args.make_task()
    settings = args.settings(task)
    examples = task.load(args.split, limit=args.limit)
    loaded = load_model(args.model, dtype=args.dtype, device=default_device(args.device))
    rows: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats):
        for label, decoder in settings.items():
            start = time.perf_counter()
            metrics = evaluate(loaded, task, examples, decoder, batch_size=args.batch_size,
                               progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            row = rows.setdefault(label, {
                "accuracy": metrics["accuracy"], "mean_nfe": metrics["mean_nfe"],
                "mean_r_total": metrics["mean_r_total"], "wall_seconds": seconds,
            })  # fmt: skip
            row["wall_seconds"] = min(row["wall_seconds"], seconds)
            print(f"[{repeat + 1}/{args.repeats}] {label}: accuracy {row['accuracy']:.3f}, "
                  f"NFE {row['mean_nfe']:.2f}, {seconds:.2f} s", flush=True)  # fmt: skip
    first_gen = args.names(args.gen_lengths)[0]
    for label, row in rows.items():
        decoder, gen, cache, variant, *_ = label.split(" ")
        base_variant = variant.replace("prune+", "").replace("prune", "plain")
        base = rows.get(f"{decoder} gen{first_gen} {cache} {base_variant}")
        if base is not None:
            row["vs_first_gen_length"] = {
                "accuracy_delta": row["accuracy"] - base["accuracy"],
                "wall_ratio": row["wall_seconds"] / base["wall_seconds"],
            }
    report = {
        "model": args.model, "task": args.task, "split": args.split,
        "num_examples": len(examples), "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "settings": rows,
    }  # fmt: skip
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    report = run(parse_config(BenchStreamingArgs, args=argv))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
