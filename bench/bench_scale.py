"""Decode and training speed at LLaDA-8B's shape, with random weights made on the device,
against the device's own ceilings and transformers' Llama at the same shape.

    python bench/bench_scale.py --output scale.json        # a GPU: bf16, batch 1 / 8 / 32
    python bench/bench_scale.py --batch_sizes 64,128 --modes dual --row_budget_s 45
    python bench/bench_scale.py --modes dual,dual+cache_refresh=8   # any DecoderConfig field
    python bench/bench_scale.py --tiny                     # the same code at a tiny shape (CPU)

The model is LLaDA-8B-Instruct's architecture (``LLaDAConfig()`` defaults: d_model 4096, 32
layers, vocab 126464) built on the meta device and materialised directly on the target
device with random weights (no checkpoint download, no CPU copy). Sections, in order (each
one that fails records its error and the bench goes on; past ``--deadline_s`` the rest are
skipped with a note; progress lines with the elapsed time go to stderr):

- ``ceiling``: the matmul TFLOP/s of this device measured now (``ceilings.py``: bf16
  8192^3 on a GPU, fp32 256^3 on a CPU), the denominator of every fraction below.
- ``forward_parity``: r2sft's full forward (prompt + canvas positions, the head at the last
  block) against transformers' ``LlamaForCausalLM`` (sdpa) of the same shape (hidden,
  intermediate, layers, heads, vocab, rope theta) with ``logits_to_keep`` = the block, and
  Llama's block-long step against a ``DynamicCache`` of the rest; medians after warm-up, the
  ratios r2sft / Llama and each full forward's compute floor (its FLOPs at the ceiling).
- ``decode``: per mode and batch size, generated tokens/s, mean NFE, seconds and peak
  memory; the commit schedule is scripted (fixed policy, 10 forwards per block of 32), as
  random weights have no meaningful confidences, and repeats interleave the modes. A mode
  is ``CACHE[:REFRESH][+FIELD=VALUE...]`` (``bench_cache.decode_mode``: any DecoderConfig
  field, checked before any work). The model is wrapped in a timing proxy
  (:class:`ForwardTimer`) that sees every forward the sampler runs: per row the share of
  wall time in block-opening forwards (cache fills, or every forward without a cache), the
  mean full and cached forward times, and the roofline fraction (the FLOPs those forwards
  must do, counted from the shape and the positions each one runs, over the time and the
  ceiling). Each row has a time budget (``--row_budget_s``): a decode that overruns it is
  stopped by the proxy and reported as aborted with what it measured, and a repeat runs
  only while it fits, so batch 64 / 128 finish in bounded time.
- ``lora_step``: the LoRA SFT step (LLaDA masked-diffusion loss, AdamW, gradient
  checkpointing) timed over ``--train_steps`` steps after ``--train_warmup`` ones: median
  seconds, tokens/s, counted FLOPs and their fraction of the ceiling, peak memory, and the
  cold first step.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from bench_cache import bench_main, decode_mode, random_prompts
from ceilings import matmul_tflops, median_seconds, synchronize

from r2sft.decoding import DecoderConfig, generate
from r2sft.modeling import LLaDAConfig, LLaDAModelLM
from r2sft.modeling.forward import predict_logits
from r2sft.specs import apply_lora, default_device, resolve_spec
from r2sft.training import objectives as obj

TINY_SHAPE = {
    "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128,
    "vocab_size": 512, "embedding_size": 512, "mask_token_id": 511, "eos_token_id": 510,
    "pad_token_id": 510, "eot_token_id": 509, "max_sequence_length": 1024,
}  # fmt: skip
LORA_RESERVE_S = (30.0, 2.0)  # of the deadline kept for the LoRA section after the decode


@dataclass
class BenchScaleArgs:
    tiny: bool = field(default=False, metadata={"help": "tiny shape and sizes (CPU, tests)"})
    device: str | None = None  # default: cuda when available, else cpu
    dtype: str | None = None  # default: bfloat16 on cuda, float32 on cpu
    batch_sizes: str | None = None  # default 1,8,32 (1,2 with --tiny)
    modes: str | None = field(
        default=None,
        metadata={"help": "decode modes, comma-separated, each CACHE[:REFRESH][+FIELD=VALUE...]"
                  " (default none,dual,dual:16; none,dual,dual:4 with --tiny)"},
    )  # fmt: skip
    prompt_length: int | None = None  # default 200 (24 with --tiny)
    gen_length: int | None = None  # default 256 (32 with --tiny)
    block_length: int | None = None  # default 32 (8 with --tiny)
    steps: int | None = None  # default 80, i.e. 10 forwards per block (16 with --tiny)
    repeats: int | None = field(
        default=None, metadata={"help": "most decodes per row, best kept (default 2; 1 tiny)"}
    )
    row_budget_s: float | None = field(
        default=None, metadata={"help": "seconds per decode row (default 60; 20 with --tiny)"}
    )
    deadline_s: float | None = field(
        default=None, metadata={"help": "skip what would start after this many seconds"}
    )
    parity: bool = field(default=True, metadata={"help": "time the forward against Llama"})
    parity_batch_sizes: str | None = None  # default 1,8,32 (1,2 with --tiny)
    lora_r: int = 16
    train_batch: int | None = None  # default 4 (2 with --tiny)
    train_length: int | None = None  # default 512 (32 with --tiny)
    train_warmup: int = 2
    train_steps: int = field(default=3, metadata={"help": "timed LoRA steps (>= 3)"})
    seed: int = 0
    output: str | None = None

    def resolve(self) -> None:
        """Fill what the mode (--tiny or the 8B shape) decides; check the rest."""
        defaults = {
            "batch_sizes": ("1,8,32", "1,2"), "prompt_length": (200, 24),
            "gen_length": (256, 32), "block_length": (32, 8), "steps": (80, 16),
            "train_batch": (4, 2), "train_length": (512, 32), "row_budget_s": (60.0, 20.0),
            "modes": ("none,dual,dual:16", "none,dual,dual:4"), "repeats": (2, 1),
            "parity_batch_sizes": ("1,8,32", "1,2"),
        }  # fmt: skip
        for name, (full, tiny) in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, tiny if self.tiny else full)
        if self.train_steps < 3 or self.train_warmup < 0 or self.repeats < 1:
            raise ValueError("--train_steps must be >= 3, --train_warmup >= 0, --repeats >= 1.")

    def schedule(self) -> dict[str, int]:
        return {"gen_length": self.gen_length, "block_length": self.block_length,
                "steps": self.steps}  # fmt: skip

    def decode_configs(self) -> dict[str, DecoderConfig]:
        """Every ``--modes`` entry as its decoder (a bad entry raises, naming it)."""
        labels = [label.strip() for label in self.modes.split(",") if label.strip()]
        return {label: decode_mode(label, self.schedule()) for label in labels}


@dataclass(frozen=True)
class ForwardShape:
    """What the FLOPs of a forward depend on: matmul weights per block, layers, width, head."""

    n_layers: int
    d_model: int
    block_linear_params: int  # q, k, v, out projections and the three MLP matrices
    head_params: int  # d_model x padded vocabulary

    @classmethod
    def of(cls, config: LLaDAConfig) -> ForwardShape:
        d, kv = config.d_model, config.effective_n_kv_heads * config.head_dim
        block = 2 * d * d + 2 * d * kv + 3 * d * config.ffn_hidden_size
        return cls(config.n_layers, d, block, d * config.padded_vocab_size)

    def forward_flops(self, batch: int, queries: int, keys: int, head_rows: int) -> float:
        """Matmul FLOPs of one forward: ``queries`` positions through every block (attending to
        ``keys`` positions: QK^T and AV, 2 x 2 x d each) and ``head_rows`` through the head."""
        per_layer = 2 * queries * self.block_linear_params + 4 * queries * keys * self.d_model
        return float(batch * (self.n_layers * per_layer + 2 * head_rows * self.head_params))

    def train_step_flops(self, batch: int, length: int, checkpointing: bool,
                         adapter_params: int) -> float:  # fmt: skip
        """Matmul FLOPs of a LoRA step: frozen matrices run forward, (recompute with
        checkpointing,) and the input-gradient backward; attention's backward is twice its
        forward; the adapters also get their weight gradients."""
        recompute = int(checkpointing)
        linear = 2 * length * self.block_linear_params * self.n_layers * (2 + recompute)
        attention = 4 * length * length * self.d_model * self.n_layers * (3 + recompute)
        head = 2 * length * self.head_params * 2
        adapters = 2 * length * adapter_params * (3 + recompute)
        return float(batch * (linear + attention + head + adapters))


class DecodeBudgetExceeded(RuntimeError):
    """Raised by :class:`ForwardTimer` when a decode runs past its deadline."""


class ForwardTimer:
    """The model, seen from outside the sampler: every call is classified and timed.

    A call without a cache or with a cache-filling step (``kv_cache.mode == "fill"``) is a
    block-opening (full) forward; one with a span step is a cached forward. Times come from
    CUDA events recorded around each call (no extra host sync, so the decode runs as it
    would unwrapped; they are read once the decode is over) or, on a CPU, the wall clock.
    Attributes the sampler reads (``supports_decode_cache``, ``config``, ``parameters()``,
    ``device``, ...) are the model's. Past ``deadline`` (a ``time.perf_counter()`` value)
    the next call raises :class:`DecodeBudgetExceeded`.
    """

    def __init__(self, model: Any, shape: ForwardShape, device: str,
                 deadline: float | None = None) -> None:  # fmt: skip
        self._model = model
        self._shape = shape
        self._cuda = device.startswith("cuda")
        self._deadline = deadline
        self._canvas = 0  # positions of the last full forward: what a cached one attends to
        self.calls: list[tuple[bool, float, Any, Any]] = []  # full, flops, start, end

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_model"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._deadline is not None and time.perf_counter() > self._deadline:
            raise DecodeBudgetExceeded(f"stopped after {len(self.calls)} forwards")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        batch, queries = input_ids.shape
        step = kwargs.get("kv_cache")
        full = step is None or getattr(step, "mode", "fill") == "fill"
        if full:
            self._canvas = queries
        positions = kwargs.get("output_positions")
        head_rows = queries if positions is None else positions.shape[-1]
        flops = self._shape.forward_flops(batch, queries, self._canvas or queries, head_rows)
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            output = self._model(*args, **kwargs)
            end.record()
        else:
            start = time.perf_counter()
            output = self._model(*args, **kwargs)
            end = time.perf_counter()
        self.calls.append((full, flops, start, end))
        return output

    def summary(self, seconds: float, ceiling_tflops: float | None) -> dict[str, Any]:
        """Counts, mean times, shares of ``seconds`` and the roofline fraction of the calls."""
        if self._cuda:
            torch.cuda.synchronize()
            times = [start.elapsed_time(end) / 1000 for _, _, start, end in self.calls]
        else:
            times = [end - start for _, _, start, end in self.calls]
        full = [t for (is_full, *_), t in zip(self.calls, times, strict=True) if is_full]
        cached = [t for (is_full, *_), t in zip(self.calls, times, strict=True) if not is_full]
        flops = sum(flops for _, flops, _, _ in self.calls)
        return {
            "full_forwards": len(full),
            "cached_forwards": len(cached),
            "full_forward_ms": 1000 * statistics.mean(full) if full else None,
            "cached_forward_ms": 1000 * statistics.mean(cached) if cached else None,
            "block_opening_share": sum(full) / seconds if self.calls else None,
            "forward_share": sum(times) / seconds if self.calls else None,
            "tflop": flops / 1e12,
            "roofline_fraction": flops / seconds / (ceiling_tflops * 1e12)
            if ceiling_tflops and self.calls else None,
        }  # fmt: skip


class Progress:
    """Progress lines on stderr, each with the seconds since the bench started."""

    def __init__(self, deadline_s: float | None) -> None:
        self.start = time.perf_counter()
        self.deadline = None if deadline_s is None else self.start + deadline_s

    def log(self, message: str) -> None:
        print(f"[bench_scale +{time.perf_counter() - self.start:6.1f}s] {message}",
              file=sys.stderr, flush=True)  # fmt: skip

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()


def build_random_model(config: LLaDAConfig, device: str, dtype: torch.dtype) -> LLaDAModelLM:
    """The model built on the meta device, then materialised on ``device`` and filled with
    random weights there (normal(0, init_std) matrices, unit norm weights)."""
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model = model.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, config.init_std)
            else:  # norm weights 1, biases 0
                parameter.fill_(0.0 if name.endswith("bias") else 1.0)
    return model.eval()


def build_random_llama(config: LLaDAConfig, device: str, dtype: torch.dtype) -> Any:
    """transformers' ``LlamaForCausalLM`` (sdpa) at ``config``'s shape, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama_config = LlamaConfig(
        hidden_size=config.d_model, intermediate_size=config.ffn_hidden_size,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.effective_n_kv_heads, vocab_size=config.padded_vocab_size,
        max_position_embeddings=config.max_sequence_length, rope_theta=config.rope_theta,
        rms_norm_eps=config.rms_norm_eps, attn_implementation="sdpa",
    )  # fmt: skip
    with torch.device("meta"):
        llama = LlamaForCausalLM(llama_config)
    llama = llama.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for parameter in llama.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.02)
            else:
                parameter.fill_(1.0)
    return llama.eval()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _time_full_forward(model: Any, spec: Any, ids: torch.Tensor, block: int, device: str) -> float:
    """Median seconds of r2sft's forward of ``ids`` with the head at the last ``block``."""
    batch, total = ids.shape
    columns = torch.arange(total - block, total, device=device)[None].expand(batch, block)
    return median_seconds(lambda: predict_logits(model, spec, ids, None, columns), device)


