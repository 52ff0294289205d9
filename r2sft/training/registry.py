"""The SFT objectives ``train.py --objective`` offers, each a registry entry with its own facts.

An :class:`Objective` carries everything the rest of the pipeline needs to know about it:

- ``step``: the loss of one micro-batch, per row (masking + forward + loss, built from the
  pure tensor functions of :mod:`r2sft.training.objectives`);
- ``options``: a dataclass of its own ``train.py`` options (a ``--flag`` and YAML key each;
  :class:`~r2sft.training.config.TrainConfig` inherits every entry's options) and their
  range checks;
- ``summary`` (for ``--help``) and ``describe`` (the model card's line for a run).

Adding an objective: its options dataclass, step and description (here or in a file of its
own) and one :func:`register_objective` line; its tests. An entry that is incomplete, or
whose options clash with another's, fails when it registers, at import, before any run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from r2sft.modeling.forward import predict_logits
from r2sft.specs import ModelSpec
from r2sft.training import objectives as obj

# (model, batch, noise, the run's TrainConfig, spec) -> per-row loss sums (B,), normalised by
# the trainer (objectives.normalise_loss).
ObjectiveStep = Callable[[Any, dict[str, torch.Tensor], obj.Noise, Any, ModelSpec], torch.Tensor]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check_ranges(config: Any, checks: dict[str, bool]) -> None:
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"--{name}={getattr(config, name)!r} is out of range (see --help).")


@dataclass(frozen=True)
class Objective:
    """One SFT objective: its name, loss step, options and how the model card names it.

    Attributes:
        name: the ``--objective`` value.
        summary: a few words for ``--help``.
        step: the micro-batch loss per row (:data:`ObjectiveStep`).
        options: a dataclass of the objective's own options (every field with a default);
            an optional ``check_options(config)`` method range-checks them at parse time.
        describe: the model card's objective line, from the run's config.
    """

    name: str
    summary: str
    step: ObjectiveStep
    options: type
    describe: Callable[[Any], str]

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not self.summary:
            problems.append("a name and a summary")
        if not callable(self.step) or not callable(self.describe):
            problems.append("a step and a describe function")
        if not dataclasses.is_dataclass(self.options):
            problems.append("an options dataclass")
        else:
            missing = [f.name for f in dataclasses.fields(self.options)
                       if f.default is dataclasses.MISSING
                       and f.default_factory is dataclasses.MISSING]  # fmt: skip
            if missing:
                problems.append(f"defaults for its options {missing}")
        if problems:
            raise ValueError(f"objective {self.name!r} needs {', '.join(problems)}.")

    def check_options(self, config: Any) -> None:
        """Range-check this objective's options on ``config`` (a TrainConfig)."""
        check = getattr(self.options, "check_options", None)
        if check is not None:
            check(config)


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to :data:`OBJECTIVES`; a second entry of one name, or options that
    another entry declares too, is an error."""
    if objective.name in OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} is registered twice")
    own = {f.name for f in dataclasses.fields(objective.options)}
    for other in OBJECTIVES.values():
        shared = own & {f.name for f in dataclasses.fields(other.options)}
        if shared:
            raise ValueError(
                f"objective {objective.name!r} declares options {sorted(shared)} that "
                f"objective {other.name!r} declares too; options common to several "
                "objectives belong to TrainConfig."
            )
    # The --help heading of its options (r2sft.config), unless the options name their own.
    if "_argument_group_name" not in vars(objective.options):
        objective.options._argument_group_name = "objective options"
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (a clear error naming the valid ones)."""
    if name not in OBJECTIVES:
        raise ValueError(f"--objective {name!r} is unknown; choose one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]


def objective_help() -> str:
    """``--objective``'s help: every registered objective with its summary."""
    return " | ".join(f"{entry.name} ({entry.summary})" for entry in OBJECTIVES.values()) + "."


# --------------------------------------------------------------------------- llada


@dataclass
class LladaOptions:
    llada_eps: float = field(default=1e-3, metadata=_help("llada: t ~ U(eps, 1)."))


def llada_step(model, batch, noise, config: Any, spec: ModelSpec) -> torch.Tensor:
    labels, loss_mask = batch["input_ids"], batch["loss_mask"]
    masked, t = obj.llada_mask(batch["answer_mask"], eps=config.llada_eps, noise=noise)
    noised = obj.apply_mask(labels, masked, spec.mask_token_id)
    logits = predict_logits(model, spec, noised, batch["attention_mask"])
    return obj.llada_row_loss(logits, labels, masked & loss_mask, t)


register_objective(
    Objective(
        name="llada",
        summary="LLaDA SFT",
        step=llada_step,
        options=LladaOptions,
        describe=lambda config: (
            f"LLaDA SFT (t ~ U({config.llada_eps}, 1), CE / t on masked answer tokens)"
        ),
    )
)


# --------------------------------------------------------------------------- trajectory


@dataclass
class TrajectoryOptions:
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

    @staticmethod
    def check_options(config: Any) -> None:
        _check_ranges(
            config,
            {
                "trajectory_shrink": config.trajectory_shrink >= 1,
                "trajectory_entropy_weight": config.trajectory_entropy_weight >= 0,
            },
        )


def trajectory_step(model, batch, noise, config: Any, spec: ModelSpec) -> torch.Tensor:
    labels, loss_mask = batch["input_ids"], batch["loss_mask"]
    masked, targets, n_groups = obj.trajectory_mask(
        batch["step_map"],
        batch["answer_mask"],
        shrink=config.trajectory_shrink,
        noise=noise,
        block_length=config.train_block_length if config.trajectory_targets == "block" else None,
    )
    noised = obj.apply_mask(labels, masked, spec.mask_token_id)
    logits = predict_logits(model, spec, noised, batch["attention_mask"])
    return obj.trajectory_row_loss(
        logits,
        labels,
        targets & loss_mask,
        n_groups,
        entropy_weight=config.trajectory_entropy_weight,
        temperature=config.entropy_temperature,
    )


register_objective(
    Objective(
        name="trajectory",
        summary="replay the step map",
        step=trajectory_step,
        options=TrajectoryOptions,
        describe=lambda config: (
            f"trajectory replay of the selected decodes' step maps (shrink "
            f"{config.trajectory_shrink}, {config.trajectory_targets} targets, entropy weight "
            f"{config.trajectory_entropy_weight})"
        ),
    )
)


# --------------------------------------------------------------------------- certainty forcing


@dataclass
class CertaintyForcingOptions:
    cf_mask_ratio: float = field(
        default=0.5, metadata=_help("certainty_forcing: share of the block masked in view A.")
    )
    cf_entropy_weight: float = field(
        default=2.0, metadata=_help("certainty_forcing: weight of the entropy term (dParallel: 2).")
    )

    @staticmethod
    def check_options(config: Any) -> None:
        if not 0.0 < config.cf_mask_ratio < 1.0:
            raise ValueError(f"--cf_mask_ratio={config.cf_mask_ratio} must be in (0, 1).")


def certainty_forcing_step(model, batch, noise, config: Any, spec: ModelSpec) -> torch.Tensor:
    labels, loss_mask = batch["input_ids"], batch["loss_mask"]
    masked_a, masked_b, targets_a, targets_b, n_blocks = obj.certainty_forcing_mask(
        batch["answer_mask"], config.train_block_length, config.cf_mask_ratio, noise=noise
    )
    # Both complementary views in one forward pass (one kernel launch per layer).
    noised = torch.cat(
        [
            obj.apply_mask(labels, masked_a, spec.mask_token_id),
            obj.apply_mask(labels, masked_b, spec.mask_token_id),
        ]
    )
    logits_a, logits_b = predict_logits(
        model, spec, noised, batch["attention_mask"].repeat(2, 1)
    ).chunk(2)
    return obj.certainty_forcing_row_loss(
        logits_a,
        logits_b,
        labels,
        targets_a & loss_mask,
        targets_b & loss_mask,
        n_blocks,
        entropy_weight=config.cf_entropy_weight,
        temperature=config.entropy_temperature,
    )


register_objective(
    Objective(
        name="certainty_forcing",
        summary="dParallel",
        step=certainty_forcing_step,
        options=CertaintyForcingOptions,
        describe=lambda config: (
            f"certainty forcing (dParallel; block {config.train_block_length}, entropy weight "
            f"{config.cf_entropy_weight}, temperature {config.entropy_temperature})"
        ),
    )
)


def objective_options() -> tuple[type, ...]:
    """Every registered objective's options dataclass (TrainConfig inherits them all)."""
    return tuple(entry.options for entry in OBJECTIVES.values())
