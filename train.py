"""Redundancy-aware SFT of a masked-diffusion LM on collected minimal-redundancy trajectories.

Launch commands::

    # the embedded default (tiny LLaDA on the arith task, data from the default collect run)
    accelerate launch --num_processes 1 train.py
    python train.py --objective llada --max_steps 40 --save_steps 20 --eval_limit 16

    # any config file plus overrides
    accelerate launch train.py --config configs/train_embedded.yaml --objective certainty_forcing

    # LLaDA-8B-Instruct on GSM8K trajectories, LoRA, 8 GPUs with DeepSpeed ZeRO-2
    accelerate launch --config_file launch/accelerate/zero2.yaml --num_processes 8 \\
        train.py --config configs/llada_8b_gsm8k_train.yaml
    # continue a run exactly where its newest checkpoint left it, then upload
    accelerate launch --config_file launch/accelerate/zero2.yaml train.py \\
        --config configs/llada_8b_gsm8k_train.yaml --resume_from_checkpoint latest \\
        --push_to_hub --hub_model_id my-org/llada-8b-r2sft   # token from HF_TOKEN

    # multi-node (SLURM): sbatch launch/slurm_train.sh configs/llada_8b_gsm8k_train.yaml

Writes OUTPUT_DIR/checkpoint-*/ (each with r2sft_metrics.json), metrics.jsonl, metrics.png,
TensorBoard logs and final/ (model, tokenizer, model card). Every option (r2sft's and every
transformers TrainingArguments flag): ``--help``. Failures print one ``error: ...`` line;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
from typing import Any

from r2sft.config import parse_config, run_main
from r2sft.training import TrainConfig, train


def main(argv: list[str]) -> dict[str, Any]:
    result = train(
        parse_config(TrainConfig, args=argv, command="accelerate launch train.py", summary=__doc__)
    )
    if result["trainer"].accelerator.is_main_process:
        summary = {"final": str(result["final"]), "tracked": result["records"]}
        if result["hub_url"]:
            summary["hub_url"] = result["hub_url"]
        print(json.dumps(summary, indent=2))
    return result


if __name__ == "__main__":
    run_main(main)
