"""GSM8K grade-school math: final numeric answer, checked numerically and by math-verify.

Data: a local folder (or file) of JSONL in the format of the original release
(``question``, ``answer`` ending in ``#### N``), e.g. a folder with ``train.jsonl`` /
``test.jsonl``; without a path, the Hub dataset ``openai/gsm8k``
(config "main") through ``datasets.load_dataset`` (needs network).

A response's answer is its last ``#### N``, else its last ``\\boxed{...}``, else its last
number. It is correct when it equals the reference numerically or math-verify finds them
equivalent (``1,000`` vs ``1000``, ``1/2`` vs ``0.5``). math-verify runs with
``parsing_timeout=None`` / ``timeout_seconds=None`` because its SIGALRM timeouts raise
outside the main thread.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from math_verify import parse, verify

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.files import find_split_file, load_hub_rows, read_jsonl, reject_record

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
        # Two plain numbers: compared directly (math-verify would agree, only slower).
        return abs(float(predicted) - float(reference)) < 1e-6
    except ValueError:
        pass
    gold = parse(f"${reference}$", parsing_timeout=None)
    guess = parse(f"${predicted}$", parsing_timeout=None)
    return bool(gold and guess and verify(gold, guess, timeout_seconds=None))


@register_task("gsm8k")
class GSM8KTask(Task):
    """GSM8K from a local JSONL folder/file (``path``) or from the Hub (``openai/gsm8k``).

    Subclasses for other data in the same format (``question`` / ``answer`` ending in
    ``#### N``) set ``default_path``, ``id_prefix``, ``instruction`` and ``splits``.
    """

    hub_name: ClassVar[str] = "openai/gsm8k"
    hub_config: ClassVar[str] = "main"
    id_prefix: ClassVar[str] = "gsm8k"
    instruction: ClassVar[str] = (
        "Solve the problem step by step. Finish with a line '#### <answer>'."
    )
    splits: ClassVar[tuple[str, ...] | None] = None  # None: whatever the data has

    def _rows(self, split: str) -> tuple[list[dict[str, Any]], str]:
        if self.path is None:
            return load_hub_rows(self.hub_name, split, self.hub_config), f"{self.hub_name}[{split}]"
        file = find_split_file(self.path, split)
        rows = read_jsonl(file, ("question", "answer"), self.options.skip_invalid, self.skipped)
        return rows, str(file)

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        if self.splits is not None and split not in self.splits:
            raise ValueError(
                f"unknown {self.name} split {split!r}; use one of {', '.join(self.splits)}"
            )
        self.skipped = []
        rows, source = self._rows(split)
        examples = []
        for index, row in enumerate(rows):
            reference = reference_answer(row["answer"])
            if reference is None:
                problem = f"{source}:{row['_line']}: answer has no final '#### N'"
                reject_record(problem, self.options.skip_invalid, self.skipped)
                continue
            example_id = f"{self.id_prefix}-{split}-{index}"
            examples.append(
                Example(example_id, row["question"], reference, {"solution": row["answer"]})
            )
        return examples[:limit]

    def user_message(self, example: Example) -> str:
        return f"{example.question}\n{self.instruction}" if self.instruction else example.question

    def is_correct(self, example: Example, response: str) -> bool:
        return answers_match(extract_answer(response), example.reference)
