"""One SFT run end to end: data, model (LoRA or full), Trainer, tracking, export, Hub upload."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from r2sft.training.config import TrainConfig
from r2sft.training.data import (
    TrajectoryCollator,
    collect_decoder_settings,
    data_summary,
    load_trajectories,
)
from r2sft.training.export import push_to_hub, save_final, write_model_card
from r2sft.training.tracking import CheckpointTracker, read_metrics, truncate_metrics
from r2sft.training.trainer import R2SFTTrainer

logger = logging.getLogger("r2sft.train")


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """``--resume_from_checkpoint``: a folder, or 'latest' (newest checkpoint in output_dir)."""
    from transformers.trainer_utils import get_last_checkpoint

    value = config.resume_from_checkpoint
    if value is None or value.lower() in ("", "none", "false"):
        return None
    if value.lower() in ("latest", "last", "true"):
        found = get_last_checkpoint(config.output_dir) if config.output_path.is_dir() else None
        if found is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value}: no checkpoint-* folder in {config.output_dir}."
            )
        return found
    if not Path(value, "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a Trainer checkpoint (no trainer_state.json)."
        )
    return value


def fill_decoder_defaults(config: TrainConfig, dataset: Any) -> TrainConfig:
    """Take gen / block length from the collect decoder when the config leaves them unset."""
    collected = collect_decoder_settings(dataset)
    gen_length = config.gen_length or collected.get("gen_length") or len(dataset[0]["response_ids"])
    block_length = config.block_length or collected.get("block_length") or gen_length
    return dataclasses.replace(
        config,
        gen_length=int(gen_length),
        block_length=int(block_length),
        cf_block_length=int(config.cf_block_length or block_length),
    )


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
        if config.gradient_checkpointing:
            # Frozen embeddings give checkpointed blocks inputs without grad; peft's fix.
            loaded.model.enable_input_require_grads()
    return loaded


def build_tracker(config: TrainConfig, loaded: Any, resuming: bool = False) -> CheckpointTracker:
    from r2sft.decoding import decoder_config
    from r2sft.tasks import get_task

    options = {"path": config.task_path} if config.task_path else {}
    task = get_task(config.task, **options)
    examples = task.load(config.eval_split, limit=config.eval_limit) if config.eval_limit else []
    decoder = decoder_config(
        config.eval_decoder, gen_length=config.gen_length, block_length=config.block_length
    )
    return CheckpointTracker(
        task=task,
        examples=examples,
        decoder=decoder,
        tokenizer=loaded.tokenizer,
        spec=loaded.spec,
        batch_size=config.eval_batch_size,
        output_dir=config.output_dir,
        # A resumed run tracked step 0 already (and on_train_begin fires before the Trainer
        # restores global_step, so the tracker cannot tell by itself).
        eval_before_training=config.eval_before_training and not resuming,
    )


def training_overrides() -> dict[str, Any]:
    """Device settings: CPU-only machines train over gloo (stack-notes: DDP and DeepSpeed)."""
    import os

    if torch.cuda.is_available():
        return {}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return {"ddp_backend": "gloo"}
    return {"use_cpu": True}


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, track, export (and upload); returns the tracked records and the final folder."""
    dataset = load_trajectories(config.data_dir, config.max_train_samples)
    config = fill_decoder_defaults(config, dataset)
    checkpoint = resolve_checkpoint(config)
    args = config.training_arguments(**training_overrides())

    loaded = build_model(config)
    tracker = build_tracker(config, loaded, resuming=checkpoint is not None)
    collator = TrajectoryCollator(
        pad_token_id=loaded.spec.pad_token_id,
        eos_token_id=loaded.spec.eos_token_id,
        supervise_eos_fill=config.supervise_eos_fill,
        pad_to_multiple_of=config.pad_to_multiple_of,
    )
    trainer = R2SFTTrainer(
        model=loaded.model,
        args=args,
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
        (config.output_path / "r2sft_train_config.json").write_text(
            json.dumps(dataclasses.asdict(config), indent=2)
        )
        if checkpoint is not None:
            step = json.loads(Path(checkpoint, "trainer_state.json").read_text())["global_step"]
            truncate_metrics(config.output_dir, step)
        elif (config.output_path / "metrics.jsonl").exists():
            truncate_metrics(config.output_dir, -1)  # a fresh run in a used folder
    trainer.accelerator.wait_for_everyone()

    trainer.train(resume_from_checkpoint=checkpoint)
    final = save_final(trainer, config, loaded.tokenizer)
    records = read_metrics(config.output_dir)
    if main:
        write_model_card(config, data_summary(dataset))
        if config.push_to_hub:
            url = push_to_hub(final, config.push_to_hub, private=config.hub_private)
            logger.info("uploaded %s to %s", final, url)
        summary = {"final": str(final), "tracked": records}
        print(json.dumps(summary, indent=2))
    trainer.accelerator.wait_for_everyone()
    return {"final": final, "records": records, "trainer": trainer}
