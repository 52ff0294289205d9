"""Decode throughput with and without the KV cache, on a random LLaDA where compute dominates.

    python bench/bench_cache.py --quick --output /tmp/cache.json      # 2-core CPU, < 3 min
    python bench/bench_cache.py --output cache.json                   # the full shape (GPU)
    python bench/bench_cache.py --device cuda --dtype bfloat16 --batch_sizes 1,16,32

One interleaved run: each repeat decodes every (cache mode, batch size) once, modes
alternating, so machine noise hits all of them; the fastest repeat is reported. Every batch
size decodes the same prompts (random tokens of mixed lengths, left-padded). The weights are
random, so the commit schedule is scripted: the fixed policy commits the block in
``steps / num_blocks`` forwards (default 10 per block of 32: NFE 80 for gen 256, about what
threshold 0.9 takes on LLaDA-8B GSM8K), with the model's own confidences choosing which
tokens. Prints and writes one JSON object:

``shape``, ``results`` (a list of {cache, batch_size, tokens_per_s, forwards_per_s,
mean_nfe, seconds}), ``speedup_prefix_vs_none`` and ``speedup_dual_vs_none`` (tokens/s
ratios at the largest batch size), ``token_agreement_dual_vs_none`` (share of generated
tokens the dual-cache decode has in common with the uncached one, largest batch size).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from r2sft.decoding import decoder_config, generate
from r2sft.modeling import LLaDAConfig, LLaDAModelLM
from r2sft.specs import default_device


@dataclass
class BenchCacheArgs:
    """What to time (the full shape by default; ``--quick`` a smaller one for a CPU)."""

    quick: bool = field(default=False, metadata={"help": "small shape, 2 repeats: CPU in < 3 min"})
    cache: str = field(default="none,prefix,dual", metadata={"help": "cache modes to time"})
    batch_sizes: str = "1,16"
    repeats: int | None = None  # default: 3 (2 with --quick)
    device: str | None = None  # default: cuda when available, else cpu
    dtype: str = "float32"
    d_model: int | None = None  # default 1024 (256 with --quick)
    n_layers: int | None = None  # default 8 (2 with --quick)
    vocab_size: int | None = None  # default 32000 (2048 with --quick)
    prompt_length: int = 200  # mean; prompts vary by +-10%
    gen_length: int = 256
    block_length: int = 32
    steps: int = 80  # fixed policy: forwards over the canvas (10 per block of 32)
    seed: int = 0
    output: str | None = None

    def resolve(self) -> None:
        """Fill the shape and repeats left to the mode (--quick or full)."""
        if self.d_model is None:
            self.d_model = 256 if self.quick else 1024
        if self.n_layers is None:
            self.n_layers = 2 if self.quick else 8
        if self.vocab_size is None:
            # At d_model 256 a 32k head would cost more than the two blocks; 2048 keeps its
            # share of the compute near LLaDA-8B's (about 6%).
            self.vocab_size = 2048 if self.quick else 32000
        if self.repeats is None:
            self.repeats = 2 if self.quick else 3


MASK_ID, PAD_ID = 3, 0


def build_model(args: BenchCacheArgs, device: str) -> LLaDAModelLM:
    """A random LLaDA of the bench shape, built directly on ``device`` (no CPU copy)."""
    heads = max(args.d_model // 128, 1)
    config = LLaDAConfig(
        d_model=args.d_model, n_layers=args.n_layers, n_heads=heads, n_kv_heads=heads,
        mlp_hidden_size=int(args.d_model * 2.75), vocab_size=args.vocab_size,
        embedding_size=args.vocab_size, max_sequence_length=4096, weight_tying=False,
        mask_token_id=MASK_ID, eos_token_id=PAD_ID, pad_token_id=PAD_ID, init_std=0.02,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = LLaDAModelLM(config)
    return model.to(getattr(torch, args.dtype)).eval()


def random_prompts(args: BenchCacheArgs, count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(args.seed)
    spread = max(args.prompt_length // 10, 1)
    lengths = torch.randint(args.prompt_length - spread, args.prompt_length + spread + 1,
                            (count,), generator=generator)  # fmt: skip
    return [
        torch.randint(4, args.vocab_size, (int(n),), generator=generator).tolist() for n in lengths
    ]


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: BenchCacheArgs) -> dict[str, Any]:
    args.resolve()
    device = default_device(args.device)
    modes = args.cache.split(",")
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    model = build_model(args, device)
    spec = _Spec()
    prompts = random_prompts(args, max(sizes))
    configs = {
        mode: decoder_config("fixed", gen_length=args.gen_length, block_length=args.block_length,
                             steps=args.steps, cache=mode, record_trace=False)
        for mode in modes
    }  # fmt: skip
    warm = decoder_config("fixed", gen_length=args.block_length, block_length=args.block_length,
                          steps=2, record_trace=False)  # fmt: skip
    for mode in modes:
        generate(model, spec, prompts[:2], dataclasses.replace(warm, cache=mode))
    best: dict[tuple[str, int], dict[str, Any]] = {}
    tokens: dict[tuple[str, int], torch.Tensor] = {}
    for _ in range(args.repeats):
        for size in sizes:
            for mode in modes:  # interleaved: every repeat runs every mode
                _synchronize(device)
                start = time.perf_counter()
                result = generate(model, spec, prompts[:size], configs[mode])
                _synchronize(device)
                seconds = time.perf_counter() - start
                tokens[mode, size] = result.tokens
                if (mode, size) not in best or seconds < best[mode, size]["seconds"]:
                    forwards = int(result.nfe.max())  # batch forwards: the longest row's
                    best[mode, size] = {
                        "cache": mode,
                        "batch_size": size,
                        "tokens_per_s": size * args.gen_length / seconds,
                        "forwards_per_s": forwards / seconds,
                        "mean_nfe": float(result.nfe.float().mean()),
                        "seconds": seconds,
                    }
    largest = max(sizes)
    report: dict[str, Any] = {
        "shape": {
            "d_model": args.d_model,
            "n_layers": args.n_layers,
            "vocab_size": args.vocab_size,
            "prompt_length": args.prompt_length,
            "gen_length": args.gen_length,
            "block_length": args.block_length,
            "steps": args.steps,
            "dtype": args.dtype,
            "parameters": sum(p.numel() for p in model.parameters()),
        },  # fmt: skip
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "results": [best[mode, size] for size in sizes for mode in modes],
    }
    for mode in ("prefix", "dual"):
        if mode in modes and "none" in modes:
            report[f"speedup_{mode}_vs_none"] = (
                best[mode, largest]["tokens_per_s"] / best["none", largest]["tokens_per_s"]
            )
    if "dual" in modes and "none" in modes:
        same = tokens["dual", largest] == tokens["none", largest]
        report["token_agreement_dual_vs_none"] = float(same.float().mean())
    report["args"] = asdict(args)
    return report


@dataclass(frozen=True)
class _Spec:
    mask_token_id: int = MASK_ID
    pad_token_id: int = PAD_ID
    eos_token_id: int = PAD_ID
    shifted_logits: bool = False


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from r2sft.config import parse_config

    args = parse_config(BenchCacheArgs, args=argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return report


if __name__ == "__main__":
    main()
