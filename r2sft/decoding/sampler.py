"""Batched masked-diffusion decoding with the baseline policies and the R² rules.

Prompts of different lengths are left-padded into one canvas ``[pad | prompt | MASK x G]``
with an attention mask, so every row's generated region sits at the same columns. Each
row moves through its own blocks and leaves the forward batch as soon as its canvas is
full; the only host sync per forward is reading which rows are still running (and, with
a KV cache, which ones open a block). Why not a library: transformers' ``generate`` is
autoregressive, and the public dLLM samplers (LLaDA, Fast-dLLM, R²-dLLM) are batch-size-1
loops with a sync per position; their cached samplers need equal prompt lengths or break on
batches.

Logits come from :func:`r2sft.modeling.forward.predict_logits`, for the active block's
positions only. With ``config.cache`` (prefix / dual) every row's forward that opens a block
(or refreshes: ``cache_refresh`` block tokens committed since the last fill) is a full
forward that fills the row's KV cache; the row's other forwards compute only its block
(dual) or its block and what follows (prefix) against that cache. Rows in different blocks
share a step: it runs one full forward for the rows that open a block and one cached
forward for the others; each counts as one NFE of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from r2sft.decoding.config import DecoderConfig
from r2sft.decoding.rules import (
    CommitRule,
    TemporalState,
    answer_complete,
    chosen_confidence,
    commit_step,
    token_cluster_enabled,
)
from r2sft.decoding.trace import DecodeResult, Trace
from r2sft.modeling.forward import CacheUse, predict_logits, resolve_cache_mode
from r2sft.modeling.layers import KVCache


class DecodeSpec(Protocol):
    """The token facts the sampler needs (``r2sft.specs.ModelSpec`` provides them)."""

    mask_token_id: int
    pad_token_id: int
    eos_token_id: int
    eot_token_id: int | None
    shifted_logits: bool


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
            attention[row, width - len(prompt) :] = 1
    return ids, attention


@torch.no_grad()
def generate(
    model: Any,
    spec: DecodeSpec,
    prompts: Sequence[Sequence[int]],
    config: DecoderConfig,
    seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> DecodeResult:
    """Decode ``gen_length`` tokens after each prompt.

    Args:
        model: callable ``model(input_ids=..., attention_mask=...)`` returning an object with
            ``.logits`` of shape ``[B, T, V]`` (a bidirectional masked-diffusion LM); r2sft's
            model classes also get ``output_positions`` and, for ``config.cache``, a KV cache
            (:mod:`r2sft.modeling.forward`).
        spec: supplies ``mask_token_id``, ``pad_token_id`` and ``shifted_logits``.
        prompts: token ids per prompt (chat template already applied), any lengths.
        config: the decoder settings.
        seeds: one seed per prompt for Gumbel sampling / random token clusters (default:
            the prompt's index). A row's output depends only on its prompt, seed and config.
        batch_size: decode at most this many prompts per forward batch (default: all).

    Returns:
        A :class:`DecodeResult` with one row per prompt, on CPU.
    """
    config.validate()
    resolve_cache_mode(model, config.cache)  # a cache the model lacks fails before any work
    if len(prompts) == 0:
        raise ValueError("generate() got no prompts")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generate() got an empty prompt; every prompt needs >= 1 token")
    if seeds is None:
        seeds = list(range(len(prompts)))
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    size = batch_size or len(prompts)
    results = [
        _generate_batch(model, spec, prompts[i : i + size], config, seeds[i : i + size])
        for i in range(0, len(prompts), size)
    ]
    return DecodeResult.concatenate(results)


def _best_non_mask(scores: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Argmax over the vocabulary that never picks the mask token: committing a mask would
    leave the position open forever (the official code does not guard against it)."""
    top2 = scores.topk(2, dim=-1).indices
    return torch.where(top2[..., 0] == mask_id, top2[..., 1], top2[..., 0])


def _candidates(
    logits: torch.Tensor,
    config: DecoderConfig,
    generators: list[torch.Generator] | None,
    rows: list[int],
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Candidate token and its probability per position ([n, L, V] -> [n, L] x2), and the
    fp32-softmax probability the token cluster ranks by (None when it does not run).

    The probability is the softmax over the whole vocabulary (mask token included), as in
    the official rules; only the choice of candidate skips the mask token.
    """
    logits = logits.float()
    if config.temperature == 0:
        cand = _best_non_mask(logits, mask_id)
    else:
        # Gumbel-max in fp64 (low-precision Gumbel noise hurts dLLM sampling, arXiv
        # 2409.02908); one noise draw per row from that row's generator keeps a row's
        # sample independent of the batch it is decoded in.
        picks = []
        for index, row in enumerate(rows):
            uniform = torch.rand(
                logits.shape[1:], generator=generators[row], dtype=torch.float64,
                device=logits.device,
            )  # fmt: skip
            gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
            noisy = logits[index].double() + config.temperature * gumbel
            picks.append(_best_non_mask(noisy, mask_id))
        cand = torch.stack(picks)
    cluster_conf = None
    if token_cluster_enabled(config) and config.token_cluster_mode == "confidence":
        # The official token cluster ranks an fp32 softmax, whose values near 1 tie.
        cluster_conf = logits.softmax(dim=-1).gather(-1, cand.unsqueeze(-1)).squeeze(-1)
    return cand, chosen_confidence(logits, cand), cluster_conf


def _block_logits(
    model: Any,
    spec: DecodeSpec,
    canvas: torch.Tensor,
    attention: torch.Tensor,
    columns: torch.Tensor,
    cache: KVCache | None,
    mode: str,
    opening: list[bool],
    first_columns: list[int],
) -> torch.Tensor:
    """Logits ``[n, L, V]`` of the running rows at their block's columns: one forward, or,
    with a cache, a full forward for the ``opening`` rows and a cached one for the rest."""
    if cache is None:
        return predict_logits(model, spec, canvas, attention, columns)
    if all(opening):
        return predict_logits(model, spec, canvas, attention, columns, CacheUse(cache, "fill"))
    if not any(opening):
        return predict_logits(model, spec, canvas, attention, columns,
                              CacheUse(cache, mode, first_columns=first_columns))  # fmt: skip
    device = canvas.device
    full = torch.tensor([i for i, flag in enumerate(opening) if flag], device=device)
    rest = [i for i, flag in enumerate(opening) if not flag]
    cached = torch.tensor(rest, device=device)
    full_logits = predict_logits(model, spec, canvas[full], attention[full], columns[full],
                                 CacheUse(cache, "fill", rows=full))  # fmt: skip
    cached_logits = predict_logits(
        model, spec, canvas[cached], attention[cached], columns[cached],
        CacheUse(cache, mode, rows=cached, first_columns=[first_columns[i] for i in rest]),
    )  # fmt: skip
    logits = full_logits.new_empty((len(opening), *full_logits.shape[1:]))
    logits[full] = full_logits
    logits[cached] = cached_logits
    return logits


def _generate_batch(
    model: Any,
    spec: DecodeSpec,
    prompts: Sequence[Sequence[int]],
    config: DecoderConfig,
    seeds: Sequence[int],
) -> DecodeResult:
    device = _model_device(model)
    rows, gen, block = len(prompts), config.gen_length, config.block_length
    num_blocks = config.num_blocks
    mask_id = spec.mask_token_id
    prompt_ids, prompt_attention = _left_pad(prompts, spec.pad_token_id)
    width = prompt_ids.shape[1]
    canvas = torch.cat([prompt_ids, torch.full((rows, gen), mask_id)], dim=1).to(device)
    attention = torch.cat([prompt_attention, torch.ones(rows, gen, dtype=torch.long)], dim=1)
    attention = attention.to(device)
    cache_mode = resolve_cache_mode(model, config.cache)
    cache = KVCache() if cache_mode != "none" else None
    since_fill = torch.zeros(rows, dtype=torch.long, device=device)  # commits since the fill

    block_index = torch.zeros(rows, dtype=torch.long, device=device)
    step_in_block = torch.zeros(rows, dtype=torch.long, device=device)
    nfe = torch.zeros(rows, dtype=torch.long, device=device)
    step_map = torch.full((rows, gen), -1, dtype=torch.int32, device=device)
    rule_map = torch.zeros((rows, gen), dtype=torch.int8, device=device)
    # At least one token commits per forward, so no row needs more than `gen` forwards.
    if config.record_trace:
        trace_top1 = torch.full((rows, gen, block), -1, dtype=torch.int32, device=device)
        trace_conf = torch.zeros((rows, gen, block), dtype=torch.float32, device=device)
        trace_block = torch.full((rows, gen), -1, dtype=torch.int32, device=device)
    temporal = TemporalState.empty(rows, block, device)
    use_temporal = config.r2 and config.temporal_k > 0
    needs_rng = config.temperature > 0 or (config.r2 and config.token_cluster_mode == "random")
    generators = None
    if needs_rng:
        generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
    offsets = torch.arange(block, device=device)
    end_ids = torch.tensor(
        [i for i in (spec.eos_token_id, spec.eot_token_id) if i is not None], device=device
    )
    # Fixed schedule: block masks spread evenly over the block's steps, remainder first.
    per_step, remainder = divmod(block, config.steps_per_block)

    running = list(range(rows))
    # Host copies, refreshed by the step's one sync: each running row's block and whether
    # its next forward is a full one (block start or cache refresh).
    host_block = [0] * rows
    opening = [True] * rows
    while running:
        active = torch.tensor(running, device=device)
        gen_positions = block_index[active, None] * block + offsets  # [n, L]
        first_columns = [width + host_block[row] * block for row in running]
        block_logits = _block_logits(
            model, spec, canvas[active], attention[active], width + gen_positions, cache,
            cache_mode, [opening[row] for row in running], first_columns,
        )  # fmt: skip
        cand, conf, cluster_conf = _candidates(block_logits, config, generators, running, mask_id)
        current = canvas[active[:, None], width + gen_positions]
        masked = current == mask_id

        num_tokens = None
        if config.policy == "fixed":
            num_tokens = per_step + (step_in_block[active] < remainder).long()
        uniform = None
        if config.r2 and config.token_cluster_mode == "random":
            uniform = torch.stack([
                torch.rand(block + 1, generator=generators[row], device=device)
                for row in running
            ])  # fmt: skip
        rule, state = commit_step(
            cand, conf, masked, config,
            num_tokens=num_tokens,
            temporal=temporal.select(active) if use_temporal else None,
            uniform=uniform,
            cluster_conf=cluster_conf,
        )  # fmt: skip
        committed = rule > 0

        filled = torch.where(committed, cand, current)
        canvas[active[:, None], width + gen_positions] = filled
        row_nfe = nfe[active]
        old_steps = step_map[active[:, None], gen_positions]
        step_map[active[:, None], gen_positions] = torch.where(
            committed, row_nfe[:, None].to(torch.int32), old_steps
        )
        old_rules = rule_map[active[:, None], gen_positions]
        rule_map[active[:, None], gen_positions] = torch.where(committed, rule, old_rules)
        if config.record_trace:
            trace_top1[active, row_nfe] = cand.to(torch.int32)
            trace_conf[active, row_nfe] = conf.float()
            trace_block[active, row_nfe] = block_index[active].to(torch.int32)

        nfe[active] = row_nfe + 1
        block_done = (filled != mask_id).all(dim=-1)
        if use_temporal:
            temporal.write(active, state, block_done)
        new_step = torch.where(block_done, 0, step_in_block[active] + 1)
        step_in_block[active] = new_step
        new_block = block_index[active] + block_done.long()
        if config.early_exit:
            # A complete answer: fill the rest of the canvas with end of text in this forward.
            generated = canvas[active, width:]
            complete = answer_complete(generated, mask_id, end_ids)
            fill = complete[:, None] & (generated == mask_id)
            canvas[active, width:] = torch.where(fill, spec.eos_token_id, generated)
            step_map[active] = torch.where(fill, row_nfe[:, None].to(torch.int32),
                                           step_map[active])  # fmt: skip
            rule_map[active] = torch.where(fill, int(CommitRule.EARLY_EXIT), rule_map[active])
            new_block = torch.where(complete, num_blocks, new_block)
        block_index[active] = new_block
        refill = block_done
        if cache is not None and config.refresh_tokens > 0:
            # Refresh once the block has changed enough since the row's last fill.
            changed = since_fill[active] + committed.sum(dim=-1)
            refill = refill | (changed >= config.refresh_tokens)
            since_fill[active] = torch.where(refill, 0, changed)
        # The one host sync of the step: each row's block (rows past the last one are
        # done) and whether its next forward refills the cache.
        blocks_now, refills = torch.stack([new_block, refill.long()]).tolist()
        kept = []
        for position, (row, row_block, row_refill) in enumerate(
            zip(running, blocks_now, refills, strict=True)
        ):
            host_block[row], opening[row] = row_block, bool(row_refill)
            if row_block < num_blocks:
                kept.append(position)
        if cache is not None and 0 < len(kept) < len(running):
            cache.keep(torch.tensor(kept, dtype=torch.long, device=device))
        running = [running[position] for position in kept]

    trace = None
    if config.record_trace:
        steps = int(nfe.max())
        trace = Trace(
            trace_top1[:, :steps].cpu(), trace_conf[:, :steps].cpu(),
            trace_block[:, :steps].cpu(), block,
        )  # fmt: skip
    return DecodeResult(
        tokens=canvas[:, width:].cpu(),
        step_map=step_map.cpu(),
        rule_map=rule_map.cpu(),
        nfe=nfe.to(torch.int32).cpu(),
        trace=trace,
    )
