"""``R2SFTTrainer``: the transformers Trainer with a masked-diffusion ``compute_loss``.

Why the plain ``transformers.Trainer`` and not TRL's ``SFTTrainer``: SFTTrainer's value is
its dataset preparation (chat templating, tokenisation, packing, completion-only labels) and
its autoregressive loss; a masked-diffusion SFT replaces all of them (the collected data is
already tokenised, the canvas layout is fixed, the loss is ours), so it would only add
switches to turn off. d1, dllm and dParallel subclass
``transformers.Trainer`` for the same reason.

Two hooks:

- :meth:`R2SFTTrainer.compute_loss` dispatches to the configured objective's step
  (:data:`~r2sft.training.registry.OBJECTIVES`); masking noise is a pure function of (seed,
  optimizer step, sample, position) (:func:`~r2sft.training.objectives.hashed_noise`).
- :meth:`R2SFTTrainer.get_batch_samples` counts the loss denominator of the whole optimizer
  step (all micro-batches, all processes). With it the summed micro-batch losses equal the
  global-batch loss, so gradients do not change with gradient accumulation or process count.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from r2sft.specs import ModelSpec
from r2sft.training import objectives as obj
from r2sft.training.config import TrainConfig
from r2sft.training.data import SAMPLE_KEY
from r2sft.training.registry import get_objective


class R2SFTTrainer(Trainer):
    """Trainer whose loss is a masked-diffusion objective on collected trajectories."""

    # compute_loss already normalises by the whole step's denominator: no division by the
    # number of accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, sft_config: TrainConfig, spec: ModelSpec, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sft_config = sft_config
        self.spec = spec
        self.objective_step = get_objective(sft_config.objective).step

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
