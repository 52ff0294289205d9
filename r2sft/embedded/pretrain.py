"""Pretraining of the embedded tiny LLaDA from scratch on generated arithmetic problems.

A plain torch loop rather than ``r2sft.training`` / the transformers Trainer: this trains a
fresh model on an endless stream of generated problems (no data set, no trajectories, no
distribution), and a 40-line loop keeps it deterministic from one seed and cheap on two
CPU cores. The objective is the same LLaDA SFT loss the fine-tuning pipeline uses.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from r2sft.embedded.data import iter_batches
from r2sft.embedded.tokenizer import EOT_TOKEN, build_tokenizer, save_tokenizer
from r2sft.modeling import LLaDAConfig, LLaDAModelLM
from r2sft.paths import EMBEDDED_GEN_LENGTH
from r2sft.training.objectives import llada_loss, llada_mask

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Everything that defines the embedded model; the defaults reproduce the shipped one."""

    seed: int = 0
    steps: int = 9000  # length of the learning-rate schedule
    # Stop early at this step (None: at ``steps``); the schedule still spans ``steps``, so a
    # stopped run equals the first ``stop_step`` steps of the full one.
    stop_step: int | None = None
    batch_size: int = 32
    # Batches drawn together and grouped by prompt length (less padding; see iter_batches).
    pool_batches: int = 8
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    # Decoupled (AdamW) decay on every weight. In 2000-step one-seed trials 0.3 reached a loss
    # of 0.21 and 26% of results right with the rest of the answer masked, against 0.37 and
    # 11% for 0.01 (0.1: 0.24 and 19%); the arithmetic tables are what the model learns last.
    weight_decay: float = 0.3
    grad_clip: float = 1.0
    # Lower bound of the masking ratio t, so the 1/t weight is at most 1/eps. LLaDA uses
    # 1e-3; at batch 32 the rare rows with t near 0 (one masked token weighted ~1000x) make
    # the gradient noisy. In short one-seed trials eps 0.1 learned to copy numbers fastest.
    eps: float = 0.1
    gen_length: int = EMBEDDED_GEN_LENGTH
    # Architecture (LLaDA config names).
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden_size: int = 384
    vocab_size: int = 640  # BPE size cap; the generated text saturates it near 530
    max_sequence_length: int = 256
    # Bookkeeping.
    threads: int = 2
    log_every: int = 50
    save_every: int = 500


def model_config(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> LLaDAConfig:
    """The LLaDA config of the embedded model, its special ids taken from ``tokenizer``."""
    llada_config = LLaDAConfig(
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_heads,
        mlp_hidden_size=config.mlp_hidden_size,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=config.max_sequence_length,
        rope=True,
        rope_theta=10000.0,
        weight_tying=False,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        init_device=None,
        precision=None,
    )
    # Set after construction: transformers drops token-id kwargs it considers generation ones.
    llada_config.bos_token_id = tokenizer.bos_token_id
    llada_config.eot_token_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    return llada_config


def _lr_factor(step: int, config: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def _save_checkpoint(
    model: LLaDAModelLM,
    optimizer: torch.optim.Optimizer,
    noise: torch.Generator,
    step: int,
    checkpoint_dir: Path,
) -> None:
    """Model folder (loadable by from_pretrained) plus what a resumed run needs."""
    model.save_pretrained(checkpoint_dir)
    state = {"step": step, "optimizer": optimizer.state_dict(), "noise": noise.get_state()}
    torch.save(state, checkpoint_dir / "training_state.pt")


def _resume(
    model: LLaDAModelLM,
    optimizer: torch.optim.Optimizer,
    noise: torch.Generator,
    checkpoint_dir: Path,
) -> int:
    model.load_state_dict(load_file(checkpoint_dir / "model.safetensors"))
    state = torch.load(checkpoint_dir / "training_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    noise.set_state(state["noise"])
    return int(state["step"])


def pretrain(config: PretrainConfig, out_dir: Path, resume: bool = False) -> LLaDAModelLM:
    """Train the embedded model and save model + tokenizer under ``out_dir``.

    Checkpoints every ``save_every`` steps into ``out_dir/checkpoint`` (resumable with
    ``resume=True``); the final model goes to ``out_dir`` itself. The data stream, masking
    noise and initialisation all derive from ``config.seed``.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer(vocab_size=config.vocab_size, seed=config.seed)
    model = LLaDAModelLM(model_config(config, tokenizer))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay
    )
    noise = torch.Generator().manual_seed(config.seed + 1)  # masking ratios and positions
    checkpoint_dir = out_dir / "checkpoint"
    start_step = 0
    if resume and (checkpoint_dir / "training_state.pt").exists():
        start_step = _resume(model, optimizer, noise, checkpoint_dir)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("embedded model: %.2fM parameters, starting at step %d", num_params / 1e6,
                start_step)  # fmt: skip

    # Skipping consumed batches keeps a resumed run on the same data as an unbroken one.
    batches = iter_batches(
        tokenizer, config.batch_size, config.gen_length, config.seed, config.pool_batches
    )
    for _ in range(start_step):
        next(batches)
    mask_id = tokenizer.mask_token_id
    model.train()
    started = time.time()
    running = None
    end_step = config.steps if config.stop_step is None else min(config.stop_step, config.steps)
    progress = tqdm(range(start_step, end_step), desc="pretrain", mininterval=10)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        batch = next(batches)
        masked, t = llada_mask(batch.answer_mask, noise, config.eps)
        noised = batch.input_ids.masked_fill(masked, mask_id)
        logits = model(noised, attention_mask=batch.attention_mask).logits
        loss = llada_loss(logits, batch.input_ids, masked, t, batch.answer_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % config.log_every == 0:
            elapsed = time.time() - started
            record = {"step": step + 1, "loss": round(running, 4), "lr": group["lr"],
                      "elapsed_s": round(elapsed, 1)}  # fmt: skip
            logger.info(json.dumps(record))
        # Also at a stop_step on the grid: a stopped run can be resumed (even with a longer
        # schedule) exactly where it stopped.
        if (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            _save_checkpoint(model, optimizer, noise, step + 1, checkpoint_dir)
            save_tokenizer(tokenizer, checkpoint_dir)  # so a checkpoint is a usable model folder
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    (out_dir / "training_args.json").write_text(json.dumps(asdict(config), indent=2))
    return model
