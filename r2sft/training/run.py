"""One SFT run end to end: data, model (LoRA or full), Trainer, tracking, export, Hub upload.

Every input is checked before the model loads: the data must be a selected set, a resumed
run must keep the options of the run it continues (each checkpoint carries them), a fresh run
needs an unused output folder (or ``--overwrite_output_dir``), and ``--push_to_hub`` needs a
token the Hub accepts. A kill never costs a checkpoint its tracked metrics: resuming tracks a
checkpoint whose tracking it cut short.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from r2sft.decoding import DecoderConfig
from r2sft.hub import check_hub_access
from r2sft.io import atomic_write_text
from r2sft.specs import apply_lora, load_model, require_model_download
from r2sft.tasks import Task
from r2sft.training.config import TrainConfig, resume_fingerprint
from r2sft.training.data import (
    TrajectoryCollator,
    collect_decoder_settings,
    data_summary,
    load_trajectories,
)
from r2sft.training.export import FINAL_DIR, push_to_hub, save_final, write_model_card
from r2sft.training.tracking import (
    CHECKPOINT_METRICS_FILE,
    CheckpointTracker,
    read_metrics,
    truncate_metrics,
)
from r2sft.training.trainer import R2SFTTrainer

logger = logging.getLogger("r2sft.train")

CONFIG_FILE = "r2sft_train_config.json"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")  # fmt: skip


class UsedOutputDirError(FileExistsError):
    """A fresh run was pointed at a folder holding another run, or a resume changed options."""


def checkpoint_step(folder: Path) -> int | None:
    """The optimizer step a complete checkpoint folder was saved at; None when the folder is
    incomplete (a kill during the save leaves it without a readable trainer_state.json, which
    the Trainer writes last, or without weights)."""
    state = folder / "trainer_state.json"
    has_weights = any((folder / name).is_file() for name in _WEIGHT_FILES)
    has_weights = has_weights or any(folder.glob("global_step*"))  # DeepSpeed's own layout
    if not (state.is_file() and has_weights):
        return None
    try:
        return int(json.loads(state.read_text())["global_step"])
    except (ValueError, KeyError, TypeError):
        return None


def complete_checkpoint(folder: Path) -> bool:
    """Whether a checkpoint folder was fully written (see :func:`checkpoint_step`)."""
    return checkpoint_step(folder) is not None


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder of ``output_dir`` (complete or not), by step N."""
    if not output_dir.is_dir():
        return []
    found = []
    for folder in output_dir.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and folder.is_dir():
            found.append((int(step), folder))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir``, None when there is none."""
    complete = [
        folder for _, folder in checkpoint_folders(output_dir) if complete_checkpoint(folder)
    ]
    return complete[-1] if complete else None


def resolve_checkpoint(config: TrainConfig) -> Path | None:
    """``--resume_from_checkpoint``: a folder, or 'latest' (newest complete checkpoint)."""
    value = config.resume_from_checkpoint
    if value is None or value.lower() in ("", "none", "false"):
        return None
    if value.lower() in ("latest", "last", "true"):
        found = latest_checkpoint(config.output_path)
        if found is None:
            incomplete = [folder.name for _, folder in checkpoint_folders(config.output_path)]
            left = f" (only incomplete ones, left by a kill: {incomplete})" if incomplete else ""
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value}: no checkpoint to resume (no complete "
                f"checkpoint-* folder) in {config.output_dir}{left}. Start a fresh run "
                "(--overwrite_output_dir if the folder is used) or point --output_dir at the "
                "run to continue."
            )
        return found
    if not complete_checkpoint(Path(value)):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete Trainer checkpoint (needs "
            "trainer_state.json and the weights); give a checkpoint-N folder, or 'latest'."
        )
    return Path(value)


def recorded_fingerprint(checkpoint: Path) -> dict[str, Any] | None:
    """The options of the run that wrote ``checkpoint``: its own copy of the run record, else
    the record of the run folder holding it (a kill right after the save, before the copy);
    None for a checkpoint r2sft did not write."""
    for record in (checkpoint / CONFIG_FILE, checkpoint.parent / CONFIG_FILE):
        if record.is_file():
            return json.loads(record.read_text()).get("resume_fingerprint", {})
    return None


def scheduler_learning_rate(checkpoint: Path) -> float | None:
    """The base learning rate in a Trainer checkpoint's scheduler state (None if unknown)."""
    import torch

    try:
        state = torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=True)
        return float(state["base_lrs"][0])
    except Exception:  # noqa: BLE001  (no file, another layout: nothing to compare)
        return None


