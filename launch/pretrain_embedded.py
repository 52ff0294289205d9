"""Reproduce the embedded tiny LLaDA (data/tiny-llada) from scratch with a fixed seed.

One run of the default schedule (9000 steps of 32 problems, two threads) on 2 CPU cores;
these commands reproduce the shipped model:

    python -m r2sft.embedded.make_task        # data/arith/*.jsonl (already shipped)
    python launch/pretrain_embedded.py --out runs/tiny-llada
    cp runs/tiny-llada/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,\\
chat_template.jinja,training_args.json} data/tiny-llada/

A quick smoke run: ``python launch/pretrain_embedded.py --steps 20 --out /tmp/smoke``.

Options are the fields of ``r2sft.embedded.pretrain.PretrainConfig`` (``--key value``, or a
YAML file with ``--config``) plus ``--out`` and ``--resume``. Checkpoints (model, tokenizer,
optimizer and noise state) go to ``OUT/checkpoint`` every ``save_every`` steps; ``--resume
true`` continues from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from r2sft.config import parse_config, run_main
from r2sft.embedded.pretrain import PretrainConfig, pretrain
from r2sft.paths import REPO_ROOT


@dataclass
class LaunchConfig(PretrainConfig):
    out: str = str(REPO_ROOT / "runs" / "tiny-llada")
    resume: bool = False


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse_config(
        LaunchConfig, args=argv, command="python launch/pretrain_embedded.py", summary=__doc__
    )
    fields = {k: v for k, v in vars(config).items() if k not in ("out", "resume")}
    pretrain(PretrainConfig(**fields), Path(config.out), resume=config.resume)


if __name__ == "__main__":
    run_main(main)
