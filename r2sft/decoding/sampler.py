"""Batched masked-diffusion decoding: canvas bookkeeping around two plug-in seams.

Prompts of different lengths are left-padded into one canvas ``[pad | prompt | MASK x G]``
(:class:`~r2sft.decoding.forwards.Canvas`), so every row's generated region sits at the same
columns. Each forward step:

1. a forward strategy (:mod:`r2sft.decoding.forwards`: no cache, prefix or dual cache,
   optionally over a suffix-pruned canvas) gives the logits of every running row's block;
2. the candidates (greedy, or Gumbel-sampled from the row's own generator) and their
   probabilities are taken;
3. the commit rules (:mod:`r2sft.decoding.rules`: a baseline policy, then the R² rules) pick
   the positions to commit;
4. the canvas, the trajectory (step map, rule map, NFE, trace) and the rules' per-row state
   are updated; with early exit a complete answer ends its row.

Each row moves through its own blocks and leaves the batch as soon as its canvas is full; the
only host sync per step reads each row's block and whether its next forward is a full one.
Why not a library: transformers' ``generate`` is autoregressive, and the public dLLM samplers
(LLaDA, Fast-dLLM, R²-dLLM, Streaming-dLLM) are batch-size-1 loops with a sync per position
or a batch-wide stopping rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from r2sft.decoding.config import DecoderConfig
from r2sft.decoding.forwards import Canvas, Running, check_forward, make_forward
from r2sft.decoding.forwards.view import visible_mask_ratio
from r2sft.decoding.rules import (
    ChainState,
    CommitRule,
    StepView,
    answer_complete,
    chosen_confidence,
    commit_step,
    rule_chain,
)
from r2sft.decoding.trace import DecodeResult, Trace


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
            model classes also get ``output_positions`` and, with a cache or suffix pruning,
            a KV cache and RoPE positions (:mod:`r2sft.modeling.forward`).
        spec: supplies ``mask_token_id``, ``pad_token_id``, end ids and ``shifted_logits``.
        prompts: token ids per prompt (chat template already applied), any lengths.
        config: the decoder settings.
        seeds: one seed per prompt for Gumbel sampling / random token clusters (default:
            the prompt's index). A row's output depends only on its prompt, seed and config.
        batch_size: decode at most this many prompts per forward batch (default: all).

    Returns:
        A :class:`DecodeResult` with one row per prompt, on CPU.
    """
    config.validate()
    check_forward(model, config)  # what the model cannot run fails before any work
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
        _BatchDecode(model, spec, prompts[i : i + size], config, seeds[i : i + size]).run()
        for i in range(0, len(prompts), size)
    ]
    return DecodeResult.concatenate(results)


