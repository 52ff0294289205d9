"""Iterative rounds of self-training: collect with the current model, train it, repeat.

Launch::

    python -m r2sft.rounds                              # the embedded default, 3 rounds
    python -m r2sft.rounds --num_rounds 2 --output_dir outputs/rounds-2 \\
        --train_args="--max_steps 4000"
    # fresh train prompts every round (one folder per round, written first)
    for r in 1 2 3; do python -m r2sft.embedded.make_task --out data/rounds/round-$r \\
        --splits train --seed $((100 + r)); done
    python -m r2sft.rounds --collect_data_path "data/rounds/round-{round}" ...
    # rounds that collect, track and evaluate with the official R² values plus early exit
    python -m r2sft.rounds --output_dir outputs/rounds-official \\
        --collect_args="--preset official --early_exit true" \\
        --train_args="--preset official --early_exit true" \\
        --eval_preset official --eval_early_exit true
    # 8 GPUs: every stage runs under accelerate launch with these processes / config
    python -m r2sft.rounds --collect_config configs/llada_8b_gsm8k.yaml \\
        --train_config configs/llada_8b_gsm8k_train.yaml --num_processes 8 \\
        --accelerate_config launch/accelerate/zero2.yaml --eval_task gsm8k ...

Round r (1, 2, ...) decodes the collect config's prompts with round r-1's model (round 0:
the collect config's model), trains that model on the selected trajectories, and decodes
the held-out split with the result. Each round lives in ``OUTPUT_DIR/round-r/`` (``collect/``,
``train/``, ``eval.json``). The stages are the same commands a user runs (``accelerate
launch collect.py`` / ``train.py``) in subprocesses, so each starts with a clean device; a
stage whose output is complete is skipped, so re-running the same command resumes after a
crash at round and stage level (collect and train resume inside a stage themselves).

Stops after ``num_rounds`` or as soon as a round's held-out accuracy (threshold decoder)
falls more than ``max_accuracy_drop`` below the base model's: online self-training with
parallel decoders can turn over-confident. The run's model is the last round that stayed
within the margin. ``rounds.json`` and ``rounds.png`` hold accuracy, mean NFE and R_total per
round; they are rewritten after every stage.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2sft.collect import CollectConfig
from r2sft.config import option, parse_config
from r2sft.decoding import DecoderArgs
from r2sft.paths import OUTPUTS_DIR, REPO_ROOT
from r2sft.report import measure_model
from r2sft.tasks import get_task
from r2sft.threads import cpu_thread_env

ROUNDS_FILE = "rounds.json"
PLOT_FILE = "rounds.png"
EVAL_FILE = "eval.json"


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


@dataclass
class RoundsConfig:
    """Command line of ``python -m r2sft.rounds``."""

    _argument_group_name = "training"  # --help heading of fields without a group

    collect_config: str = field(
        default=str(REPO_ROOT / "configs/collect_embedded.yaml"),
        metadata=_help("collect.py config of every round (its model is round 0's)."),
    )
    train_config: str = field(
        default=str(REPO_ROOT / "configs/train_embedded.yaml"),
        metadata=_help("train.py config of every round."),
    )
    collect_args: str = field(
        default="", metadata=_help('extra collect.py flags: --collect_args="--num_candidates 8".')
    )
    train_args: str = field(
        default="", metadata=_help('extra train.py flags: --train_args="--max_steps 4000".')
    )
    collect_data_path: str | None = field(
        default=None,
        metadata=_help(
            "collect.py --data_path of round r, '{round}' standing for r: fresh prompts per "
            "round (None: the collect config's, the same prompts every round)."
        ),
    )
    num_rounds: int = field(default=3, metadata=_help("rounds at most."))
    max_accuracy_drop: float = field(
        default=0.02, metadata=_help("stop when held-out accuracy falls this far below base.")
    )
    eval_task: str = field(
        default="arith", metadata=_help("task of the held-out decode.", "tracking")
    )
    eval_data_path: str | None = field(
        default=None, metadata=_help("its data (None: default).", "tracking")
    )
    eval_split: str = field(
        default="dev", metadata=_help("held-out split decoded per round.", "tracking")
    )
    eval_limit: int | None = field(
        default=None, metadata=_help("its first N (None: all).", "tracking")
    )
    eval_preset: str = field(
        default="model",
        metadata=_help("decoder preset of the held-out decode (model | official).", "tracking"),
    )
    eval_early_exit: bool | None = field(
        default=None,
        metadata=_help("early exit in the held-out decode (None: the preset's).", "tracking"),
    )
    output_dir: str = field(
        default=str(OUTPUTS_DIR / "rounds"), metadata=_help("run folder.", "run and output")
    )
    num_processes: int = field(
        default=1, metadata=_help("accelerate processes per stage.", "run and output")
    )
    accelerate_config: str | None = field(
        default=None,
        metadata=_help("accelerate config file of the stages (DeepSpeed...).", "run and output"),
    )

    def __post_init__(self) -> None:
        for name in ("collect_config", "train_config"):
            if not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f"--{name} {getattr(self, name)} does not exist.")
        if self.num_rounds < 1 or self.num_processes < 1:
            raise ValueError("--num_rounds and --num_processes must be >= 1.")
        DecoderArgs(preset=self.eval_preset)  # a preset path must exist
        if self.collect_data_path is not None:
            if "{round}" not in self.collect_data_path:
                raise ValueError(
                    f"--collect_data_path {self.collect_data_path!r} has no '{{round}}'; name "
                    "one folder per round, e.g. data/rounds/round-{round} (or pass a fixed "
                    'path with --collect_args="--data_path PATH").'
                )
            missing = [path for path in self.round_data_paths() if not Path(path).exists()]
            if missing:
                raise FileNotFoundError(
                    f"--collect_data_path: {', '.join(missing)} missing; write each round's "
                    "prompts first (arith: python -m r2sft.embedded.make_task --out DIR "
                    "--splits train --seed S)."
                )
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError(f"--max_accuracy_drop {self.max_accuracy_drop} must be in [0, 1].")

    def round_data_paths(self) -> list[str]:
        """The collect data of rounds 1..num_rounds (empty without --collect_data_path)."""
        if self.collect_data_path is None:
            return []
        return [self.collect_data_path.replace("{round}", str(r))
                for r in range(1, self.num_rounds + 1)]  # fmt: skip


def base_model(config: RoundsConfig) -> str:
    """Round 0's model: the collect config's ``model`` (the collect default without one)."""
    import yaml

    values = yaml.safe_load(Path(config.collect_config).read_text()) or {}
    overrides = shlex.split(config.collect_args)
    if "--model" in overrides:
        return overrides[overrides.index("--model") + 1]
    model = values.get("model", CollectConfig.model)
    path = Path(model)
    return (
        str(REPO_ROOT / path) if not path.is_absolute() and (REPO_ROOT / path).exists() else model
    )


def model_complete(folder: Path) -> bool:
    """A train.py ``final/`` folder fully written (the card is its last file)."""
    return (folder / "config.json").is_file() and (folder / "README.md").is_file()


def _launch(config: RoundsConfig, script: str, flags: list[str]) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--num_processes", str(config.num_processes)]  # fmt: skip
    if config.accelerate_config:
        command += ["--config_file", config.accelerate_config]
    return [*command, str(REPO_ROOT / script), *flags]


def _run(command: list[str]) -> None:
    """Run a stage command (it names its ``--model``)."""

    # accelerate launch pins OMP_NUM_THREADS to 1 unless set: the threads that fit the model
    # (the caller's own OMP_NUM_THREADS / GOMP_SPINCOUNT are kept).
    model = command[command.index("--model") + 1]
    subprocess.run(command, check=True, env={**os.environ, **cpu_thread_env(model)})


def evaluate_round(config: RoundsConfig, model: str, path: Path) -> dict[str, Any]:
    """Held-out accuracy, mean NFE and R_total of ``model`` (threshold and r2, the model's
    preset), stored in ``path``; read back when the file exists."""
    if path.is_file():
        return json.loads(path.read_text())
    task = get_task(config.eval_task, path=config.eval_data_path)
    examples = task.load(config.eval_split, limit=config.eval_limit)
    settings = {
        name: DecoderArgs(
            decoder=name, preset=config.eval_preset, early_exit=config.eval_early_exit
        )
        for name in ("threshold", "r2")
    }
    result = {"model": model, **measure_model(model, task, examples, settings)}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def plot_rounds(records: list[dict[str, Any]], path: Path) -> None:
    """Accuracy, mean NFE and mean R_total per round (threshold and r2 decoders)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("accuracy", "held-out accuracy"), ("mean_nfe", "mean NFE"),
              ("mean_r_total", "mean R_total"))  # fmt: skip
    for axis, (key, title) in zip(axes, panels, strict=True):
        for decoder in ("threshold", "r2"):
            rounds = [r["round"] for r in records if decoder in r]
            axis.plot(rounds, [r[decoder][key] for r in records if decoder in r], "o-",
                      label=decoder)  # fmt: skip
        axis.set_title(title)
        axis.set_xlabel("round")
        axis.set_xticks([r["round"] for r in records])  # whole rounds, not 0.5 steps
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_rounds(config: RoundsConfig) -> dict[str, Any]:
    """Run (or resume) the rounds; returns what ``rounds.json`` holds."""
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    model = base_model(config)
    (root / "round-0").mkdir(exist_ok=True)
    records = [{"round": 0, **evaluate_round(config, model, root / "round-0" / EVAL_FILE)}]
    state: dict[str, Any] = {"config": vars(config), "rounds": records, "commands": []}
    floor = records[0]["threshold"]["accuracy"] - config.max_accuracy_drop
    accepted, stopped = model, f"in progress: 0 of {config.num_rounds} rounds done"

    def save() -> None:
        state["model"], state["stopped"] = accepted, stopped
        (root / ROUNDS_FILE).write_text(json.dumps(state, indent=2) + "\n")
        plot_rounds(records, root / PLOT_FILE)

    for index in range(1, config.num_rounds + 1):
        folder = root / f"round-{index}"
        collect_dir, train_dir = folder / "collect", folder / "train"
        collect_flags = ["--config", config.collect_config, *shlex.split(config.collect_args),
                         "--model", model, "--output_dir", str(collect_dir)]  # fmt: skip
        if config.collect_data_path is not None:
            collect_flags += ["--data_path", config.round_data_paths()[index - 1]]
        train_flags = ["--config", config.train_config, *shlex.split(config.train_args),
                       "--model", model, "--data_dir", str(collect_dir),
                       "--output_dir", str(train_dir)]  # fmt: skip
        collect, train = (
            _launch(config, "collect.py", collect_flags),
            _launch(config, "train.py", train_flags),
        )
        state["commands"] += [" ".join(collect), " ".join(train)]
        if not (collect_dir / "summary.json").is_file():
            _run(collect)
        if not model_complete(train_dir / "final"):
            resume = any(train_dir.glob("checkpoint-*"))
            _run(train + (["--resume_from_checkpoint", "latest"] if resume else []))
        model = str(train_dir / "final")
        record = {"round": index, **evaluate_round(config, model, folder / EVAL_FILE)}
        summary = json.loads((collect_dir / "summary.json").read_text())
        record["collected"] = {k: summary[k] for k in ("candidate_accuracy", "selected")}
        records.append(record)
        if record["threshold"]["accuracy"] < floor:
            stopped = (
                f"round {index}: held-out accuracy {record['threshold']['accuracy']:.4f} fell "
                f"more than {config.max_accuracy_drop} below the base's "
                f"{records[0]['threshold']['accuracy']:.4f}"
            )
            break
        accepted = model
        stopped = f"in progress: {index} of {config.num_rounds} rounds done"
        save()
    else:
        stopped = f"finished {config.num_rounds} rounds"
    save()
    return state


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_config(
        RoundsConfig, args=argv, command="python -m r2sft.rounds", summary=__doc__
    )
    state = run_rounds(config)
    for record in state["rounds"]:
        parts = [f"{name} accuracy {record[name]['accuracy']:.4f} mean NFE "
                 f"{record[name]['mean_nfe']:.3f}" for name in ("threshold", "r2")]  # fmt: skip
        print(f"round {record['round']}: " + ", ".join(parts))
    print(f"stopped: {state['stopped']}; model: {state['model']}")
    return state


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
