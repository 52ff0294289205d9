"""Tune a model's decoder settings on a split you do not report, and ship them with it.

Launch::

    # the embedded model on its dev split: report, plot and preset in outputs/tune
    python -m r2sft.tune
    python -m r2sft.tune --limit 50 --output outputs/tune-quick
    # update the preset the checkout ships with the embedded model, on purpose
    python -m r2sft.tune --write_to data/tiny-llada
    # LLaDA-8B-Instruct on 200 GSM8K train problems (not the test split), on a GPU
    python -m r2sft.tune --model path/to/LLaDA-8B-Instruct --task gsm8k --data_path data/gsm8k \\
        --split train --limit 200 --device cuda --dtype bfloat16 --batch_size 32 --write

What it does: decode the split with threshold 0.9 (the official decoder: the accuracy to
keep), then search under a budget of decodes: a threshold sweep, a grid of the R² rules'
thresholds (tau_s = tau_t, K) on top of threshold 0.9, then one-parameter refinements around
the best R² setting found (threshold, tau_s and tau_t apart, K, window, token-cluster mode,
temporal aggregation) until nothing improves or the budget is spent. Then, from each
decoder's pick, a forward stage: Streaming-dLLM's mask-aware threshold (``threshold_alpha``),
suffix pruning (the smallest ``suffix_window`` / ``suffix_tail`` that keeps the accuracy with
at most 5% more forwards: a window makes every forward cheaper) and the KV cache's refresh
(``cache_refresh``: kept only where it lowers the mean forwards, its own refills counted,
within the accuracy floor; the pick already meets the floor, so a refresh that only buys
accuracy is not kept).
Every setting decodes with early exit, which leaves responses unchanged. Per decoder
(``threshold``, ``r2``) the pick is the setting with the fewest mean forwards whose accuracy
is at most ``--max_accuracy_drop`` below threshold 0.9's. Output: a JSON report (printed,
and written with a Pareto plot of accuracy against mean NFE and the picks as a preset,
``r2sft_decoding.json``, to ``--output``: ``--preset OUTPUT`` decodes with it). ``--write``
also stores the preset in the model's folder, which every r2sft entry point then uses by
default; the models shipped in the checkout's ``data/`` are changed only by naming them,
``--write_to data/tiny-llada``.

Decoder options given on the command line (e.g. ``--gen_length``, ``--cache``) fix those
values for the whole search; everything else starts from the official values. Options the
search sets itself (the thresholds, the R² and forward-stage options, early exit) and
``--preset`` are refused rather than silently overridden.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from r2sft.config import option, parse_config
from r2sft.decoding import DecoderArgs, DecoderConfig
from r2sft.decoding.forwards import resolve_cache_mode
from r2sft.decoding.presets import (
    MODEL,
    OFFICIAL,
    PRESET_FILE,
    RUN_FIELDS,
    DecoderPreset,
    write_preset,
)
from r2sft.paths import DATA_DIR, EMBEDDED_MODEL_DIR, OUTPUTS_DIR
from r2sft.scoring import evaluate
from r2sft.specs import default_device, load_model, require_model_download
from r2sft.tasks import TaskArgs

REPORT_FILE = "tune.json"
PLOT_FILE = "pareto.png"
# What each reported setting keeps of the evaluation.
METRIC_KEYS = ("accuracy", "mean_nfe", "tokens_per_forward", "mean_r_total")
THRESHOLDS = (0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
R2_TAUS = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
R2_KS = (3, 2)
# The forward stage, per pick: Streaming-dLLM's mask-aware threshold, suffix pruning (windows
# in blocks, tails) and the KV cache's refresh (in tokens: share of a block).
ALPHAS = (0.1, 0.3, 0.5)
WINDOW_BLOCKS = (1, 2, 3, 4)
TAILS = (0, 1)
REFRESH_SHARES = (0.25, 0.5)
# The decoder options the search sets itself (early exit: on in every setting, off for the
# reference): given on the command line they would be silently overridden, so they are refused.
SEARCHED_FIELDS = frozenset({
    "threshold", "tau_s", "tau_t", "temporal_k", "window", "token_cluster_mode",
    "temporal_agg", "threshold_alpha", "suffix_window", "suffix_tail", "cache_refresh",
    "early_exit",
})  # fmt: skip
# A pruned window is kept when its mean NFE stays within this factor of the pick's: a window
# makes every forward cheaper, so a few more forwards can still be faster.
WINDOW_NFE_SLACK = 1.05


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


@dataclass
class TuneArgs(TaskArgs, DecoderArgs):
    """Command line of ``python -m r2sft.tune``."""

    _argument_group_name = "model and data"  # --help heading of fields without a group

    model: str = field(default=str(EMBEDDED_MODEL_DIR), metadata=_help("model folder or Hub id."))
    split: str = field(default="dev", metadata=_help("split to tune on (not the one you report)."))
    limit: int | None = field(default=200, metadata=_help("first N examples (None: all)."))
    budget: int = field(
        default=10000,
        metadata=_help("most example decodes in all (settings x examples).", "tuning"),
    )
    max_accuracy_drop: float = field(
        default=0.01, metadata=_help("accuracy a pick may lose against threshold 0.9.", "tuning")
    )
    write: bool = field(
        default=False,
        metadata=_help(
            "also store the preset as the model folder's r2sft_decoding.json, its default "
            "decoder settings (not for a model shipped in the checkout's data/: --write_to).",
            "run and output",
        ),
    )
    write_to: str | None = field(
        default=None,
        metadata=_help(
            "also store the preset as FOLDER/r2sft_decoding.json, e.g. data/tiny-llada to "
            "update the shipped embedded model's preset on purpose.",
            "run and output",
        ),
    )
    output: str = field(
        default=str(OUTPUTS_DIR / "tune"),
        metadata=_help(
            "folder for tune.json, pareto.png and the preset (r2sft_decoding.json).",
            "run and output",
        ),
    )
    batch_size: int = field(default=32, metadata=_help("sequences per forward batch.", "decoding"))
    dtype: str = field(default="auto", metadata=_help("auto | bfloat16 | float32."))
    device: str | None = field(default=None, metadata=_help("e.g. cuda (None: CUDA if any)."))
    progress: bool = field(default=True, metadata=_help("show a progress bar.", "run and output"))

    def __post_init__(self) -> None:
        self.check_task_args()
        self.check_decoder_args()
        searched = sorted(set(self.decoder_overrides()) & SEARCHED_FIELDS)
        if searched:
            flags = ", ".join(f"--{name}" for name in searched)
            raise ValueError(
                f"{flags}: r2sft.tune sets {'these' if len(searched) > 1 else 'this'} itself "
                "in the search; leave them out. Other decoder options (--gen_length, "
                "--block_length, --cache, --compile...) fix their values for the whole search."
            )
        if self.preset != MODEL:
            raise ValueError(
                f"--preset {self.preset}: r2sft.tune starts from the official values whatever "
                "the preset (it writes a new one); leave --preset out."
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit} must be >= 1.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size {self.batch_size} must be >= 1.")
        if self.budget < 1:
            raise ValueError(f"--budget {self.budget} must be >= 1 (decodes of one example).")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"--max_accuracy_drop {self.max_accuracy_drop} must be in [0, 1].")
        if self.write and not Path(self.model).is_dir():
            raise ValueError(f"--write needs a local model folder; {self.model} is not one.")
        if self.write and Path(self.model).resolve().is_relative_to(DATA_DIR.resolve()):
            model, output = _shown_path(self.model), _shown_path(self.output)
            raise ValueError(
                f"--write would change {model}/{PRESET_FILE}, the preset this checkout ships. "
                f"The preset is written to {output}/{PRESET_FILE} anyway (decode with it: "
                f"--preset {output}); to update the shipped one on purpose, pass --write_to "
                f"{model} instead of --write."
            )
        if self.write_to is not None and not Path(self.write_to).is_dir():
            raise ValueError(f"--write_to {self.write_to}: no such folder.")


# ----------------------------------------------------------------------------- the search


def threshold_settings() -> list[dict[str, Any]]:
    """The threshold curve: plain threshold decoding at every threshold of the sweep."""
    return [{"decoder": "threshold", "threshold": value} for value in THRESHOLDS]


def r2_grid() -> list[dict[str, Any]]:
    """The R² grid on top of threshold 0.9: tau_s = tau_t, for each streak length K."""
    return [
        {"decoder": "r2", "threshold": 0.9, "tau_s": tau, "tau_t": tau, "temporal_k": k}
        for tau in R2_TAUS
        for k in R2_KS
    ]


def neighbours(setting: dict[str, Any]) -> list[dict[str, Any]]:
    """Settings one parameter away from an R² ``setting``: the refinement step."""

    def step(value: float, delta: float) -> float:
        return round(min(0.99, max(0.05, value + delta)), 2)

    options: dict[str, Iterable[Any]] = {
        "threshold": (step(setting["threshold"], d) for d in (-0.1, 0.05)),
        "tau_s": (step(setting["tau_s"], d) for d in (-0.1, 0.1)),
        "tau_t": (step(setting["tau_t"], d) for d in (-0.1, 0.1)),
        "temporal_k": (k for k in (setting["temporal_k"] - 1, setting["temporal_k"] + 1) if k >= 1),
        "window": (w for w in (2, 4) if w != setting.get("window", 3)),
        "token_cluster_mode": ("mid", "none"),
        "temporal_agg": ("ave", "max"),
    }
    found = []
    for name, values in options.items():
        for value in values:
            if value != setting.get(name):
                found.append({**setting, name: value})
    return found


FORWARD_STAGES = ("threshold_alpha", "suffix", "cache_refresh")
# Decoded first, whatever the budget: threshold 0.9 without early exit (the reference NFE),
# with it (the accuracy to keep), and fixed one token per forward.
REFERENCE_SETTINGS: tuple[tuple[dict[str, Any], bool], ...] = (
    ({"decoder": "threshold", "threshold": 0.9}, False),
    ({"decoder": "threshold", "threshold": 0.9}, True),
    ({"decoder": "fixed"}, False),
)


def forward_candidates(stage: str, setting: dict[str, Any], decoder: DecoderConfig,
                       cache_mode: str) -> list[dict[str, Any]]:  # fmt: skip
    """The settings one forward-stage option away from ``setting`` (resolved: ``decoder``,
    which decodes with ``cache_mode``, ``"auto"`` resolved for the model): the threshold's
    alpha, the suffix window and tail, or the cache refresh. Pruning needs a model with
    r2sft's decoding cache (it passes positions) and a refresh a cache: ``cache_mode`` ``none``
    leaves those stages empty."""
    block, gen = decoder.block_length, decoder.gen_length
    if stage in ("suffix", "cache_refresh") and cache_mode == "none":
        return []
    if stage == "threshold_alpha":
        if decoder.policy != "threshold":
            return []
        return [{**setting, "threshold_alpha": alpha} for alpha in ALPHAS]
    if stage == "suffix":
        windows = [blocks * block for blocks in WINDOW_BLOCKS if blocks * block < gen - block]
        return [{**setting, "suffix_window": window, "suffix_tail": tail}
                for window in windows for tail in TAILS]  # fmt: skip
    if stage == "cache_refresh":
        return [{**setting, "cache_refresh": max(1, int(share * block))}
                for share in REFRESH_SHARES]  # fmt: skip
    raise ValueError(f"unknown forward stage {stage!r}; the stages are {FORWARD_STAGES}.")


def smallest_window(results: list[dict[str, Any]], current: dict[str, Any],
                    floor: float) -> dict[str, Any]:  # fmt: skip
    """The pruned setting with the smallest window (then tail) whose accuracy is >= ``floor``
    and whose mean NFE is within :data:`WINDOW_NFE_SLACK` of ``current``'s; else ``current``."""
    eligible = [r for r in results if r["accuracy"] >= floor - 1e-9
                and r["mean_nfe"] <= current["mean_nfe"] * WINDOW_NFE_SLACK]  # fmt: skip
    return min(eligible, key=lambda r: (r["suffix_window"], r["suffix_tail"]), default=current)