def _time_llama(llama: Any, ids: torch.Tensor, block: int, device: str) -> tuple[float, float]:
    """Median seconds of Llama's full forward (``logits_to_keep=block``) and of its
    ``block``-token step against a ``DynamicCache`` holding the rest of ``ids``."""
    from transformers import DynamicCache

    total = ids.shape[1]
    full = median_seconds(
        lambda: llama(input_ids=ids, logits_to_keep=block, use_cache=False), device
    )
    cache = DynamicCache(config=llama.config)
    llama(input_ids=ids[:, : total - block], past_key_values=cache, use_cache=True)

    def cached_step() -> None:
        llama(input_ids=ids[:, total - block :], past_key_values=cache, use_cache=True,
              logits_to_keep=block)  # fmt: skip
        cache.crop(-block)  # back to the prefix: every timed step sees the same cache

    step = median_seconds(cached_step, device)
    if cache.get_seq_length() != total - block:
        raise RuntimeError(f"DynamicCache.crop left {cache.get_seq_length()} positions")
    return full, step


def _llama_rows(config: LLaDAConfig, device: str, dtype: torch.dtype,
                inputs: dict[int, torch.Tensor], block: int,
                progress: Progress) -> dict[int, tuple[float, float]]:  # fmt: skip
    llama = build_random_llama(config, device, dtype)
    times = {}
    for size, ids in inputs.items():
        times[size] = _time_llama(llama, ids, block, device)
        progress.log(f"parity: Llama B={size}: full {1000 * times[size][0]:.1f} ms, "
                     f"{block}-token cached step {1000 * times[size][1]:.1f} ms")  # fmt: skip
    return times


