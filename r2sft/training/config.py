"""The configuration of one SFT run (``train.py``): data, objective, LoRA, optimisation, tracking.

Every field is a ``--flag`` of ``train.py`` and a key of its YAML config
(``r2sft.config.parse_config``). Optimisation fields map one to one onto
``transformers.TrainingArguments``; :meth:`TrainConfig.training_arguments` builds them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r2sft.paths import EMBEDDED_MODEL_DIR, EMBEDDED_TASK, REPO_ROOT

# Where the default collect run (`accelerate launch collect.py`) writes; train.py reads
# `<data_dir>/selected` from it.
DEFAULT_COLLECT_DIR = REPO_ROOT / "outputs" / "collect"
DEFAULT_TRAIN_DIR = REPO_ROOT / "outputs" / "train"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    # ------------------------------------------------------------------ model and data
    model: str = field(
        default=str(EMBEDDED_MODEL_DIR),
        metadata=_help("Base model: a local folder or Hub repo id (loaded by r2sft.specs)."),
    )
    dtype: str = field(
        default="float32",
        metadata=_help("Weights dtype for training: float32 | bfloat16 | auto (checkpoint's)."),
    )
    trust_remote_code: bool = field(
        default=False, metadata=_help("Allow the checkpoint's own modeling code (Dream).")
    )
    data_dir: str = field(
        default=str(DEFAULT_COLLECT_DIR),
        metadata=_help(
            "collect.py output folder (its 'selected' trajectories are used) or a "
            "datasets.save_to_disk folder itself."
        ),
    )
    max_train_samples: int | None = field(
        default=None, metadata=_help("Use at most this many trajectories (None: all).")
    )
    output_dir: str = field(
        default=str(DEFAULT_TRAIN_DIR),
        metadata=_help("Checkpoints, logs, metrics.jsonl, metrics.png and final/ go here."),
    )

    # ------------------------------------------------------------------ objective
    objective: Literal["llada", "trajectory", "certainty_forcing"] = field(
        default="trajectory",
        metadata=_help("llada | trajectory (replay the step map) | certainty_forcing (dParallel)."),
    )
    loss_normalization: Literal["sample", "token"] = field(
        default="sample",
        metadata=_help(
            "sample: every trajectory weighs the same (per-row answer-length mean); token: "
            "every answer token weighs the same. Counted over the whole optimizer step."
        ),
    )
    supervise_eos_fill: bool = field(
        default=True,
        metadata=_help(
            "Supervise the end-of-text fill after the answer (LLaDA's convention). When False "
            "the fill is still masked (no length leak) but carries no loss."
        ),
    )
    llada_eps: float = field(default=1e-3, metadata=_help("llada: t ~ U(eps, 1)."))
    trajectory_shrink: int = field(
        default=1, metadata=_help("trajectory: consecutive decode steps merged per training step.")
    )
    trajectory_targets: Literal["step", "block"] = field(
        default="block",
        metadata=_help(
            "trajectory: step (the tokens committed at the replayed step, TraceRL) | block "
            "(every still-masked token of the block being decoded: fewer forwards per block)."
        ),
    )
    trajectory_entropy_weight: float = field(
        default=3.0,
        metadata=_help("trajectory: weight of certainty forcing's entropy term (0: CE only)."),
    )
    cf_block_length: int | None = field(
        default=None,
        metadata=_help("certainty_forcing: block length (None: the collect decoder's)."),
    )
    cf_mask_ratio: float = field(
        default=0.5, metadata=_help("certainty_forcing: share of the block masked in view A.")
    )
    cf_entropy_weight: float = field(
        default=2.0, metadata=_help("certainty_forcing: weight of the entropy term (dParallel: 2).")
    )
    cf_temperature: float = field(
        default=0.5,
        metadata=_help(
            "Temperature of the entropy term (certainty_forcing, trajectory; dParallel: 0.5)."
        ),
    )

    # ------------------------------------------------------------------ LoRA
    lora: bool = field(
        default=False, metadata=_help("Train LoRA adapters (else full fine-tuning).")
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: float = field(default=32.0, metadata=_help("LoRA alpha."))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout."))
    lora_target_modules: str | None = field(
        default=None,
        metadata=_help(
            "Regex or comma list of modules; None: the model family's registry default. A "
            "target matching no module is an error."
        ),
    )

    # ------------------------------------------------------------------ optimisation
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = field(
        default=8000, metadata=_help("Optimizer steps; <= 0 trains num_train_epochs instead.")
    )
    num_train_epochs: float = 1.0
    bf16: bool = field(default=False, metadata=_help("bf16 mixed precision (GPU)."))
    gradient_checkpointing: bool = False
    seed: int = field(default=0, metadata=_help("Data order and masking noise."))
    dataloader_num_workers: int = 0
    pad_to_multiple_of: int | None = field(
        default=None, metadata=_help("Pad canvases to a multiple of this (tensor cores).")
    )

    # ------------------------------------------------------------------ checkpoints, tracking
    save_steps: int = field(
        default=2000,
        metadata=_help("Save (and decode the held-out set) every N optimizer steps."),
    )
    save_total_limit: int | None = None
    logging_steps: int = 100
    report_to: str = field(
        default="tensorboard", metadata=_help("tensorboard | wandb | none | comma list.")
    )
    run_name: str | None = None
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help("A checkpoint folder, or 'latest' for the newest one in output_dir."),
    )
    task: str = field(
        default=EMBEDDED_TASK, metadata=_help("Task of the held-out prompts (r2sft.tasks).")
    )
    task_path: str | None = field(
        default=None, metadata=_help("Local data folder of the task (None: its default).")
    )
    eval_split: str = field(default="dev", metadata=_help("Held-out split decoded at every save."))
    eval_limit: int = field(
        default=48, metadata=_help("Held-out prompts decoded at every save (0: no tracking).")
    )
    eval_decoder: str = field(
        default="r2",
        metadata=_help("Tracking decoder preset: fixed | threshold | factor | r2."),
    )
    eval_batch_size: int = 16
    eval_before_training: bool = field(
        default=True, metadata=_help("Decode the held-out set with the base model (step 0).")
    )
    gen_length: int | None = field(
        default=None, metadata=_help("Canvas length for tracking (None: the collect decoder's).")
    )
    block_length: int | None = field(
        default=None, metadata=_help("Block length for tracking (None: the collect decoder's).")
    )

    # ------------------------------------------------------------------ export
    push_to_hub: str | None = field(
        default=None,
        metadata=_help(
            "Hub repo id to upload final/ to; the token comes from HF_TOKEN or the cached "
            "login, never from the command line."
        ),
    )
    hub_private: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1),
            ("save_steps", self.save_steps >= 1),
            ("trajectory_shrink", self.trajectory_shrink >= 1),
            ("trajectory_entropy_weight", self.trajectory_entropy_weight >= 0),
            ("eval_limit", self.eval_limit >= 0),
            ("lora_r", self.lora_r >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"--{name}={getattr(self, name)!r} is out of range (see --help).")
        if not 0.0 < self.cf_mask_ratio < 1.0:
            raise ValueError(f"--cf_mask_ratio={self.cf_mask_ratio} must be in (0, 1).")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    def training_arguments(self, **overrides: object):
        """The ``transformers.TrainingArguments`` of this run."""
        from transformers import TrainingArguments

        report_to = [r.strip() for r in self.report_to.split(",") if r.strip()]
        values: dict[str, object] = dict(
            output_dir=self.output_dir,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_steps,
            max_grad_norm=self.max_grad_norm,
            optim=self.optim,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_steps=self.max_steps if self.max_steps > 0 else -1,
            num_train_epochs=self.num_train_epochs,
            bf16=self.bf16,
            seed=self.seed,
            dataloader_num_workers=self.dataloader_num_workers,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            logging_steps=self.logging_steps,
            logging_first_step=True,
            report_to=report_to if report_to != ["none"] else "none",
            run_name=self.run_name,
            # The collator needs the trajectory columns the model's forward does not take.
            remove_unused_columns=False,
            # Checkpoints hold the model, the optimizer and the RNG states: resume is exact.
            save_only_model=False,
            # Hub uploads happen once, from final/ (r2sft.training.export), not per checkpoint.
            push_to_hub=False,
        )
        # transformers 5 renamed gradient_checkpointing (kept as a deprecated alias).
        names = {f.name for f in dataclasses.fields(TrainingArguments)}
        checkpointing = (
            "activation_checkpointing"
            if "activation_checkpointing" in names
            else "gradient_checkpointing"
        )
        values[checkpointing] = self.gradient_checkpointing
        values.update(overrides)
        return TrainingArguments(**values)
