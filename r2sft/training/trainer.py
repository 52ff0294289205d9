"""``R2SFTTrainer``: the transformers Trainer with a masked-diffusion ``compute_loss``.

Why the plain ``transformers.Trainer`` and not TRL's ``SFTTrainer``: SFTTrainer's value is
its dataset preparation (chat templating, tokenisation, packing, completion-only labels) and
its autoregressive loss; a masked-diffusion SFT replaces all of them (the collected data is
already tokenised, the canvas layout is fixed, the loss is ours), so it would only add
switches to turn off. d1, dllm and dParallel subclass
``transformers.Trainer`` for the same reason.

Two hooks:

- :meth:`R2SFTTrainer.compute_loss` dispatches to the configured objective
  (``OBJECTIVE_STEPS``); masking noise is a pure function of (seed, optimizer step, sample,
  position) (:func:`~r2sft.training.objectives.hashed_noise`).
- :meth:`R2SFTTrainer.get_batch_samples` counts the loss denominator of the whole optimizer
  step (all micro-batches, all processes). With it the summed micro-batch losses equal the
  global-batch loss, so gradients do not change with gradient accumulation or process count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

from r2sft.modeling.forward import predict_logits
from r2sft.specs import ModelSpec
from r2sft.training import objectives as obj
from r2sft.training.config import TrainConfig
from r2sft.training.data import SAMPLE_KEY

ObjectiveStep = Callable[
    [Any, dict[str, torch.Tensor], obj.Noise, TrainConfig, ModelSpec], torch.Tensor
]


def llada_step(model, batch, noise, config: TrainConfig, spec: ModelSpec) -> torch.Tensor:
    labels, loss_mask = batch["input_ids"], batch["loss_mask"]
    masked, t = obj.llada_mask(batch["answer_mask"], eps=config.llada_eps, noise=noise)
    noised = obj.apply_mask(labels, masked, spec.mask_token_id)
    logits = predict_logits(model, spec, noised, batch["attention_mask"])
    return obj.llada_row_loss(logits, labels, masked & loss_mask, t)


def trajectory_step(model, batch, noise, config: TrainConfig, spec: ModelSpec) -> torch.Tensor:
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


def certainty_forcing_step(
    model, batch, noise, config: TrainConfig, spec: ModelSpec
) -> torch.Tensor:
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


OBJECTIVE_STEPS: dict[str, ObjectiveStep] = {
    "llada": llada_step,
    "trajectory": trajectory_step,
    "certainty_forcing": certainty_forcing_step,
}


class R2SFTTrainer(Trainer):
    """Trainer whose loss is a masked-diffusion objective on collected trajectories."""

    # compute_loss already normalises by the whole step's denominator: no division by the
    # number of accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, sft_config: TrainConfig, spec: ModelSpec, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sft_config = sft_config
        self.spec = spec
        self.objective_step = OBJECTIVE_STEPS[sft_config.objective]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        mode = self.sft_config.loss_normalisation
        units = torch.zeros((), dtype=torch.long, device=device)
        for batch in batch_samples:
            units = units + obj.normalisation_units(batch["loss_mask"], mode).to(device)
        if self.args.world_size > 1:
            units = self.accelerator.gather(units[None]).sum()
        return batch_samples, units.clamp(min=1)  # an all-empty step has zero loss, not NaN

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config = self.sft_config
        loss_mask = inputs["loss_mask"]
        noise = obj.hashed_noise(
            inputs[SAMPLE_KEY], self.state.global_step, self.args.seed, loss_mask.shape[1]
        )
        row_sums = self.objective_step(model, inputs, noise, config, self.spec)
        if num_items_in_batch is None:  # outside a training step: this batch alone
            units = obj.normalisation_units(loss_mask, config.loss_normalisation)
            loss = obj.normalise_loss(row_sums, loss_mask, config.loss_normalisation, units)
        else:
            loss = obj.normalise_loss(
                row_sums, loss_mask, config.loss_normalisation, num_items_in_batch
            )
            # DDP and DeepSpeed average gradients over processes; the denominator is already
            # global, so undo the average.
            loss = loss * self.args.world_size
        return (loss, None) if return_outputs else loss