@torch.no_grad()
def forward_parity(args: BenchScaleArgs, model: Any, spec: Any, config: LLaDAConfig,
                   device: str, dtype: torch.dtype, ceiling_tflops: float | None,
                   progress: Progress) -> dict[str, Any]:  # fmt: skip
    """r2sft's full forward against Llama's at the same shape (see the module docstring)."""
    total, block = args.prompt_length + args.gen_length, args.block_length
    shape = ForwardShape.of(config)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = {
        int(size): torch.randint(0, spec.mask_token_id - 8, (int(size), total),
                                 generator=generator).to(device)
        for size in args.parity_batch_sizes.split(",")
    }  # fmt: skip
    r2sft = {}
    for size, ids in inputs.items():
        r2sft[size] = _time_full_forward(model, spec, ids, block, device)
        progress.log(f"parity: r2sft full forward B={size}: {1000 * r2sft[size]:.1f} ms")
    llama = _llama_rows(config, device, dtype, inputs, block, progress)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # Llama's weights are gone with _llama_rows' frame
    floor = {size: shape.forward_flops(size, total, total, block) / (ceiling_tflops * 1e12)
             for size in inputs} if ceiling_tflops else {}  # fmt: skip
    return {
        "positions": total,
        "head_positions": block,
        "r2sft_full_ms": {str(size): 1000 * r2sft[size] for size in inputs},
        "llama_full_ms": {str(size): 1000 * llama[size][0] for size in inputs},
        "llama_step_cached_ms": {str(size): 1000 * llama[size][1] for size in inputs},
        "full_ratio_r2sft_vs_llama": {str(size): r2sft[size] / llama[size][0] for size in inputs},
        "full_floor_ms": {str(size): 1000 * floor[size] for size in floor},
    }


