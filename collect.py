"""Collect candidate decoding trajectories and keep the least redundant correct one per prompt.

Embedded default (tiny LLaDA, arithmetic task, the 2000 train prompts, K=4; ~3.5 min on 2 CPU
cores)::

    accelerate launch --num_processes 1 collect.py
    accelerate launch --num_processes 1 collect.py --num_prompts 16 --num_candidates 4 \\
        --output_dir outputs/collect-small

Real models (one process per GPU; flags override the YAML)::

    accelerate launch --num_processes 8 collect.py --config configs/llada_8b_gsm8k.yaml
    accelerate launch --num_processes 8 collect.py --config configs/llada_8b_humaneval.yaml \\
        --push_to_hub USER/llada-humaneval-r2-trajectories   # token from HF_TOKEN

Two CPU processes over gloo (tests / no GPU)::

    OMP_NUM_THREADS=1 ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \\
        collect.py --num_prompts 16

Interrupted runs (even ``kill -9``) resume: re-run the same command with the same
``--output_dir``. Outputs: ``OUTPUT_DIR/{selected,candidates}`` (datasets.save_to_disk),
``summary.json`` and a dataset card ``README.md``. ``python collect.py --help`` lists every
option; failures print one ``error: ...`` line (``--debug``: the traceback).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from r2sft.collect import CollectConfig, run_collect
from r2sft.config import parse_config, run_main


def main(argv: list[str]) -> dict[str, Any] | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_collect(
        parse_config(
            CollectConfig, args=argv, command="accelerate launch collect.py", summary=__doc__
        )
    )
    if summary is not None:
        shown = {
            k: summary[k]
            for k in (
                "prompts",
                "candidates",
                "candidate_accuracy",
                "prompts_with_correct",
                "selected",
                "wall_seconds",
            )
        }
        shown["selected_vs_all_correct"] = summary["selected_vs_all_correct"]
        print(json.dumps(shown, indent=2))
    return summary


if __name__ == "__main__":
    run_main(main)
