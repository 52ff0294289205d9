"""Filesystem locations of the embedded defaults shipped with the repository.

r2sft is installed editable (``pip install -e .``) so these resolve inside the checkout.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
# The small LLaDA-architecture dLLM trained by launch/pretrain_embedded.py.
EMBEDDED_MODEL_DIR = DATA_DIR / "tiny-llada"
# The procedurally generated arithmetic word-problem task (GSM8K format).
EMBEDDED_TASK_DIR = DATA_DIR / "arith"
EMBEDDED_TASK = "arith"

# Canvas of the embedded task: every answer plus its end-of-text fill fits in it.
EMBEDDED_GEN_LENGTH = 64
EMBEDDED_BLOCK_LENGTH = 16

# Default hand-off between the stages: collect.py writes here and train.py reads it, both
# resolved inside the checkout so the default pipeline works from any working directory.
OUTPUTS_DIR = REPO_ROOT / "outputs"
DEFAULT_COLLECT_DIR = OUTPUTS_DIR / "collect"
DEFAULT_TRAIN_DIR = OUTPUTS_DIR / "train"
