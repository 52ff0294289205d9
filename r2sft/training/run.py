"""One SFT run end to end: data, model (LoRA or full), Trainer, tracking, export, Hub upload.

Every input is checked before the model loads: the data must be a selected set, a resumed
run must keep the options of the run it continues, and a fresh run needs an unused output
folder (or ``--overwrite_output_dir``).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from r2sft.training.config import TrainConfig, resume_fingerprint
from r2sft.training.data import (
    TrajectoryCollator,
    collect_decoder_settings,
    data_summary,
    load_trajectories,
)
from r2sft.training.export import FINAL_DIR, push_to_hub, save_final, write_model_card
from r2sft.training.tracking import CheckpointTracker, read_metrics, truncate_metrics
from r2sft.training.trainer import R2SFTTrainer

logger = logging.getLogger("r2sft.train")

CONFIG_FILE = "r2sft_train_config.json"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")  # fmt: skip


class UsedOutputDirError(FileExistsError):
    """A fresh run was pointed at a folder holding another run, or a resume changed options."""


def complete_checkpoint(folder: Path) -> bool:
    """Whether a checkpoint folder was fully written: trainer state and weights present (a
    kill during a save leaves a folder without them)."""
    has_weights = any((folder / name).is_file() for name in _WEIGHT_FILES)
    has_weights = has_weights or any(folder.glob("global_step*"))  # DeepSpeed's own layout
    return (folder / "trainer_state.json").is_file() and has_weights


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir``, None when there is none."""
    if not output_dir.is_dir():
        return None
    found = []
    for folder in output_dir.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and folder.is_dir() and complete_checkpoint(folder):
            found.append((int(step), folder))
    return max(found)[1] if found else None


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """``--resume_from_checkpoint``: a folder, or 'latest' (newest complete checkpoint)."""
    value = config.resume_from_checkpoint
    if value is None or value.lower() in ("", "none", "false"):
        return None
    if value.lower() in ("latest", "last", "true"):
        found = latest_checkpoint(config.output_path)
        if found is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value}: no checkpoint (no complete checkpoint-* "
                f"folder) in {config.output_dir}."
            )
        return str(found)
    if not complete_checkpoint(Path(value)):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete Trainer checkpoint (needs "
            "trainer_state.json and the weights)."
        )
    return value


def check_output_dir(config: TrainConfig, resuming: bool) -> None:
    """A resumed run must keep the options of the run it continues; a fresh run needs an
    unused output folder, or ``--overwrite_output_dir`` (which clears the old run)."""
    root = config.output_path
    saved = root / CONFIG_FILE
    if resuming:
        if not saved.is_file():
            return  # a checkpoint from elsewhere: nothing recorded to compare with
        previous = json.loads(saved.read_text()).get("resume_fingerprint", {})
        current = resume_fingerprint(config)
        changed = [f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
                   for key in sorted(current) if previous.get(key) != current.get(key)]  # fmt: skip
        if changed:
            raise UsedOutputDirError(
                f"resuming {root} with other options than the run that wrote it "
                f"({'; '.join(changed)}). Resume with the same options, or start a new run "
                "in another --output_dir."
            )
        return
    used = [path.name for path in (saved, root / "metrics.jsonl", root / FINAL_DIR)
            if path.exists()] + sorted(path.name for path in root.glob("checkpoint-*"))  # fmt: skip
    if not used:
        return
    if not config.overwrite_output_dir:
        raise UsedOutputDirError(
            f"{root} holds another run ({', '.join(used[:5])}). Resume it with "
            "--resume_from_checkpoint latest, start over with --overwrite_output_dir, or "
            "choose another --output_dir."
        )
    for name in used:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def collected_canvas(config: TrainConfig, dataset: Any) -> dict[str, int]:
    """Canvas of the collect decoder (gen and block length) for what the config leaves
    unset: the tracking decoder and the training targets' blocks default to it."""
    collected = collect_decoder_settings(dataset)
    gen_length = config.gen_length or collected.get("gen_length") or len(dataset[0]["response_ids"])
    block_length = config.block_length or collected.get("block_length") or gen_length
    return {"gen_length": int(gen_length), "block_length": int(block_length)}


def build_model(config: TrainConfig) -> Any:
    """Load the base model (r2sft.specs) and wrap it in LoRA when configured."""
    from r2sft.specs import apply_lora, load_model

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
    config: TrainConfig, loaded: Any, canvas: dict[str, int], resuming: bool = False
) -> CheckpointTracker:
    task = config.make_task()
    examples = task.load(config.eval_split, limit=config.eval_limit) if config.eval_limit else []
    return CheckpointTracker(
        task=task,
        examples=examples,
        decoder=config.resolve(task, defaults=canvas, model=config.model),
        tokenizer=loaded.tokenizer,
        spec=loaded.spec,
        batch_size=config.per_device_eval_batch_size,
        output_dir=config.output_dir,
        # A resumed run tracked step 0 already (and on_train_begin fires before the Trainer
        # restores global_step, so the tracker cannot tell by itself).
        eval_before_training=config.eval_before_training and not resuming,
    )


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, track, export (and upload); returns the final folder, the tracked records, the
    trainer and the Hub URL (None without upload)."""
    dataset = load_trajectories(
        config.data_dir, config.max_train_samples, allow_unselected=config.allow_unselected_data
    )
    canvas = collected_canvas(config, dataset)
    config = copy.copy(config)  # the caller's config stays as given
    config.train_block_length = config.train_block_length or canvas["block_length"]
    checkpoint = resolve_checkpoint(config)
    check_output_dir(config, resuming=checkpoint is not None)

    loaded = build_model(config)
    tracker = build_tracker(config, loaded, canvas, resuming=checkpoint is not None)
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
        callbacks=[tracker],
        sft_config=config,
        spec=loaded.spec,
    )
    tracker.bind(trainer)
    main = trainer.accelerator.is_main_process
    if main:
        config.output_path.mkdir(parents=True, exist_ok=True)
        record = {"config": json.loads(config.to_json_string()),
                  "resume_fingerprint": resume_fingerprint(config)}  # fmt: skip
        (config.output_path / CONFIG_FILE).write_text(json.dumps(record, indent=2))
        if checkpoint is not None:
            step = json.loads(Path(checkpoint, "trainer_state.json").read_text())["global_step"]
            truncate_metrics(config.output_dir, step)
    trainer.accelerator.wait_for_everyone()

    trainer.train(resume_from_checkpoint=checkpoint)
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