def _best_non_mask(scores: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Argmax over the vocabulary that never picks the mask token: committing a mask would
    leave the position open forever (the official code does not guard against it)."""
    top2 = scores.topk(2, dim=-1).indices
    return torch.where(top2[..., 0] == mask_id, top2[..., 1], top2[..., 0])


class RowGenerators:
    """One seeded generator per batch row, made on first use, so a row's random draws do not
    depend on the batch it is decoded in."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.seeds, self.device = list(seeds), device
        self._generators: dict[int, torch.Generator] = {}

    def __getitem__(self, row: int) -> torch.Generator:
        if row not in self._generators:
            generator = torch.Generator(device=self.device)
            self._generators[row] = generator.manual_seed(int(self.seeds[row]))
        return self._generators[row]

    def uniform(self, rows: Sequence[int], size: int) -> torch.Tensor:
        """``[len(rows), size]`` draws in [0, 1), row by row from each row's generator."""
        return torch.stack([torch.rand(size, generator=self[row], device=self.device)
                            for row in rows])  # fmt: skip


def candidates(
    logits: torch.Tensor,
    temperature: float,
    generators: RowGenerators,
    rows: Sequence[int],
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate token and its probability per position (``[n, L, V]`` -> ``[n, L]`` x2),
    and the fp32 logits they came from.

    The probability is the softmax over the whole vocabulary (mask token included), as in
    the official rules; only the choice of candidate skips the mask token.
    """
    logits = logits.float()
    if temperature == 0:
        cand = _best_non_mask(logits, mask_id)
    else:
        # Gumbel-max in fp64 (low-precision Gumbel noise hurts dLLM sampling, arXiv
        # 2409.02908); one noise draw per row from that row's generator keeps a row's
        # sample independent of the batch it is decoded in.
        picks = []
        for index, row in enumerate(rows):
            uniform = torch.rand(logits.shape[1:], generator=generators[row],
                                 dtype=torch.float64, device=logits.device)  # fmt: skip
            gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
            noisy = logits[index].double() + temperature * gumbel
            picks.append(_best_non_mask(noisy, mask_id))
        cand = torch.stack(picks)
    return cand, chosen_confidence(logits, cand), logits


class Trajectory:
    """What the rows' forwards did: step and rule maps, NFE and (optionally) the trace."""

    def __init__(self, rows: int, gen: int, block: int, record_trace: bool,
                 device: torch.device) -> None:  # fmt: skip
        self.nfe = torch.zeros(rows, dtype=torch.long, device=device)
        self.step_map = torch.full((rows, gen), -1, dtype=torch.int32, device=device)
        self.rule_map = torch.zeros((rows, gen), dtype=torch.int8, device=device)
        self.block_length = block
        self.trace: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if record_trace:
            # At least one token commits per forward, so no row needs more than `gen`.
            self.trace = (
                torch.full((rows, gen, block), -1, dtype=torch.int32, device=device),
                torch.zeros((rows, gen, block), dtype=torch.float32, device=device),
                torch.full((rows, gen), -1, dtype=torch.int32, device=device),
            )

    def record(self, active: torch.Tensor, positions: torch.Tensor, codes: torch.Tensor,
               cand: torch.Tensor, conf: torch.Tensor, block: torch.Tensor) -> None:  # fmt: skip
        """One forward of rows ``active`` over generated ``positions`` (``[n, L]``)."""
        step = self.nfe[active]
        committed = codes > 0
        rows = active[:, None]
        self.step_map[rows, positions] = torch.where(
            committed, step[:, None].to(torch.int32), self.step_map[rows, positions]
        )
        self.rule_map[rows, positions] = torch.where(committed, codes,
                                                     self.rule_map[rows, positions])  # fmt: skip
        if self.trace is not None:
            top1, confidence, blocks = self.trace
            top1[active, step] = cand.to(torch.int32)
            confidence[active, step] = conf.float()
            blocks[active, step] = block.to(torch.int32)
        self.nfe[active] = step + 1

    def fill(self, active: torch.Tensor, fill: torch.Tensor) -> None:
        """Positions ``fill`` (``[n, G]``) of rows ``active`` became end of text by early exit
        in the forward just recorded."""
        step = (self.nfe[active] - 1).to(torch.int32)[:, None]
        self.step_map[active] = torch.where(fill, step, self.step_map[active])
        self.rule_map[active] = torch.where(fill, int(CommitRule.EARLY_EXIT),
                                            self.rule_map[active])  # fmt: skip

    def result(self, tokens: torch.Tensor) -> DecodeResult:
        trace = None
        if self.trace is not None:
            steps = int(self.nfe.max())
            top1, confidence, blocks = self.trace
            trace = Trace(top1[:, :steps].cpu(), confidence[:, :steps].cpu(),
                          blocks[:, :steps].cpu(), self.block_length)  # fmt: skip
        return DecodeResult(tokens=tokens.cpu(), step_map=self.step_map.cpu(),
                            rule_map=self.rule_map.cpu(), nfe=self.nfe.to(torch.int32).cpu(),
                            trace=trace)  # fmt: skip


class _BatchDecode:
    """One batch of prompts decoded to the end (see the module docstring)."""

    def __init__(self, model: Any, spec: DecodeSpec, prompts: Sequence[Sequence[int]],
                 config: DecoderConfig, seeds: Sequence[int]) -> None:  # fmt: skip
        device = _model_device(model)
        rows = len(prompts)
        self.spec, self.config, self.device = spec, config, device
        self.canvas = Canvas.start(prompts, spec.pad_token_id, spec.mask_token_id,
                                   config.block_length, config.gen_length, device)  # fmt: skip
        self.forward = make_forward(model, spec, config, self.canvas)
        self.chain = rule_chain(config)
        self.states = ChainState(self.chain, rows, config.block_length, device)
        self.trajectory = Trajectory(rows, config.gen_length, config.block_length,
                                     config.record_trace, device)  # fmt: skip
        self.generators = RowGenerators(seeds, device)
        self.block_index = torch.zeros(rows, dtype=torch.long, device=device)
        self.block_start = torch.ones(rows, dtype=torch.bool, device=device)
        self.end_ids = torch.tensor(
            [i for i in (spec.eos_token_id, spec.eot_token_id) if i is not None], device=device
        )
        # Host copies, refreshed by the step's one sync: each running row's block and whether
        # its next forward is a full one (a block start or a cache refresh).
        self.running = list(range(rows))
        self.host_block = [0] * rows
        self.full = [True] * rows

    def run(self) -> DecodeResult:
        while self.running:
            self.step()
        return self.trajectory.result(self.canvas.generated)

    def step(self) -> None:
        """One forward of every running row, its commits and the bookkeeping after them."""
        config, canvas, mask_id = self.config, self.canvas, self.spec.mask_token_id
        active = torch.tensor(self.running, device=self.device)
        blocks = self.block_index[active]
        columns = canvas.block_columns(blocks)
        logits = self.forward.logits(Running(
            self.running, active, [self.host_block[row] for row in self.running], columns,
            [self.full[row] for row in self.running],
        ))  # fmt: skip
        cand, conf, logits = candidates(logits, config.temperature, self.generators,
                                        self.running, mask_id)  # fmt: skip
        current = canvas.ids[active[:, None], columns]
        view = self._view(active, blocks, cand, conf, logits, current == mask_id)
        codes, new_states = commit_step(view, self.chain, self.states.select(active))
        filled = torch.where(codes > 0, cand, current)
        canvas.ids[active[:, None], columns] = filled
        self.trajectory.record(active, columns - canvas.width, codes, cand, conf, blocks)
        block_done = (filled != mask_id).all(dim=-1)
        self.states.write(active, new_states, block_done)
        self.block_start[active] = block_done
        new_block = blocks + block_done.long()
        if config.early_exit:
            new_block = self._exit_complete(active, new_block)
        self.block_index[active] = new_block
        refill = self.forward.after_step(active, codes > 0, block_done)
        self._sync(new_block, refill)

    def _view(self, active: torch.Tensor, blocks: torch.Tensor, cand: torch.Tensor,
              conf: torch.Tensor, logits: torch.Tensor,
              masked: torch.Tensor) -> StepView:  # fmt: skip
        """What the rules see; the costlier facts are computed only if a rule asks."""
        canvas, mask_id, running = self.canvas, self.spec.mask_token_id, self.running

        def fp32_confidence() -> torch.Tensor:
            return logits.softmax(dim=-1).gather(-1, cand.unsqueeze(-1)).squeeze(-1)

        def mask_ratio() -> torch.Tensor:
            seen = self.forward.seen_after_block(blocks)
            return visible_mask_ratio(canvas.generated[active] == mask_id, seen)

        def draw_uniform(size: int) -> torch.Tensor:
            return self.generators.uniform(running, size)

        return StepView(cand, conf, masked, self.block_start[active], logits, fp32_confidence,
                        mask_ratio, draw_uniform)  # fmt: skip

    def _exit_complete(self, active: torch.Tensor, new_block: torch.Tensor) -> torch.Tensor:
        """Rows whose answer is complete: the rest of the canvas becomes end of text in this
        forward and the row ends (its block index moves past the last block)."""
        generated = self.canvas.generated[active]
        mask_id = self.spec.mask_token_id
        complete = answer_complete(generated, mask_id, self.end_ids)
        fill = complete[:, None] & (generated == mask_id)
        self.canvas.generated[active] = torch.where(fill, self.spec.eos_token_id, generated)
        self.trajectory.fill(active, fill)
        return torch.where(complete, self.config.num_blocks, new_block)

    def _sync(self, new_block: torch.Tensor, refill: torch.Tensor) -> None:
        """The one host sync of the step: each row's block (rows past the last one are done)
        and whether its next forward is a full one; finished rows leave the batch."""
        blocks_now, refills = torch.stack([new_block, refill.long()]).tolist()
        kept = []
        for position, (row, block, full) in enumerate(
            zip(self.running, blocks_now, refills, strict=True)
        ):
            self.host_block[row], self.full[row] = block, bool(full)
            if block < self.config.num_blocks:
                kept.append(position)
        if 0 < len(kept) < len(self.running):
            self.forward.keep(torch.tensor(kept, dtype=torch.long, device=self.device))
        self.running = [self.running[position] for position in kept]