@dataclass
class _Row:
    best: dict[str, Any] | None = None
    spent: float = 0.0
    last: float = 0.0
    runs: int = 0
    first_seconds: float | None = None
    aborted: dict[str, Any] | None = None


def time_decode(args: BenchScaleArgs, model: Any, spec: Any, config: LLaDAConfig, device: str,
                ceiling_tflops: float | None, progress: Progress,
                deadline: float | None) -> list[dict[str, Any]]:  # fmt: skip
    """Every (mode, batch size) row, repeats interleaved, each within its time budget."""
    configs = args.decode_configs()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    shape = ForwardShape.of(config)
    prompts = random_prompts(max(sizes), args.prompt_length, spec.mask_token_id - 8, args.seed)
    for label, decoder in configs.items():  # one block on two prompts: kernels, allocator
        warm = dataclasses.replace(decoder, gen_length=decoder.block_length,
                                   steps=decoder.steps_per_block)  # fmt: skip
        # A compiled step has one graph for a single row and one for any larger batch.
        for count in (1, 2) if decoder.compile else (2,):
            generate(model, spec, prompts[:count], warm)
        progress.log(f"decode: warmed up {label}")
    rows = {(size, label): _Row() for size in sizes for label in configs}
    for repeat in range(args.repeats):
        for size in sizes:
            for label, decoder in configs.items():
                row = rows[size, label]
                left = args.row_budget_s - row.spent
                if row.aborted or (repeat and row.last > left):
                    continue
                stop = time.perf_counter() + left
                if deadline is not None:
                    if time.perf_counter() >= deadline:
                        progress.log("decode: deadline reached, remaining rows skipped")
                        return _decode_rows(rows, sizes, configs, "deadline reached")
                    stop = min(stop, deadline)
                _decode_once(model, spec, prompts[:size], decoder, shape, device,
                             ceiling_tflops, stop, row)  # fmt: skip
                result = row.aborted if row.aborted else row.best
                state = "aborted" if row.aborted else f"{result['tokens_per_s']:.1f} tok/s"
                progress.log(f"decode {label} B={size} repeat {repeat + 1}: {row.last:.2f} s, "
                             f"{state}, block-opening share "
                             f"{_percent(result['block_opening_share'])}")  # fmt: skip
    return _decode_rows(rows, sizes, configs, None)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _decode_once(model: Any, spec: Any, prompts: list[list[int]], decoder: DecoderConfig,
                 shape: ForwardShape, device: str, ceiling_tflops: float | None, stop: float,
                 row: _Row) -> None:  # fmt: skip
    timer = ForwardTimer(model, shape, device, deadline=stop)
    # A compiled step runs as CUDA graph replays of the model itself, which a proxy around it
    # would break up: compiled modes are timed as a whole (no per-forward shares).
    decode_model = model if decoder.compile else timer
    synchronize(device)
    _reset_peak(device)
    start = time.perf_counter()
    try:
        result = generate(decode_model, spec, prompts, decoder)
    except DecodeBudgetExceeded as error:
        synchronize(device)
        seconds = time.perf_counter() - start
        row.aborted = {
            "aborted": f"over the time budget: {error} in {seconds:.1f} s",
            "batch_forwards_per_s": len(timer.calls) / seconds,
            **timer.summary(seconds, ceiling_tflops),
        }
        row.spent += seconds
        row.last = seconds
        return
    synchronize(device)
    seconds = time.perf_counter() - start
    row.spent += seconds
    row.last = seconds
    row.runs += 1
    if row.first_seconds is None:
        row.first_seconds = seconds
    if row.best is not None and row.best["seconds"] <= seconds:
        return
    size = len(prompts)
    row.best = {
        "tokens_per_s": size * decoder.gen_length / seconds,
        "forwards_per_s": int(result.nfe.max()) / seconds,  # batch forwards: the longest row's
        "mean_nfe": float(result.nfe.float().mean()),
        "seconds": seconds,
        "peak_memory_gib": _peak_gib(device),
        **timer.summary(seconds, ceiling_tflops),
    }


