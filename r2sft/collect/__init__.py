"""Stage 1: candidate trajectories, correctness, minimal-R_total selection (``collect.py``)."""

from r2sft.collect.config import CollectConfig, CollectPlan
from r2sft.collect.pipeline import candidate_seed, decode_candidates, run_collect
from r2sft.collect.selection import (
    SELECTION_POLICIES,
    Selection,
    select_per_prompt,
    selection_key,
    summarize,
)

__all__ = [
    "SELECTION_POLICIES",
    "CollectConfig",
    "CollectPlan",
    "Selection",
    "candidate_seed",
    "decode_candidates",
    "run_collect",
    "select_per_prompt",
    "selection_key",
    "summarize",
]
