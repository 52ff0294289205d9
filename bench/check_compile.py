"""Is ``--compile`` (the dual cache's in-block step through torch.compile) token- and
NFE-identical to eager decoding? Decodes a task split both ways per decoder and compares
every row. Prints (and writes) one JSON object.

    OMP_NUM_THREADS=1 python bench/check_compile.py --output compile.json   # embedded, test split
    python bench/check_compile.py --model PATH --device cuda --dtype bfloat16 --limit 200

The first compiled decode includes the compilation (``compiled_seconds`` is the second run).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2sft.config import parse_config
from r2sft.decoding import DecoderArgs, generate
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.scoring import model_max_length, prepare_prompts
from r2sft.specs import default_device, load_model
from r2sft.tasks import TaskArgs


@dataclass
class CheckCompileArgs(TaskArgs):
    model: str = str(EMBEDDED_MODEL_DIR)
    preset: str = "model"
    decoders: str = "threshold,r2"
    cache: str = "dual"
    split: str = "test"
    limit: int | None = None
    batch_size: int = 16
    device: str | None = None
    dtype: str = "auto"
    output: str | None = None


def timed(function: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def run(args: CheckCompileArgs) -> dict[str, Any]:
    task = args.make_task()
    loaded = load_model(args.model, dtype=args.dtype, device=default_device(args.device))
    examples = task.load(args.split, limit=args.limit)
    report: dict[str, Any] = {"model": args.model, "split": args.split,
                              "num_examples": len(examples), "decoders": {}}  # fmt: skip
    for name in [item.strip() for item in args.decoders.split(",") if item.strip()]:
        eager = DecoderArgs(decoder=name, preset=args.preset, cache=args.cache).resolve(
            task, model=args.model)  # fmt: skip
        compiled = dataclasses.replace(eager, compile=True)
        items, _ = prepare_prompts(task, examples, loaded.tokenizer, eager.gen_length,
                                   model_max_length(loaded.model))  # fmt: skip
        prompts = [item.ids for item in items]

        def decode(config: Any, prompts: list[list[int]] = prompts) -> Any:
            return generate(loaded.model, loaded.spec, prompts, config,
                            batch_size=args.batch_size)  # fmt: skip

        reference, eager_seconds = timed(lambda config=eager: decode(config))
        _, first_seconds = timed(lambda config=compiled: decode(config))
        result, compiled_seconds = timed(lambda config=compiled: decode(config))
        same_tokens = (result.tokens == reference.tokens).all(dim=-1)
        report["decoders"][name] = {
            "rows": len(prompts),
            "identical_tokens": int(same_tokens.sum()),
            "identical_nfe": int((result.nfe == reference.nfe).sum()),
            "identical_step_maps": int((result.step_map == reference.step_map).all(-1).sum()),
            "eager_seconds": eager_seconds,
            "compiled_first_seconds": first_seconds,
            "compiled_seconds": compiled_seconds,
            "cache": eager.cache,
            "torch_threads": torch.get_num_threads(),
        }
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    report = run(parse_config(CheckCompileArgs, args=argv))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
