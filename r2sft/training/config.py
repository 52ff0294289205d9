"""The configuration of one SFT run (``train.py``): a ``transformers.TrainingArguments``.

:class:`TrainConfig` subclasses ``TrainingArguments`` (as TRL's ``SFTConfig`` does), so every
Trainer flag (``--learning_rate``, ``--deepspeed``, ``--bf16``, ``--save_total_limit``, ...)
works as is; it declares only r2sft's own fields (data, objective, LoRA, tracking) and the
defaults that differ from the Trainer's. The tracking decode takes the task and decoder
options every entry point has (:class:`~r2sft.tasks.TaskArgs`,
:class:`~r2sft.decoding.DecoderArgs`). Every field is a ``--flag`` of ``train.py`` and a key
of its YAML config (``r2sft.config.parse_config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from transformers import TrainingArguments

from r2sft.config import option
from r2sft.decoding import DecoderArgs
from r2sft.paths import DEFAULT_COLLECT_DIR, DEFAULT_TRAIN_DIR, EMBEDDED_MODEL_DIR
from r2sft.tasks import TaskArgs
from r2sft.training.registry import OBJECTIVES, get_objective, objective_help, objective_options


def _help(text: str, group: str | None = None) -> dict[str, str]:
    return option(text, group)


@dataclass
class TrainConfig(TrainingArguments, TaskArgs, DecoderArgs, *objective_options()):
    """The options of ``train.py``: r2sft's fields and transformers' TrainingArguments."""

    # Each objective's own options (llada_eps, trajectory_*, cf_*) are declared on its
    # registry entry (r2sft.training.registry) and inherited here.
    # --help: fields without a group of their own are training options.
    _argument_group_name = "training"

    # ------------------------------------------------------------------ model and data
    model: str = field(
        default=str(EMBEDDED_MODEL_DIR),
        metadata=_help(
            "Base model: a local folder or Hub repo id (loaded by r2sft.specs).", "model and data"
        ),
    )
    dtype: str = field(
        default="float32",
        metadata=_help(
            "Weights dtype for training: float32 | bfloat16 | auto (checkpoint's).",
            "model and data",
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=_help(
            "Allow the checkpoint's own modeling code (families without an r2sft class; "
            "LLaDA and Dream always load with r2sft's own).",
            "model and data",
        ),
    )
    data_dir: str = field(
        default=str(DEFAULT_COLLECT_DIR),
        metadata=_help(
            "collect.py output folder (its 'selected' trajectories are used) or a "
            "datasets.save_to_disk folder itself.",
            "model and data",
        ),
    )
    max_train_samples: int | None = field(
        default=None,
        metadata=_help("Use at most this many trajectories (None: all).", "model and data"),
    )
    output_dir: str = field(
        default=str(DEFAULT_TRAIN_DIR),
        metadata=_help("Checkpoints, logs, metrics.jsonl, metrics.png and final/ go here."),
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata=_help("Start a fresh run in a used output_dir, deleting its checkpoints, "
                       "metrics and final/ (else a used folder is an error); with "
                       "--resume_from_checkpoint, delete the checkpoints after it."),
    )  # fmt: skip
    allow_unselected_data: bool = field(
        default=False,
        metadata=_help("Train on data that is not a selected set (incorrect rows or several "
                       "rows per prompt), e.g. collect.py's candidates/ on purpose.",
                       "model and data"),
    )  # fmt: skip

    # ------------------------------------------------------------------ objective
    objective: str = field(
        default="trajectory",
        metadata=_help(objective_help()),
    )
    loss_normalisation: Literal["sample", "token"] = field(
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
    train_block_length: int | None = field(
        default=None,
        metadata=_help(
            "Block structure of the training targets: trajectory block targets and certainty "
            "forcing's blocks (None: the collect decoder's block length)."
        ),
    )
    entropy_temperature: float = field(
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

    pad_to_multiple_of: int | None = field(
        default=None, metadata=_help("Pad canvases to a multiple of this (tensor cores).")
    )

    # ------------------------------------------------------------------ tracking
    # (the task and decoder fields come from TaskArgs / DecoderArgs; gen_length and
    # block_length of the tracking decoder default to the collect decoder's)
    eval_split: str = field(
        default="dev", metadata=_help("Held-out split decoded at every save.", "tracking")
    )
    eval_limit: int = field(
        default=48,
        metadata=_help("Held-out prompts decoded at every save (0: no tracking).", "tracking"),
    )
    eval_before_training: bool = field(
        default=True,
        metadata=_help("Decode the held-out set with the base model (step 0).", "tracking"),
    )

    # ------------------------------------------------------------------ Trainer defaults
    # that differ from transformers' (everything else is TrainingArguments' own)
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "constant_with_warmup"
    optim: str = "adamw_torch"
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = field(
        default=16,
        metadata=_help("Sequences per forward batch of the tracking decode.", "tracking"),
    )
    max_steps: int = field(
        default=8000, metadata=_help("Optimizer steps; <= 0 trains num_train_epochs instead.")
    )
    save_steps: float = field(
        default=2000, metadata=_help("Save (and decode the held-out set) every N optimizer steps.")
    )
    logging_steps: float = 100
    logging_first_step: bool = True
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata=_help("tensorboard | wandb | none | comma list.")
    )
    seed: int = field(default=0, metadata=_help("Data order and masking noise."))
    # The collator needs the trajectory columns the model's forward does not take.
    remove_unused_columns: bool = False
    hub_private_repo: bool | None = True

    def __post_init__(self) -> None:
        self.check_task_args()
        self.check_decoder_args()
        checks = [
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1),
            ("save_steps", self.save_steps > 0),
            ("eval_limit", self.eval_limit >= 0),
            ("lora_r", self.lora_r >= 1),
            ("train_block_length", self.train_block_length is None or self.train_block_length >= 1),
            ("max_train_samples", self.max_train_samples is None or self.max_train_samples >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"--{name}={getattr(self, name)!r} is out of range (see --help).")
        get_objective(self.objective)  # a clear error for an unknown name
        for entry in OBJECTIVES.values():  # every objective's options, as one config holds them
            entry.check_options(self)
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id REPO (the token: HF_TOKEN).")
        if self.max_steps <= 0:
            self.max_steps = -1  # the Trainer's "train num_train_epochs" value
        if isinstance(self.report_to, str) and "," in self.report_to:
            self.report_to = [name.strip() for name in self.report_to.split(",") if name.strip()]
        self._device_defaults()
        super().__post_init__()

    def _device_defaults(self) -> None:
        """CPU-only machines: the Trainer on CPU, or gloo under DeepSpeed (DeepSpeed refuses
        ``use_cpu``). Set before TrainingArguments sets up the device."""
        import torch

        if torch.cuda.is_available():
            return
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            self.ddp_backend = self.ddp_backend or "gloo"
        else:
            self.use_cpu = True

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    def trainer_arguments(self) -> TrainConfig:
        """The arguments handed to the Trainer: these, with Hub uploads off (r2sft uploads
        ``final/`` once, after training, instead of every checkpoint)."""
        import copy

        arguments = copy.copy(self)
        arguments.push_to_hub = False
        return arguments


# r2sft's own fields that determine what a run learns: a resumed run must keep them (and the
# optimisation fields of TrainingArguments in RESUME_TRAINER_FIELDS).
RESUME_TRAINER_FIELDS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_grad_norm", "optim",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed",
    "bf16", "fp16",
)  # fmt: skip
_TRACKING_FIELDS = {"eval_split", "eval_limit", "eval_before_training", "overwrite_output_dir"}


def resume_fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The options a resumed run must share with the run it continues."""
    inherited = {f.name for cls in (TrainingArguments, TaskArgs, DecoderArgs) for f in fields(cls)}
    own = [f.name for f in fields(TrainConfig) if f.name not in inherited | _TRACKING_FIELDS]
    names = [*own, *RESUME_TRAINER_FIELDS]
    fingerprint = {name: _plain(getattr(config, name, None)) for name in names}
    for name in ("model", "data_dir"):  # one folder, however it is spelled
        if fingerprint[name] and Path(fingerprint[name]).exists():
            fingerprint[name] = str(Path(fingerprint[name]).resolve())
    return fingerprint


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # enums (lr_scheduler_type, optim) as strings
