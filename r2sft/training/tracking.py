"""Checkpoint tracking: decode a held-out set at every save, the way Fig. 6 of the paper does.

At the start of training (the base model, step 0) and at every checkpoint save (the Trainer
always saves the last step too), :class:`CheckpointTracker` decodes ``eval_limit`` held-out
prompts with the tracking decoder (the R² sampler by default) through
``r2sft.scoring.evaluate`` and records

- ``checkpoint-N/r2sft_metrics.json``: the metrics of that checkpoint;
- the trainer's logs (TensorBoard / W&B via ``report_to``) under ``track/``;
- ``OUTPUT_DIR/metrics.jsonl``: one line per tracked step, for the whole run;
- ``OUTPUT_DIR/metrics.png``: loss, accuracy, mean NFE and mean R_total over steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from r2sft.io import atomic_write_text  # a kill never leaves half a file
from r2sft.scoring import evaluate
from r2sft.specs import LoadedModel

TRACKED_KEYS = ("loss", "accuracy", "mean_nfe", "mean_r_total", "tokens_per_forward")
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"
CHECKPOINT_METRICS_FILE = "r2sft_metrics.json"


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(output_dir: str | Path, records: list[dict[str, Any]]) -> None:
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def truncate_metrics(output_dir: str | Path, last_step: int) -> None:
    """Drop records after ``last_step`` (a resumed run re-tracks them)."""
    records = read_metrics(output_dir)
    write_metrics(output_dir, [r for r in records if r["step"] <= last_step])


def plot_metrics(records: list[dict[str, Any]], path: str | Path) -> None:
    """The four tracked curves over optimizer steps, one panel each (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training nodes
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "training loss"),
        ("accuracy", "accuracy"),
        ("mean_nfe", "mean NFE"),
        ("mean_r_total", "mean R_total"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for axis, (key, title) in zip(axes, panels, strict=True):
        points = [
            (r["step"], r[key])
            for r in records
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="o")
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def latest_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The most recent training loss the Trainer logged."""
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


class CheckpointTracker(TrainerCallback):
    """Decode the held-out set at train begin (step 0) and at every save.

    Under DeepSpeed ZeRO-3 every process holds a shard of the weights, so all processes
    decode (the same prompts, hence the same number of forwards); otherwise the main process
    decodes its full replica while the others wait at a barrier.
    """

    def __init__(
        self,
        *,
        task: Any,
        examples: list[Any],
        decoder: Any,
        tokenizer: Any,
        spec: Any,
        batch_size: int,
        output_dir: str | Path,
        eval_before_training: bool = True,
        untracked_checkpoint: Path | None = None,
    ) -> None:
        self.task = task
        self.examples = examples
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.spec = spec
        self.batch_size = batch_size
        self.output_dir = Path(output_dir)
        self.eval_before_training = eval_before_training
        # The resumed checkpoint when a kill cut its tracking short; tracked once its weights
        # are loaded, before the first optimizer step (or at the end when none is left).
        self.untracked_checkpoint = untracked_checkpoint
        self.trainer: Any = None  # set by bind(); the callback logs through the trainer

    def bind(self, trainer: Any) -> CheckpointTracker:
        self.trainer = trainer
        return self

    # --------------------------------------------------------------- decoding

    def _zero3(self) -> bool:
        plugin = getattr(self.trainer.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and getattr(plugin, "zero_stage", 0) == 3

    def decode_metrics(self) -> dict[str, Any] | None:
        """Decode the held-out prompts with the current weights; None on non-main processes."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        model = trainer.model
        everyone = self._zero3()
        metrics = None
        was_training = model.training
        model.eval()
        try:
            if everyone or accelerator.is_main_process:
                loaded = LoadedModel(model=model, tokenizer=self.tokenizer, spec=self.spec)
                with torch.no_grad():
                    metrics = evaluate(
                        loaded,
                        self.task,
                        self.examples,
                        self.decoder,
                        batch_size=self.batch_size,
                        progress=accelerator.is_main_process,
                    )
        finally:
            if was_training:
                model.train()
        accelerator.wait_for_everyone()
        return metrics if accelerator.is_main_process else None

    def track(self, state: Any, checkpoint_dir: Path | None) -> dict[str, Any] | None:
        metrics = self.decode_metrics()
        if metrics is None:
            return None
        record: dict[str, Any] = {
            "step": int(state.global_step),
            "loss": latest_loss(state.log_history),
            "num_prompts": len(self.examples),
        }
        for key, value in metrics.items():
            if isinstance(value, bool | int | float | str) or value is None:
                record[key] = value
        missing = [k for k in TRACKED_KEYS[1:] if k not in record]
        if missing:
            raise KeyError(f"r2sft.scoring.evaluate returned no {missing}; got {sorted(metrics)}")
        records = [r for r in read_metrics(self.output_dir) if r["step"] != record["step"]]
        records.append(record)
        records.sort(key=lambda r: r["step"])
        write_metrics(self.output_dir, records)
        plot_metrics(records, self.output_dir / PLOT_FILE)
        if checkpoint_dir is not None and checkpoint_dir.is_dir():
            # Written last: its presence says the checkpoint's tracking is complete.
            atomic_write_text(
                checkpoint_dir / CHECKPOINT_METRICS_FILE, json.dumps(record, indent=2)
            )
        return record

    def _log(self, record: dict[str, Any] | None) -> None:
        # Every process must call trainer.log (its callbacks may synchronise); only the main
        # process has the numbers, so broadcast them.
        from accelerate.utils import broadcast_object_list

        holder = [record]
        if self.trainer.args.world_size > 1:
            broadcast_object_list(holder, from_process=0)
        record = holder[0]
        if record is not None:
            self.trainer.log(
                {
                    f"track/{key}": float(record[key])
                    for key in TRACKED_KEYS[1:]
                    if isinstance(record.get(key), int | float)
                }
            )

    # --------------------------------------------------------------- callback events

    def on_train_begin(self, args, state, control, **kwargs):
        if self.eval_before_training and state.global_step == 0 and self.examples:
            self._log(self.track(state, checkpoint_dir=None))

    def _track_resumed_checkpoint(self, state: Any) -> None:
        checkpoint, self.untracked_checkpoint = self.untracked_checkpoint, None
        if checkpoint is not None and self.examples:
            self._log(self.track(state, checkpoint))

    def on_step_begin(self, args, state, control, **kwargs):
        self._track_resumed_checkpoint(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._track_resumed_checkpoint(state)

    def on_step_end(self, args, state, control, **kwargs):
        # Log the training loss at every save, so a checkpoint's metrics carry the loss of the
        # steps just before it rather than a stale one from the last logging step.
        if control.should_save and self.examples:
            control.should_log = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if not self.examples:
            return
        checkpoint_dir = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._log(self.track(state, checkpoint_dir))
