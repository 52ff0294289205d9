"""Data of the lm-eval tasks in this folder (loaded by ``custom_dataset: !function``)."""

from __future__ import annotations

from typing import Any

import datasets

from r2sft.paths import EMBEDDED_TASK_DIR
from r2sft.tasks.arith import SPLITS
from r2sft.tasks.gsm8k import answers_match, extract_answer, reference_answer


def arith_splits(**_: Any) -> datasets.DatasetDict:
    """The embedded arith task's split files (``data/arith/{train,dev,test}.jsonl``), rows in
    file order, so document d is ``r2sft.evaluate``'s example d. lm-eval passes the model
    arguments and task metadata as keywords; none of them change the data."""
    files = {split: str(EMBEDDED_TASK_DIR / f"{split}.jsonl") for split in SPLITS}
    return datasets.load_dataset("json", data_files=files)


def r2sft_answers(resps: list[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """The ``r2sft-scorer`` filter: r2sft's own GSM8K verdict inside lm-eval. A response the
    scorer of ``r2sft.evaluate`` accepts (its final answer, :func:`extract_answer`: the last
    ``####`` line, answer phrase or ``\\boxed{}``, else the last number; equal numerically
    or by math-verify) becomes the reference's final answer, so exact_match is that verdict;
    others keep their extracted answer (or nothing). lm-eval's strict and flexible filters
    stay beside it; strict-match takes the first ``####``, so it can pass an answer the
    response later withdrew, which this filter does not."""
    filtered = []
    for responses, doc in zip(resps, docs, strict=True):
        reference = reference_answer(doc["answer"]) or ""
        answers = []
        for response in responses:
            answer = extract_answer(response)
            answers.append(reference if answers_match(answer, reference) else answer or "")
        filtered.append(answers)
    return filtered