def check_resume_options(config: TrainConfig, checkpoint: Path) -> None:
    """A resumed run must keep the options that shape training: the Trainer restores the
    checkpoint's optimizer and schedule, so a new learning rate, say, would be ignored."""
    previous = recorded_fingerprint(checkpoint)
    if previous is None:
        rate = scheduler_learning_rate(checkpoint)
        if rate is not None and not math.isclose(rate, config.learning_rate):
            raise UsedOutputDirError(
                f"{checkpoint} was trained with learning rate {rate:g}, not --learning_rate "
                f"{config.learning_rate:g}; resuming restores its schedule, so the new value "
                "would be ignored. Resume with the same options, or start a new run."
            )
        logger.warning("%s has no r2sft run record: only its learning rate was checked", checkpoint)
        return
    current = resume_fingerprint(config)
    changed = [f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
               for key in sorted(current) if previous.get(key) != current.get(key)]  # fmt: skip
    if changed:
        raise UsedOutputDirError(
            f"resuming {checkpoint} with other options than the run that wrote it "
            f"({'; '.join(changed)}); a resumed run keeps the checkpoint's optimizer and "
            "schedule, so the changes would be ignored or mixed into one run. Resume with the "
            "same options, or start a new run in another --output_dir."
        )


def check_output_dir(config: TrainConfig, checkpoint: Path | None) -> None:
    """A resumed run must keep the options of the run it continues and must not mix its new
    checkpoints with later ones of that run; a fresh run (or one continuing another run's
    checkpoint) needs an unused output folder, or ``--overwrite_output_dir`` (which clears
    the old run)."""
    root = config.output_path
    if checkpoint is not None:
        check_resume_options(config, checkpoint)
        if checkpoint.resolve().parent == root.resolve():
            step = checkpoint_step(checkpoint)
            later = [(n, folder) for n, folder in checkpoint_folders(root) if n > step]
            newer = [folder.name for _, folder in later if complete_checkpoint(folder)]
            if newer and not config.overwrite_output_dir:
                raise UsedOutputDirError(
                    f"resuming {checkpoint} while {root} holds later checkpoints {newer}: the "
                    "new ones would mix with them. Resume from the newest "
                    "(--resume_from_checkpoint latest), or add --overwrite_output_dir to "
                    "delete the later ones."
                )
            for _, folder in later:  # incomplete ones (left by a kill), or --overwrite_output_dir
                logger.warning("removing %s (after the resumed checkpoint)", folder)
                shutil.rmtree(folder, ignore_errors=True)  # every process may get here
            return
    used = [path.name for path in (root / CONFIG_FILE, root / "metrics.jsonl", root / FINAL_DIR)
            if path.exists()] + [folder.name for _, folder in checkpoint_folders(root)]  # fmt: skip
    if not used:
        return
    if not config.overwrite_output_dir:
        raise UsedOutputDirError(
            f"{root} holds another run ({', '.join(used[:5])}). Resume it with "
            "--resume_from_checkpoint latest, start over with --overwrite_output_dir, or "
            "choose another --output_dir."
        )
    for name in used:  # every process may get here: tolerate what another removed
        path = root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class RunRecordCallback(TrainerCallback):
    """Copies the run record (options and resume fingerprint) into every checkpoint, so that
    resuming it, from this folder or another, can check the options it was trained with."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.text = json.dumps(record, indent=2)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            atomic_write_text(folder / CONFIG_FILE, self.text)


class _TrainingFinished(Exception):
    """A resumed run had already reached max_steps: nothing is left to train."""


class StopAtMaxSteps(TrainerCallback):
    """Stops a resumed run that already reached ``max_steps`` before it takes a step.

    The Trainer (transformers 5.24) checks ``max_steps`` only after a step, so resuming a
    checkpoint saved at ``max_steps`` (a kill between the last save and the export, or a
    re-run to export again) would train one step more, unless ``max_steps`` is a whole number
    of epochs. Its weights are loaded by then; :func:`train` exports them as they are.
    """

    def on_step_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise _TrainingFinished


def collected_canvas(config: TrainConfig, dataset: Any) -> dict[str, int]:
    """Canvas of the collect decoder (gen and block length) for what the config leaves
    unset: the tracking decoder and the training targets' blocks default to it."""
    collected = collect_decoder_settings(dataset)
    gen_length = config.gen_length or collected.get("gen_length") or len(dataset[0]["response_ids"])
    block_length = config.block_length or collected.get("block_length") or gen_length
    return {"gen_length": int(gen_length), "block_length": int(block_length)}


