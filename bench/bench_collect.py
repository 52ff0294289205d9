"""Collection throughput: candidates/s (decode + R_total + correctness) per batch size.

    OMP_NUM_THREADS=1 python bench/bench_collect.py                     # embedded default
    python bench/bench_collect.py --num_prompts 16 --num_candidates 8 --batch_sizes 1,4,16,32
    python bench/bench_collect.py --model GSAI-ML/LLaDA-8B-Instruct --task gsm8k \\
        --gen_length 256 --block_length 32 --dtype bfloat16          # on a GPU

Decodes the same prompts x candidates (same seeds) at every batch size, so the rows must
be identical whatever the batching (reported as ``identical_across_batch_sizes``), and
reports, over those candidates, the selected (lowest-R_total correct) trajectories against
all correct ones. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from r2sft.collect import CollectConfig
from r2sft.collect.pipeline import decode_candidates, make_task, model_max_length, prepare_prompts
from r2sft.collect.selection import select_lowest_redundancy, summarize
from r2sft.specs import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = CollectConfig()
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--task", default=defaults.task)
    parser.add_argument("--split", default="train")
    parser.add_argument("--num_prompts", type=int, default=16)
    parser.add_argument("--num_candidates", type=int, default=8)
    parser.add_argument("--batch_sizes", default="1,2,4,8,16,32")
    parser.add_argument("--gen_length", type=int, default=defaults.gen_length)
    parser.add_argument("--block_length", type=int, default=defaults.block_length)
    parser.add_argument("--decoder", default=defaults.decoder)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    config = CollectConfig(
        model=args.model, task=args.task, split=args.split, num_prompts=args.num_prompts,
        num_candidates=args.num_candidates, gen_length=args.gen_length,
        block_length=args.block_length, decoder=args.decoder, temperature=args.temperature,
        dtype=args.dtype,
    )  # fmt: skip
    task = make_task(config)
    loaded = load_model(config.model, dtype=config.dtype, device=args.device)
    items, _ = prepare_prompts(
        task,
        task.load(config.split, limit=config.num_prompts),
        loaded.tokenizer,
        config,
        model_max_length(loaded.model),
    )
    redundancy_config = config.redundancy_config()

    def run(batch_size: int) -> tuple[list[dict], float]:
        run_config = CollectConfig(**{**config.to_dict(), "batch_size": batch_size})
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        records = decode_candidates(
            loaded.model, loaded.spec, loaded.tokenizer, task, items, run_config,
            redundancy_config,
        )  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return records, time.perf_counter() - start

    run(max(batch_sizes))  # warm-up (allocator, kernels)
    results, reference, identical = [], None, True
    for batch_size in batch_sizes:
        records, seconds = run(batch_size)
        keyed = [(r["prompt_id"], r["candidate"], r["response_ids"], r["nfe"]) for r in records]
        if reference is None:
            reference = keyed
        identical &= keyed == reference
        results.append(
            {
                "batch_size": batch_size,
                "candidates": len(records),
                "seconds": round(seconds, 3),
                "candidates_per_second": round(len(records) / seconds, 2),
                "forwards_per_candidate": sum(r["nfe"] for r in records) / len(records),
            }
        )
    summary = summarize(records, select_lowest_redundancy(records))
    print(
        json.dumps(
            {
                "model": config.model,
                "task": config.task,
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
                "prompts": len(items),
                "num_candidates": config.num_candidates,
                "decoder": json.loads(config.base_decoder().to_json()),
                "throughput": results,
                "identical_across_batch_sizes": identical,
                "candidate_accuracy": summary["candidate_accuracy"],
                "prompts_with_correct": summary["prompts_with_correct"],
                "selected": summary["stats"]["selected"],
                "all_correct": summary["stats"]["all_correct"],
                "all_candidates": summary["stats"]["all_candidates"],
                "selected_vs_all_correct": summary["selected_vs_all_correct"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
