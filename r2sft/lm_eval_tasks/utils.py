"""Data of the lm-eval tasks in this folder (loaded by ``custom_dataset: !function``)."""

from __future__ import annotations

from typing import Any

import datasets

from r2sft.paths import EMBEDDED_TASK_DIR
from r2sft.tasks.arith import SPLITS


def arith_splits(**_: Any) -> datasets.DatasetDict:
    """The embedded arith task's split files (``data/arith/{train,dev,test}.jsonl``), rows in
    file order, so document d is ``r2sft.evaluate``'s example d. lm-eval passes the model
    arguments and task metadata as keywords; none of them change the data."""
    files = {split: str(EMBEDDED_TASK_DIR / f"{split}.jsonl") for split in SPLITS}
    return datasets.load_dataset("json", data_files=files)
