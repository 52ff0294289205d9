"""Reproduce the embedded tiny LLaDA (data/tiny-llada) from scratch with a fixed seed.

    OMP_NUM_THREADS=2 python launch/pretrain_embedded.py                      # shipped model
    OMP_NUM_THREADS=2 python launch/pretrain_embedded.py --out /tmp/tiny-llada --resume true
    python launch/pretrain_embedded.py --steps 50 --out /tmp/smoke           # quick smoke run

Options are the fields of ``r2sft.embedded.pretrain.PretrainConfig`` (``--key value``, or a
YAML file with ``--config``) plus ``--out`` and ``--resume``. The defaults train the shipped
model (about 40 minutes on 2 CPU cores); the tokenizer is rebuilt from the same seed. The
split files of the task are rewritten with ``python -m r2sft.embedded.make_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r2sft.config import parse_config
from r2sft.embedded.pretrain import PretrainConfig, pretrain
from r2sft.paths import EMBEDDED_MODEL_DIR


@dataclass
class LaunchConfig(PretrainConfig):
    out: str = str(EMBEDDED_MODEL_DIR)
    resume: bool = False


def main() -> None:
    config = parse_config(LaunchConfig)
    fields = {k: v for k, v in vars(config).items() if k not in ("out", "resume")}
    pretrain(PretrainConfig(**fields), Path(config.out), resume=config.resume)


if __name__ == "__main__":
    main()
