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

import dataclasses
import json
import platform
import time
from dataclasses import dataclass

import torch

from r2sft.collect import CollectConfig
from r2sft.collect.pipeline import decode_candidates
from r2sft.collect.selection import select_per_prompt, summarize
from r2sft.config import parse_config
from r2sft.scoring import model_max_length, prepare_prompts
from r2sft.specs import default_device, load_model


@dataclass
class BenchCollectArgs(CollectConfig):
    """collect.py's options (task, decoder, candidates...) plus the batch sizes to time."""

    num_prompts: int | None = 16
    num_candidates: int = 8
    batch_sizes: str = "1,2,4,8,16,32"
    device: str | None = None  # default: cuda when available, else cpu


def main() -> None:
    config = parse_config(
        BenchCollectArgs, command="python bench/bench_collect.py", summary=__doc__
    )
    batch_sizes = [int(b) for b in config.batch_sizes.split(",")]
    device = default_device(config.device)
    task = config.make_task()
    loaded = load_model(config.model, dtype=config.dtype, device=device)
    items, _ = prepare_prompts(
        task,
        task.load(config.split, limit=config.num_prompts),
        loaded.tokenizer,
        config.base_decoder().gen_length,
        model_max_length(loaded.model),
    )
    plan = config.plan()

    def run(batch_size: int) -> tuple[list[dict], float]:
        run_config = dataclasses.replace(config, batch_size=batch_size)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        records = decode_candidates(
            loaded.model, loaded.spec, loaded.tokenizer, task, items, run_config, plan,
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
    summary = summarize(records, select_per_prompt(records, config.selection))
    print(
        json.dumps(
            {
                "model": config.model,
                "task": config.task,
                "device": device,
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
