"""Decode throughput of the batched sampler, threshold vs R², per batch size. Prints JSON.

    OMP_NUM_THREADS=1 python bench/bench_decode.py                      # embedded model if built
    OMP_NUM_THREADS=1 python bench/bench_decode.py --model random --batch_sizes 1,4,16
    OMP_NUM_THREADS=1 python bench/bench_decode.py --decoders r2 --caches none,dual \
        --cache_refresh 8 --num_prompts 500 --batch_sizes 16          # cache modes, one run
    python bench/bench_decode.py --model GSAI-ML/LLaDA-8B-Instruct --device cuda \\
        --dtype bfloat16 --gen_length 256 --block_length 32 --task gsm8k \\
        --data_path data/gsm8k

Every batch size decodes the same ``num_prompts`` prompts (in batches of that size). Per
decoder (and KV-cache mode, ``--caches``) and batch size: generated tokens/s (canvas
positions), forwards/s (model calls), row-forwards/s (NFE summed over rows), seconds per
forward, and the share of wall time spent outside the model forward (rules, sampling,
bookkeeping). Variants alternate within every repeat, so machine noise hits all of them.
``r2_added_time_share_per_forward``: the extra time per forward the R² rules cost, over a
threshold forward's wall time (target at batch 16: <= 0.10); ``r2_over_threshold_*``: the
plain ratio of seconds per forward (noisier on a shared machine). ``--model random`` (or no
embedded model) uses a tiny random LLaDA with random prompts of mixed lengths.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from r2sft.decoding import DecoderArgs, generate
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.specs import default_device
from r2sft.tasks import TaskArgs, task_class


@dataclass
class BenchArgs(TaskArgs, DecoderArgs):
    """The task and decoder options of every entry point (the canvas defaults to the
    task's), plus what to time."""

    model: str | None = None  # folder / Hub id, "random", or None: embedded if present
    batch_sizes: str = "1,2,4,8,16,32"
    num_prompts: int | None = None  # prompts every batch size decodes (None: the largest size)
    decoders: str = "threshold,r2"
    # KV-cache modes to compare, each "mode" or "mode:cache_refresh", e.g. "none,dual,dual:8"
    # ("": the decoder's --cache alone).
    caches: str = ""
    repeats: int = 3  # timed runs per setting (the fastest is reported)
    device: str | None = None  # default: cuda when available, else cpu
    dtype: str = "auto"
    seed: int = 0


class TimedModel:
    """Wraps a model and accumulates the wall time of its forwards (synchronised on GPU)."""

    def __init__(self, model: Any) -> None:
        self.model, self.seconds, self.calls = model, 0.0, 0
        self.cuda = next(model.parameters()).device.type == "cuda"

    def __getattr__(self, name: str) -> Any:
        # The model's own attributes (parameters, supports_decode_cache, config...).
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def random_setup(args: BenchArgs, count: int) -> tuple[Any, Any, list[list[int]], str]:
    from types import SimpleNamespace

    from r2sft.modeling import LLaDAConfig, LLaDAModelLM

    vocab = 640
    config = LLaDAConfig(
        d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=384,
        vocab_size=vocab, embedding_size=vocab, max_sequence_length=512, rope=True,
        weight_tying=False, mask_token_id=5, eos_token_id=0, pad_token_id=0,
        init_device=None, precision=None,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = LLaDAModelLM(config).eval()
    spec = SimpleNamespace(mask_token_id=5, eos_token_id=0, eot_token_id=None, pad_token_id=0,
                           shifted_logits=False)  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    prompts = [
        torch.randint(6, vocab, (int(torch.randint(40, 90, (1,), generator=generator)),),
                      generator=generator).tolist()
        for _ in range(count)
    ]  # fmt: skip
    return model, spec, prompts, "random LLaDA (d128, 4 layers, embedded size)"


def real_setup(args: BenchArgs, path: str, count: int) -> tuple[Any, Any, list[list[int]], str]:
    from r2sft.specs import encode_prompt, load_model

    loaded = load_model(path, dtype=args.dtype, device=default_device(args.device))
    task = args.make_task()
    examples = task.load("test", limit=count)
    prompts = [encode_prompt(loaded.tokenizer, task.user_message(e)) for e in examples]
    return loaded.model, loaded.spec, prompts, path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from r2sft.config import parse_config

    args = parse_config(
        BenchArgs, args=argv, command="python bench/bench_decode.py", summary=__doc__
    )
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    count = args.num_prompts or max(batch_sizes)
    use_random = args.model == "random" or (args.model is None and not EMBEDDED_MODEL_DIR.is_dir())
    model_path = None if use_random else args.model or str(EMBEDDED_MODEL_DIR)
    if use_random:
        model, spec, prompts, label = random_setup(args, count)
        model = model.to(default_device(args.device))
    else:
        model, spec, prompts, label = real_setup(args, model_path, count)
    timed = TimedModel(model)
    task = task_class(args.task)  # its canvas is the default
    caches = [cache for cache in args.caches.split(",") if cache] or [None]
    configs = {}
    for name in args.decoders.split(","):
        for cache in caches:
            label_of = name if cache in (None, "none") else f"{name}+{cache}"
            mode, _, refresh = (cache or "").partition(":")
            variant = dataclasses.replace(
                args, decoder=name, cache=mode or args.cache,
                cache_refresh=int(refresh) if refresh else args.cache_refresh,
            )  # fmt: skip
            configs[label_of] = variant.resolve(task, model=model_path)
    decoders = list(configs)
    for config in configs.values():
        generate(timed, spec, prompts[:2], config)  # warm-up
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in decoders}
    for size in batch_sizes:
        # Variants interleaved per repeat, so load changes on a shared machine hit all.
        for _ in range(args.repeats):
            for name, config in configs.items():
                timed.seconds, timed.calls = 0.0, 0
                start = time.perf_counter()
                result = generate(timed, spec, prompts, config, batch_size=size)
                wall = time.perf_counter() - start
                runs[name].setdefault(size, []).append({
                    "wall_seconds": wall,
                    "forwards": timed.calls,
                    "row_forwards": int(result.nfe.sum()),
                    "mean_nfe": float(result.nfe.float().mean()),
                    "model_seconds": timed.seconds,
                })  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for name in decoders:
        results[name] = {}
        for size in batch_sizes:
            best = dict(min(runs[name][size], key=lambda run: run["wall_seconds"]))
            gen_length = configs[name].gen_length
            best["generated_tokens_per_s"] = count * gen_length / best["wall_seconds"]
            best["forwards_per_s"] = best["forwards"] / best["wall_seconds"]
            best["row_forwards_per_s"] = best["row_forwards"] / best["wall_seconds"]
            best["seconds_per_forward"] = best["wall_seconds"] / best["forwards"]
            best["share_outside_forward"] = 1 - best["model_seconds"] / best["wall_seconds"]
            # The least time outside the forward over the repeats: the sampler's own cost,
            # robust to other processes slowing the forward down.
            best["outside_seconds_per_forward"] = min(
                (run["wall_seconds"] - run["model_seconds"]) / run["forwards"]
                for run in runs[name][size]
            )
            results[name][str(size)] = best
    report: dict[str, Any] = {
        "model": label,
        "device": str(next(model.parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "num_prompts": count,
        "decoders": {name: config.to_dict() for name, config in configs.items()},
        "results": results,
    }
    if "threshold" in results and "r2" in results:
        threshold, r2 = results["threshold"], results["r2"]
        report["r2_over_threshold_seconds_per_forward"] = {
            size: r2[size]["seconds_per_forward"] / threshold[size]["seconds_per_forward"]
            for size in r2
        }
        # What the R² rules add per forward, as a share of a threshold forward's wall time
        # (the target is <= 0.10 at batch 16).
        report["r2_added_time_share_per_forward"] = {
            size: (r2[size]["outside_seconds_per_forward"]
                   - threshold[size]["outside_seconds_per_forward"])
            / min(r["wall_seconds"] / r["forwards"] for r in runs["threshold"][int(size)])
            for size in r2
        }  # fmt: skip
    # Each cached variant's tokens/s over the same decoder's uncached one.
    speedups: dict[str, dict[str, float]] = {}
    for name in results:
        base = name.split("+")[0]
        if "+" in name and base in results:
            speedups[name] = {
                size: results[name][size]["generated_tokens_per_s"]
                / results[base][size]["generated_tokens_per_s"]
                for size in results[name]
            }
    if speedups:
        report["cache_speedup_tokens_per_s"] = speedups
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