def build_model(config: TrainConfig) -> Any:
    """Load the base model (r2sft.specs) and wrap it in LoRA when configured."""
    loaded = load_model(
        config.model, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    if config.lora:
        loaded.model = apply_lora(
            loaded.model,
            loaded.spec,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
        )
        # transformers 5 renamed the switch (the old name stays as an alias until v6).
        if getattr(config, "activation_checkpointing", False) or config.gradient_checkpointing:
            # Frozen embeddings give checkpointed blocks inputs without grad; peft's fix.
            loaded.model.enable_input_require_grads()
    return loaded


def build_tracker(
    config: TrainConfig,
    loaded: Any,
    task: Task,
    decoder: DecoderConfig,
    resuming: bool = False,
    untracked_checkpoint: Path | None = None,
) -> CheckpointTracker:
    examples = task.load(config.eval_split, limit=config.eval_limit) if config.eval_limit else []
    return CheckpointTracker(
        task=task,
        examples=examples,
        decoder=decoder,
        tokenizer=loaded.tokenizer,
        spec=loaded.spec,
        batch_size=config.per_device_eval_batch_size,
        output_dir=config.output_dir,
        # A resumed run tracked step 0 already (and on_train_begin fires before the Trainer
        # restores global_step, so the tracker cannot tell by itself).
        eval_before_training=config.eval_before_training and not resuming,
        untracked_checkpoint=untracked_checkpoint,
    )


def train(config: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
    """Train, track, export (and upload); returns the final folder, the tracked records, the
    trainer and the Hub URL (None without upload). ``callbacks``: extra Trainer callbacks
    (a bench's step timer, say), run after r2sft's own."""
    dataset = load_trajectories(
        config.data_dir, config.max_train_samples, allow_unselected=config.allow_unselected_data
    )
    canvas = collected_canvas(config, dataset)
    config = copy.copy(config)  # the caller's config stays as given
    config.train_block_length = config.train_block_length or canvas["block_length"]
    checkpoint = resolve_checkpoint(config)
    check_output_dir(config, checkpoint)
    if config.push_to_hub:
        check_hub_access(config.hub_model_id)
    # The tracking decoder (the data's canvas, the preset, the options): its errors before
    # the model loads.
    task = config.make_task()
    require_model_download(config.model)  # an unreachable Hub named for the model first
    decoder = config.resolve(task, defaults=canvas, model=config.model)

    loaded = build_model(config)
    # A kill right after a save leaves the checkpoint untracked: track it when resuming.
    untracked = None
    if checkpoint is not None and checkpoint.resolve().parent == config.output_path.resolve():
        untracked = None if (checkpoint / CHECKPOINT_METRICS_FILE).is_file() else checkpoint
    tracker = build_tracker(config, loaded, task, decoder, checkpoint is not None, untracked)
    record = {"config": json.loads(config.to_json_string()),
              "resume_fingerprint": resume_fingerprint(config)}  # fmt: skip
    collator = TrajectoryCollator(
        pad_token_id=loaded.spec.pad_token_id,
        eos_token_id=loaded.spec.eos_token_id,
        supervise_eos_fill=config.supervise_eos_fill,
        pad_to_multiple_of=config.pad_to_multiple_of,
    )
    trainer = R2SFTTrainer(
        model=loaded.model,
        args=config.trainer_arguments(),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=loaded.tokenizer,
        callbacks=[RunRecordCallback(record), tracker, StopAtMaxSteps(), *(callbacks or [])],
        sft_config=config,
        spec=loaded.spec,
    )
    tracker.bind(trainer)
    main = trainer.accelerator.is_main_process
    if main:
        config.output_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config.output_path / CONFIG_FILE, json.dumps(record, indent=2))
        if checkpoint is not None:
            truncate_metrics(config.output_dir, checkpoint_step(checkpoint))
    trainer.accelerator.wait_for_everyone()

    try:
        trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    except _TrainingFinished:
        logger.info("%s is at max_steps already: exporting it without training", checkpoint)
    final = save_final(trainer, config, loaded.tokenizer)
    records = read_metrics(config.output_dir)
    url = None
    if main:
        write_model_card(config, data_summary(dataset))
        if config.push_to_hub:
            url = push_to_hub(final, config.hub_model_id, private=bool(config.hub_private_repo))
            logger.info("uploaded %s to %s", final, url)
    trainer.accelerator.wait_for_everyone()
    return {"final": final, "records": records, "trainer": trainer, "hub_url": url}
