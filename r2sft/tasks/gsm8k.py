"""GSM8K grade-school math: final numeric answer, checked numerically and by math-verify.

Data: a local folder (or file) of JSONL in the format of the original release
(``question``, ``answer`` ending in ``#### N``), e.g. ``../shared/data/gsm8k`` with
``train.jsonl`` / ``test.jsonl``; without a path, the Hub dataset ``openai/gsm8k``
(config "main") through ``datasets.load_dataset`` (needs network).

A response's answer is its last ``#### N``, else its last ``\\boxed{...}``, else its last
number. It is correct when it equals the reference numerically or math-verify finds them
equivalent (``1,000`` vs ``1000``, ``1/2`` vs ``0.5``). math-verify runs with
``parsing_timeout=None`` / ``timeout_seconds=None`` because its SIGALRM timeouts raise
outside the main thread.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from math_verify import parse, verify

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.code import find_split_file, read_jsonl

_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+(?:/\d+)?)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last ``#### N``, else last ``\\boxed{}``, else last
    number; commas and a trailing period removed. None when the text has no number."""
    for pattern in (_FINAL, _BOXED, _NUMBER):
        found = pattern.findall(text)
        if found:
            return found[-1].replace(",", "").replace("$", "").strip().rstrip(".")
    return None


def reference_answer(solution: str) -> str | None:
    """The ``#### N`` of a GSM8K solution (commas removed)."""
    found = _FINAL.findall(solution)
    return found[-1].replace(",", "").rstrip(".") if found else None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Numeric equality, else math-verify equivalence of the two answer strings."""
    if not predicted:
        return False
    try:
        if abs(float(predicted) - float(reference)) < 1e-6:
            return True
    except ValueError:
        pass
    gold = parse(f"${reference}$", parsing_timeout=None)
    guess = parse(f"${predicted}$", parsing_timeout=None)
    return bool(gold and guess and verify(gold, guess, timeout_seconds=None))


@register_task("gsm8k")
class GSM8KTask(Task):
    """GSM8K from a local JSONL folder/file (``path``) or from the Hub (``hub_name``)."""

    hub_name = "openai/gsm8k"
    hub_config = "main"
    instruction = "Solve the problem step by step. Finish with a line '#### <answer>'."

    def __init__(self, path: str | Path | None = None, hub_name: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if hub_name is not None:
            self.hub_name = hub_name

    def _rows(self, split: str) -> tuple[list[dict[str, Any]], str]:
        if self.path is not None:
            file = find_split_file(self.path, split)
            return read_jsonl(file, ("question", "answer")), str(file)
        from datasets import load_dataset  # Hub access only when no local path is given

        rows = [dict(row) for row in load_dataset(self.hub_name, self.hub_config, split=split)]
        for index, row in enumerate(rows):
            row["_line"] = index + 1
        return rows, f"{self.hub_name}[{split}]"

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        rows, source = self._rows(split)
        examples = []
        for index, row in enumerate(rows[:limit]):
            reference = reference_answer(row["answer"])
            if reference is None:
                line = row.get("_line", index + 1)
                raise ValueError(
                    f"{source}:{line}: GSM8K answer has no final '#### N'; fix the record or "
                    "remove it."
                )
            examples.append(
                Example(
                    f"gsm8k-{split}-{index}",
                    row["question"],
                    reference,
                    {"solution": row["answer"]},
                )  # fmt: skip
            )
        return examples

    def user_message(self, example: Example) -> str:
        return f"{example.question}\n{self.instruction}"

    def is_correct(self, example: Example, response: str) -> bool:
        return answers_match(extract_answer(response), example.reference)
