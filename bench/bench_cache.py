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

from r2sft.decoding import DecoderConfig, decoder_config, generate
from r2sft.modeling import LLaDAConfig, LLaDAModelLM
from r2sft.specs import default_device, resolve_spec


@dataclass
class BenchCacheArgs:
    """What to time (the full shape by default; ``--quick`` a smaller one for a CPU)."""

    quick: bool = field(default=False, metadata={"help": "small shape, 2 repeats: CPU in < 3 min"})
    cache: str = field(
        default="none,prefix,dual",
        metadata={
            "help": "decode modes to time, comma-separated, each CACHE[:REFRESH][+FIELD=VALUE"
            "...] (dual, dual:16, dual+cache_refresh=8); a bare mode never refreshes (the "
            "plain Fast-dLLM cache)"
        },
    )
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


def random_prompts(count: int, mean_length: int, vocab: int, seed: int) -> list[list[int]]:
    """``count`` prompts of random tokens (ids 4..vocab-1, clear of the special ids), lengths
    within 10% of ``mean_length``: left padding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    spread = max(mean_length // 10, 1)
    lengths = torch.randint(mean_length - spread, mean_length + spread + 1, (count,),
                            generator=generator)  # fmt: skip
    return [torch.randint(4, vocab, (int(n),), generator=generator).tolist() for n in lengths]


def decode_mode(label: str, schedule: dict[str, int]) -> DecoderConfig:
    """The fixed-schedule decoder a mode label names: ``CACHE[:REFRESH][+FIELD=VALUE...]``.

    ``CACHE`` is a cache mode (none / prefix / dual / auto); a bare mode never refreshes (the
    plain Fast-dLLM cache), ``:N`` sets ``cache_refresh`` N; each ``+FIELD=VALUE`` sets any
    other :class:`DecoderConfig` field (the value read as YAML: ``true``, ``32``, ``null``),
    so a decoder option added later needs no bench change: ``dual+cache_refresh=8``.

    Raises:
        ValueError: naming the label and the unknown field (with the valid ones) or the bad
            value, before anything is decoded.
    """
    import yaml

    from r2sft.config import check_config_values

    head, *assignments = label.split("+")
    mode, _, refresh = head.partition(":")
    values: dict[str, Any] = {"cache": mode, "cache_refresh": 0}
    try:
        if refresh:
            values["cache_refresh"] = int(refresh)
        for assignment in assignments:
            name, equals, text = assignment.partition("=")
            if not equals or not name:
                raise ValueError(f"{assignment!r} is not FIELD=VALUE")
            values[name.strip()] = yaml.safe_load(text)
        check_config_values(values, (DecoderConfig,), source="DecoderConfig")
        return decoder_config("fixed", **{**schedule, **values, "record_trace": False})
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(
            f"decode mode {label!r}: {error} (a mode is CACHE[:REFRESH][+FIELD=VALUE...], e.g. "
            "dual, dual:16, none, dual+cache_refresh=8)"
        ) from None


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_decodes(
    model: Any,
    spec: Any,
    prompts: list[list[int]],
    modes: list[str],
    sizes: list[int],
    schedule: dict[str, int],
    repeats: int,
    device: str,
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], torch.Tensor]]:
    """Decode ``prompts[:size]`` per cache mode and batch size, ``repeats`` times with the
    modes interleaved; the fastest run of each is kept. A mode is a :func:`decode_mode` label
    (``none``, ``dual``, ``dual:16``, ``dual+FIELD=VALUE``). The
    fixed policy's ``schedule`` (gen_length, block_length, steps) scripts the commits: random
    weights have no meaningful confidences. Returns the result rows and each variant's tokens."""
    configs = {label: decode_mode(label, schedule) for label in modes}
    block = schedule["block_length"]
    warm = decoder_config("fixed", gen_length=block, block_length=block, steps=2,
                          record_trace=False)  # fmt: skip
    for config in configs.values():
        generate(model, spec, prompts[:2], dataclasses.replace(warm, cache=config.cache))
    cuda = device.startswith("cuda")
    best: dict[tuple[str, int], dict[str, Any]] = {}
    tokens: dict[tuple[str, int], torch.Tensor] = {}
    for _ in range(repeats):
        for size in sizes:
            for mode in modes:  # interleaved: every repeat runs every mode
                synchronize(device)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                result = generate(model, spec, prompts[:size], configs[mode])
                synchronize(device)
                seconds = time.perf_counter() - start
                tokens[mode, size] = result.tokens
                if (mode, size) in best and best[mode, size]["seconds"] <= seconds:
                    continue
                forwards = int(result.nfe.max())  # batch forwards: the longest row's
                best[mode, size] = {
                    "cache": mode,
                    "batch_size": size,
                    "tokens_per_s": size * schedule["gen_length"] / seconds,
                    "forwards_per_s": forwards / seconds,
                    "mean_nfe": float(result.nfe.float().mean()),
                    "seconds": seconds,
                    "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                }
    return [best[mode, size] for size in sizes for mode in modes], tokens


def run(args: BenchCacheArgs) -> dict[str, Any]:
    args.resolve()
    device = default_device(args.device)
    modes = args.cache.split(",")
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    schedule = {"gen_length": args.gen_length, "block_length": args.block_length,
                "steps": args.steps}  # fmt: skip
    for mode in modes:  # a bad mode fails before the model is built
        decode_mode(mode, schedule)
    model = build_model(args, device)
    prompts = random_prompts(max(sizes), args.prompt_length, args.vocab_size, args.seed)
    spec = resolve_spec(model.config)
    rows, tokens = time_decodes(model, spec, prompts, modes, sizes, schedule, args.repeats, device)
    best = {(row["cache"], row["batch_size"]): row for row in rows}
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
        "results": rows,
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


def bench_main(args_class: type, run_bench: Any, argv: list[str] | None) -> dict[str, Any]:
    """Parse ``args_class`` from the command line, run, print the JSON, write ``--output``."""
    from r2sft.config import parse_config

    args = parse_config(
        args_class, args=argv, command="python bench/bench_cache.py", summary=__doc__
    )
    report = run_bench(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return bench_main(BenchCacheArgs, run, argv)


if __name__ == "__main__":
    main()