def setting_key(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True)


def pick(results: list[dict[str, Any]], decoder: str, floor: float) -> dict[str, Any] | None:
    """The ``decoder`` setting with the fewest mean forwards whose accuracy is >= ``floor``
    (ties: higher accuracy); None when no setting qualifies."""
    eligible = [r for r in results if r["decoder"] == decoder and r["accuracy"] >= floor - 1e-9]
    return min(eligible, key=lambda r: (r["mean_nfe"], -r["accuracy"]), default=None)


# ----------------------------------------------------------------------------- running it


def settings_of(result: dict[str, Any]) -> dict[str, Any]:
    """The DecoderConfig overrides of a reported setting (its metrics dropped)."""
    return {k: v for k, v in result.items() if k not in (*METRIC_KEYS, "decoder", "nfe_ratio",
                                                       "accuracy_delta")}  # fmt: skip


def tune(args: TuneArgs) -> dict[str, Any]:
    """Run the search; returns the report (and writes it, the plot, and the preset)."""

    start = time.perf_counter()
    task = args.make_task()
    examples = task.load(args.split, limit=args.limit)
    if not examples:
        raise ValueError(f"task {args.task!r} split {args.split!r} has no examples to tune on.")
    max_settings = args.budget // len(examples)
    if max_settings < len(REFERENCE_SETTINGS):
        raise ValueError(
            f"--budget {args.budget} decodes cannot cover the {len(REFERENCE_SETTINGS)} "
            f"reference settings on {len(examples)} examples; give --budget >= "
            f"{len(REFERENCE_SETTINGS) * len(examples)} (or a smaller --limit)."
        )
    base_args = args.decoder_args(preset=OFFICIAL)

    def decoder_for(setting: dict[str, Any], early_exit: bool = True) -> DecoderConfig:
        name = setting["decoder"]
        overrides = {k: v for k, v in setting.items() if k != "decoder"}
        chosen = dataclasses.replace(base_args, decoder=name)
        return chosen.resolve(task, model=args.model, **{"early_exit": early_exit, **overrides})

    require_model_download(args.model)  # before the preset is read from the model's Hub repo
    for name in ("threshold", "r2"):  # the command line's decoder options: checked before work
        decoder_for({"decoder": name})
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)  # fails now, not after the search
    loaded = load_model(args.model, dtype=args.dtype, device=default_device(args.device))
    seen: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=max_settings, desc="tune", unit="setting", disable=not args.progress)

    def run(setting: dict[str, Any], early_exit: bool = True) -> dict[str, Any] | None:
        key = setting_key({**setting, "early_exit": early_exit})
        if key in seen:
            return seen[key]
        if len(seen) >= max_settings:
            return None
        metrics = evaluate(loaded, task, examples, decoder_for(setting, early_exit),
                           batch_size=args.batch_size, progress=False)  # fmt: skip
        seen[key] = {**setting, **{k: metrics[k] for k in METRIC_KEYS}}
        bar.update(1)
        return seen[key]

    reference, baseline, fixed = (run(*setting) for setting in REFERENCE_SETTINGS)
    assert reference is not None and baseline is not None  # the budget covers them (checked)
    floor = baseline["accuracy"] - args.max_accuracy_drop
    curve = [r for r in map(run, threshold_settings()) if r is not None] + [baseline]
    grid = [r for r in map(run, r2_grid()) if r is not None]
    best = pick(grid, "r2", floor)
    while best is not None:  # refine one parameter at a time until nothing improves
        tried = [r for r in map(run, neighbours(settings_of(best) | {"decoder": "r2"})) if r]
        improved = pick([best, *tried], "r2", floor)
        if improved is best or improved is None:
            break
        best = improved
    forward_picks = {}
    for name in ("threshold", "r2"):  # the forward stage, from each decoder's pick
        chosen = pick(list(seen.values()), name, floor)
        for stage in FORWARD_STAGES if chosen is not None else ():
            setting = settings_of(chosen) | {"decoder": name}
            decoder = decoder_for(setting)
            cache_mode = resolve_cache_mode(loaded.model, decoder.cache)
            candidates = forward_candidates(stage, setting, decoder, cache_mode)
            tried = [r for r in map(run, candidates) if r is not None]
            if stage == "suffix":
                chosen = smallest_window(tried, chosen, floor)
            else:
                chosen = pick([chosen, *tried], name, floor) or chosen
        forward_picks[name] = chosen
    bar.close()

    results = list(seen.values())
    for result in results:
        result["nfe_ratio"] = result["mean_nfe"] / reference["mean_nfe"]
        result["accuracy_delta"] = result["accuracy"] - baseline["accuracy"]
    picks = forward_picks
    report = {
        "model": args.model,
        "task": args.task,
        "split": args.split,
        "num_examples": len(examples),
        "max_accuracy_drop": args.max_accuracy_drop,
        "budget": args.budget,
        "settings_decoded": len(results),
        "reference": reference,  # threshold 0.9, official values, no early exit
        "baseline": baseline,  # the same with early exit: the accuracy to keep
        "fixed": fixed,
        "threshold_curve": sorted(curve, key=lambda r: r["threshold"], reverse=True),
        "r2_settings": [r for r in results if r["decoder"] == "r2"],
        "settings": results,  # every setting decoded, with its metrics
        "picks": picks,
        "wall_seconds": time.perf_counter() - start,
    }
    preset = preset_from_picks(picks, report, decoder_for)
    report["preset"] = json.loads(preset.to_json())
    (output / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    plot_pareto(report, output / PLOT_FILE)
    written = [write_preset(output, preset)]
    if args.write:
        written.append(write_preset(args.model, preset))
    if args.write_to is not None:
        written.append(write_preset(args.write_to, preset))
    report["written"] = [str(path) for path in written]
    return report


def _shown_path(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it (for messages)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def preset_from_picks(picks: dict[str, Any], report: dict[str, Any], decoder_for: Any) -> Any:
    """The preset of the picks: every DecoderConfig field of each picked decoder (so the file
    does not depend on later changes of the defaults), plus how it was tuned."""
    decoders = {}
    for name, chosen in picks.items():
        if chosen is None:
            continue
        values = decoder_for({"decoder": name, **settings_of(chosen)}).to_dict()
        decoders[name] = {k: v for k, v in values.items() if k not in RUN_FIELDS}
    tuned = {
        "by": "python -m r2sft.tune",
        **{k: report[k] for k in ("task", "split", "num_examples", "max_accuracy_drop")},
        "baseline": {k: report["baseline"][k] for k in METRIC_KEYS},
        "reference_mean_nfe": report["reference"]["mean_nfe"],
        "picks": {
            name: chosen and {k: chosen[k] for k in ("accuracy", "mean_nfe", "nfe_ratio")}
            for name, chosen in picks.items()
        },  # fmt: skip
    }
    return DecoderPreset("tuned", decoders, tuned)


def plot_pareto(report: dict[str, Any], path: Path) -> None:
    """Accuracy against mean NFE (the paper's Fig. 1 style): the threshold curve, the R²
    settings with their Pareto front, fixed 1-token-per-step, the picks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    curve = sorted(report["threshold_curve"], key=lambda r: r["mean_nfe"])
    axis.plot([r["mean_nfe"] for r in curve], [r["accuracy"] for r in curve], "o-",
              label="threshold (sweep)", color="tab:blue")  # fmt: skip
    for point in curve:
        axis.annotate(f"{point['threshold']:g}", (point["mean_nfe"], point["accuracy"]),
                      textcoords="offset points", xytext=(3, 3), fontsize=7)  # fmt: skip
    r2 = report["r2_settings"]
    axis.scatter([r["mean_nfe"] for r in r2], [r["accuracy"] for r in r2], s=14,
                 color="tab:orange", alpha=0.6, label="R² settings")  # fmt: skip
    front, best = [], -math.inf
    for point in sorted(r2, key=lambda r: (r["mean_nfe"], -r["accuracy"])):
        if point["accuracy"] > best:
            front.append(point)
            best = point["accuracy"]
    axis.plot([r["mean_nfe"] for r in front], [r["accuracy"] for r in front], "-",
              color="tab:orange", label="R² Pareto front")  # fmt: skip
    fixed, reference = report["fixed"], report["reference"]
    if fixed is not None:
        axis.scatter([fixed["mean_nfe"]], [fixed["accuracy"]], marker="s", color="gray",
                     label="fixed, 1 token / forward")  # fmt: skip
    axis.scatter([reference["mean_nfe"]], [reference["accuracy"]], marker="D", color="black",
                 label="threshold 0.9, no early exit")  # fmt: skip
    for name, color in (("r2", "tab:red"), ("threshold", "tab:green")):
        chosen = report["picks"].get(name)
        if chosen is not None:
            axis.scatter([chosen["mean_nfe"]], [chosen["accuracy"]], marker="*", s=220,
                         color=color, zorder=5, label=f"pick: {name}")  # fmt: skip
    axis.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    axis.xaxis.set_major_locator(FixedLocator([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256]))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("mean NFE (forward passes per problem, log scale)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{Path(report['model']).name}: {report['task']} {report['split']} "
                   f"({report['num_examples']} problems)")  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_config(TuneArgs, args=argv, command="python -m r2sft.tune", summary=__doc__)
    report = tune(args)
    summary = {k: report[k] for k in ("model", "task", "split", "num_examples",
                                      "settings_decoded", "picks")}  # fmt: skip
    summary["reference_mean_nfe"] = report["reference"]["mean_nfe"]
    summary["baseline_accuracy"] = report["baseline"]["accuracy"]
    print(json.dumps(summary, indent=2))
    print(f"wrote {Path(args.output) / REPORT_FILE} and {Path(args.output) / PLOT_FILE}")
    print(f"wrote the decoder preset to {', '.join(report['written'])}")
    return report


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
