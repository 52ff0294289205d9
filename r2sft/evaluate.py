"""Decode a task's prompts with a dLLM and report accuracy, NFE and redundancy.

Launch::

    # embedded default: tiny LLaDA (data/tiny-llada) on the arith test split
    python -m r2sft.evaluate --decoder r2 --limit 100 --output outputs/eval_r2.json
    python -m r2sft.evaluate --decoder threshold --limit 100
    # LLaDA-8B-Instruct on local GSM8K, official R² settings, on a GPU
    python -m r2sft.evaluate --model GSAI-ML/LLaDA-8B-Instruct --task gsm8k \\
        --data_path ../shared/data/gsm8k --split test --limit 200 --decoder r2 \\
        --batch_size 16 --dtype bfloat16 --device cuda --output gsm8k_r2.json
    # any rule option overrides the preset: --threshold 0.8 --tau_t 0.7 --temporal_agg ave
    python -m r2sft.evaluate --config my_eval.yaml --limit 20

The library function :func:`evaluate` is what training calls at every checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from r2sft.decoding import (
    DecoderConfig,
    RedundancyConfig,
    decoder_config,
    generate,
    redundancy,
)
from r2sft.paths import (
    EMBEDDED_BLOCK_LENGTH,
    EMBEDDED_GEN_LENGTH,
    EMBEDDED_MODEL_DIR,
    EMBEDDED_TASK,
)
from r2sft.specs import LoadedModel, decode_response, encode_prompt
from r2sft.tasks import Example, Task, get_task


def evaluate(
    loaded: LoadedModel,
    task: Task,
    examples: list[Example],
    decoder: DecoderConfig,
    batch_size: int = 16,
    progress: bool = True,
    redundancy_config: RedundancyConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Decode ``examples`` with ``decoder`` and score them.

    Prompts are decoded in batches of similar length (a row's output does not depend on its
    batch, so the order changes nothing but padding); example ``i`` uses seed ``seed + i``.

    Returns a JSON-ready dict: ``accuracy``, ``mean_nfe``, ``tokens_per_forward``
    (generated canvas positions per forward), ``mean_r_s``, ``mean_r_t``, ``mean_r_total``,
    ``mean_r_total_per_token``, ``mean_response_tokens``, ``num_examples``,
    ``wall_seconds``, ``decoder`` and ``redundancy`` (the configs as dicts) and
    ``per_example`` (id, correct, nfe, r_s, r_t, r_total, response).
    """
    if not examples:
        raise ValueError("evaluate() got no examples; check the task split and --limit.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    decoder = DecoderConfig(**{**decoder.to_dict(), "record_trace": True})
    redundancy_config = redundancy_config or RedundancyConfig()
    tokenizer, spec = loaded.tokenizer, loaded.spec
    start = time.perf_counter()
    prompts = [encode_prompt(tokenizer, task.user_message(example)) for example in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    tokens: list[list[int]] = [[] for _ in examples]
    nfe = torch.zeros(len(examples), dtype=torch.long)
    r_s, r_t, r_total, r_per_token, lengths = (torch.zeros(len(examples)) for _ in range(5))
    bar = tqdm(total=len(examples), desc=f"decode {decoder.name}", disable=not progress)
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        result = generate(loaded.model, spec, [prompts[i] for i in rows], decoder,
                          seeds=[seed + i for i in rows])  # fmt: skip
        scores = redundancy(result, redundancy_config, eos_token_id=spec.eos_token_id)
        index = torch.tensor(rows)
        nfe[index] = result.nfe.long()
        r_s[index], r_t[index], r_total[index] = scores.r_s, scores.r_t, scores.r_total
        r_per_token[index] = scores.r_total_per_token
        lengths[index] = scores.response_length.float()
        for position, row in enumerate(rows):
            tokens[row] = result.tokens[position].tolist()
        bar.update(len(rows))
    bar.close()
    responses = [decode_response(tokenizer, spec, row_tokens) for row_tokens in tokens]
    correct = task.is_correct_batch(examples, responses)
    count = len(examples)
    return {
        "accuracy": sum(correct) / count,
        "mean_nfe": nfe.float().mean().item(),
        "tokens_per_forward": decoder.gen_length * count / nfe.sum().item(),
        "mean_r_s": r_s.mean().item(),
        "mean_r_t": r_t.mean().item(),
        "mean_r_total": r_total.mean().item(),
        "mean_r_total_per_token": r_per_token.mean().item(),
        "mean_response_tokens": lengths.mean().item(),
        "num_examples": count,
        "wall_seconds": time.perf_counter() - start,
        "decoder": decoder.to_dict(),
        "redundancy": redundancy_config.to_dict(),
        "per_example": [
            {
                "id": example.id,
                "correct": bool(ok),
                "nfe": int(nfe[i]),
                "r_s": float(r_s[i]),
                "r_t": float(r_t[i]),
                "r_total": float(r_total[i]),
                "response": responses[i],
            }
            for i, (example, ok) in enumerate(zip(examples, correct, strict=True))
        ],  # fmt: skip
    }


@dataclass
class EvaluateArgs:
    """Command line of ``python -m r2sft.evaluate`` (None: the preset's / default value)."""

    model: str | None = None  # local folder or Hub id; default: the embedded tiny LLaDA
    task: str | None = None  # registered task name; default: the embedded "arith"
    data_path: str | None = None  # task data (file or folder); default: the task's own
    split: str = "test"
    limit: int | None = None  # first N examples of the split
    decoder: str = "r2"  # fixed | threshold | factor | r2
    batch_size: int = 16
    output: str | None = None  # JSON file for the metrics and per-example results
    dtype: str = "auto"
    device: str | None = None  # e.g. cuda; default: CPU
    seed: int = 0
    progress: bool = True
    # Decoder overrides (see r2sft.decoding.DecoderConfig).
    gen_length: int | None = None
    block_length: int | None = None
    policy: str | None = None
    steps: int | None = None
    threshold: float | None = None
    factor: float | None = None
    window: int | None = None
    tau_s: float | None = None
    u_max: int | None = None
    token_cluster_mode: str | None = None
    temporal_k: int | None = None
    tau_t: float | None = None
    temporal_agg: str | None = None
    temperature: float | None = None


_DECODER_FIELDS = ("gen_length", "block_length", "policy", "steps", "threshold", "factor",
                   "window", "tau_s", "u_max", "token_cluster_mode", "temporal_k", "tau_t",
                   "temporal_agg", "temperature")  # fmt: skip


def decoder_from_args(args: EvaluateArgs, task_name: str) -> DecoderConfig:
    """The decoder preset with the command-line overrides; the embedded task's canvas
    (gen/block length) is the default when evaluating it."""
    overrides = {name: getattr(args, name) for name in _DECODER_FIELDS}
    if task_name == EMBEDDED_TASK:
        overrides["gen_length"] = overrides["gen_length"] or EMBEDDED_GEN_LENGTH
        overrides["block_length"] = overrides["block_length"] or EMBEDDED_BLOCK_LENGTH
    return decoder_config(args.decoder, **overrides)


def _print_table(metrics: dict[str, Any]) -> None:
    keys = ["accuracy", "mean_nfe", "tokens_per_forward", "mean_r_s", "mean_r_t",
            "mean_r_total", "mean_r_total_per_token", "num_examples", "wall_seconds"]  # fmt: skip
    print(f"decoder: {json.dumps(metrics['decoder'], sort_keys=True)}")
    for key in keys:
        value = metrics[key]
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<24}{text:>12}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from r2sft.config import parse_config
    from r2sft.specs import load_model

    args = parse_config(EvaluateArgs, args=argv)
    task_name = args.task or EMBEDDED_TASK
    decoder = decoder_from_args(args, task_name)
    model_path = args.model or str(EMBEDDED_MODEL_DIR)
    if args.model is None and not Path(model_path).is_dir():
        raise SystemExit(
            f"error: the embedded default model folder {model_path} does not exist. Build it "
            "with `python launch/pretrain_embedded.py`, or pass --model."
        )
    task = get_task(task_name, **({"path": args.data_path} if args.data_path else {}))
    examples = task.load(args.split, limit=args.limit)
    loaded = load_model(model_path, dtype=args.dtype, device=args.device)
    metrics = evaluate(loaded, task, examples, decoder, batch_size=args.batch_size,
                       progress=args.progress, seed=args.seed)  # fmt: skip
    metrics = {"model": model_path, "task": task_name, "split": args.split, **metrics}
    _print_table(metrics)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2))
        print(f"wrote {output}")
    return metrics


if __name__ == "__main__":
    main()