def _decode_rows(
    rows: dict[tuple[int, str], _Row],
    sizes: list[int],
    configs: dict[str, DecoderConfig],
    skipped: str | None,
) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        for label in configs:
            row = rows[size, label]
            entry: dict[str, Any] = {"mode": label, "batch_size": size, "runs": row.runs,
                                     "first_seconds": row.first_seconds}  # fmt: skip
            if row.best is not None:
                entry.update(row.best)
            if row.aborted is not None:
                entry["aborted_run" if row.best is not None else "aborted"] = row.aborted
            if row.best is None and row.aborted is None:
                entry["skipped"] = skipped or "not run"
            out.append(entry)
    return out


def lora_step(args: BenchScaleArgs, model: Any, spec: Any, config: LLaDAConfig, device: str,
              ceiling_tflops: float | None, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """LoRA SFT steps with gradient checkpointing: the LLaDA masked-diffusion loss on random
    canvases (the first quarter prompt, the rest answer), AdamW on the adapters; the steady
    state is the median of ``train_steps`` steps after ``train_warmup``."""
    # transformers 5 renamed gradient checkpointing (the old name warns until v6).
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    checkpointing = all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    peft_model = apply_lora(model, spec, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0)
    peft_model.enable_input_require_grads()
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch, length = args.train_batch, args.train_length
    generator = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(0, spec.mask_token_id - 8, (batch, length), generator=generator)
    labels = labels.to(device)
    attention = torch.ones_like(labels)
    answer = torch.arange(length, device=device)[None].expand(batch, length) >= length // 4
    noise = obj.hashed_noise(torch.arange(batch, device=device), 0, args.seed, length)
    masked, t = obj.llada_mask(answer, noise=noise)
    noised = obj.apply_mask(labels, masked, spec.mask_token_id)
    losses = []

    def step() -> None:
        logits = predict_logits(peft_model, spec, noised, attention)
        loss = obj.llada_loss(logits, labels, masked, t, answer)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    _reset_peak(device)
    times = []
    for index in range(args.train_warmup + args.train_steps):
        synchronize(device)
        start = time.perf_counter()
        step()  # float(loss) syncs too
        synchronize(device)
        times.append(time.perf_counter() - start)
        kind = "warm-up" if index < args.train_warmup else "timed"
        progress.log(f"lora: {kind} step {index + 1}: {times[-1]:.3f} s")
    seconds = statistics.median(times[args.train_warmup :])
    adapters = sum(p.numel() for p in trainable)
    flops = ForwardShape.of(config).train_step_flops(batch, length, checkpointing, adapters)
    parameters = sum(p.numel() for p in peft_model.parameters())
    return {
        "batch": batch,
        "length": length,
        "lora_r": args.lora_r,
        "trainable_parameters": adapters,
        "loss": losses[-1],
        "activation_checkpointing": checkpointing,
        "warmup_steps": args.train_warmup,
        "timed_steps": args.train_steps,
        "first_step_seconds": times[0],
        "seconds": seconds,
        "step_seconds": times[args.train_warmup :],
        "tokens_per_s": batch * length / seconds,
        "tflop_per_step": flops / 1e12,
        "tflops": flops / seconds / 1e12,
        "fraction_of_ceiling": flops / seconds / (ceiling_tflops * 1e12)
        if ceiling_tflops else None,
        "model_tflops_6n": 6 * parameters * batch * length / seconds / 1e12,
        "peak_memory_gib": _peak_gib(device),
    }  # fmt: skip


def _section(report: dict[str, Any], name: str, progress: Progress,
             run_section: Callable[[], Any], reserve_s: float = 0.0) -> Any:  # fmt: skip
    """Run one section into ``report[name]``: its error, or a skip note past the deadline."""
    if progress.left() <= reserve_s:
        report[name] = {"skipped": "deadline reached before this section"}
        progress.log(f"{name}: skipped (deadline)")
        return None
    progress.log(f"{name}: start")
    try:
        report[name] = run_section()
    except Exception as error:  # noqa: BLE001 - one failing section must not lose the others
        traceback.print_exc()
        report[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    progress.log(f"{name}: done")
    return report[name]


def run(args: BenchScaleArgs) -> dict[str, Any]:
    args.resolve()
    args.decode_configs()  # a bad --modes entry fails here, before any work
    threads = torch.get_num_threads()
    if args.tiny:  # tiny ops gain nothing from threads, and a busy CPU makes them wait
        torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: BenchScaleArgs) -> dict[str, Any]:
    progress = Progress(args.deadline_s)
    device = default_device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    config = LLaDAConfig(**TINY_SHAPE) if args.tiny else LLaDAConfig()
    torch.manual_seed(args.seed)
    _reset_peak(device)
    start = time.perf_counter()
    model = build_random_model(config, device, dtype)
    synchronize(device)
    build_seconds = time.perf_counter() - start
    spec = resolve_spec(config)
    report: dict[str, Any] = {
        "shape": {
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "n_heads": config.n_heads,
            "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(dtype).removeprefix("torch."),
            "prompt_length": args.prompt_length,
            "gen_length": args.gen_length,
            "block_length": args.block_length,
            "steps": args.steps,
        },  # fmt: skip
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "build_seconds": build_seconds,
        "weights_memory_gib": _peak_gib(device),
    }
    small = args.tiny or not device.startswith("cuda")
    ceiling_dtype, ceiling_size = (torch.float32, 256) if small else (torch.bfloat16, 8192)

    def ceiling() -> dict[str, Any]:
        tflops = matmul_tflops(device, ceiling_dtype, ceiling_size)
        return {"matmul_tflops": tflops, "dtype": str(ceiling_dtype).removeprefix("torch."),
                "size": ceiling_size}  # fmt: skip

    measured = _section(report, "ceiling", progress, ceiling) or {}
    tflops = measured.get("matmul_tflops")
    if args.parity:
        _section(report, "forward_parity", progress,
                 lambda: forward_parity(args, model, spec, config, device, dtype, tflops,
                                        progress))  # fmt: skip
    reserve = LORA_RESERVE_S[args.tiny]
    decode_deadline = None if progress.deadline is None else progress.deadline - reserve
    with torch.no_grad():
        _section(report, "decode", progress,
                 lambda: time_decode(args, model, spec, config, device, tflops, progress,
                                     decode_deadline), reserve_s=reserve)  # fmt: skip
    _section(
        report,
        "lora_step",
        progress,
        lambda: lora_step(args, model, spec, config, device, tflops, progress),
    )
    report["seconds"] = time.perf_counter() - progress.start
    report["args"] = asdict(args)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return bench_main(BenchScaleArgs, run, argv)


if __name__ == "__main__":
    from r2sft.config import run_main

    run_main(main)
