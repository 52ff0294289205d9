"""MATH-style problems judged by math-verify equivalence (``\\boxed{}`` answers).

Reads a local JSONL(.gz) file or a folder with ``{split}.jsonl`` in the format of the MATH
data set (``problem`` plus ``solution`` whose last ``\\boxed{...}`` is the answer) or of
MATH-500 (``problem`` plus ``answer``), or a Hub name when online (default
``HuggingFaceH4/MATH-500``, split "test").

math-verify runs with ``parsing_timeout=None`` / ``timeout_seconds=None``: its timeouts use
SIGALRM, which raises outside the main thread (stack-notes), and scoring may run in worker
threads. Its "timeout is disabled" warning is silenced for that reason.
"""

from __future__ import annotations

import logging

from math_verify import parse, verify

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.files import find_split_file, load_hub_rows, read_jsonl, reject_record


class _NoTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify", "math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_brace = text.find("{", start)
    if open_brace < 0:
        return None
    depth = 0
    for index in range(open_brace, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
    return None


def answers_equivalent(reference: str, response: str) -> bool:
    """Whether ``response`` states an answer math-verify finds equal to ``reference``."""
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    predicted = parse(response, parsing_timeout=None)
    if not gold or not predicted:
        return False
    return bool(verify(gold, predicted, timeout_seconds=None))


@register_task("math")
class MathTask(Task):
    """Competition math (MATH / MATH-500 format) with math-verify answer checking."""

    description = "competition math, answers checked by math-verify (MATH-500)"
    hub_name = "HuggingFaceH4/MATH-500"

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        self.skipped = []
        if self.path is None:
            rows, source = load_hub_rows(self.hub_name, split), self.hub_name
        else:
            file = find_split_file(self.path, split)
            options = self.options
            rows = read_jsonl(file, ("problem",), options.skip_invalid, self.skipped,
                              text_fields=("problem",))  # fmt: skip
            source = file
        examples = []
        for index, row in enumerate(rows):
            where = f"{source}:{row['_line']}"
            answer = row.get("answer") or last_boxed(row.get("solution") or "")
            if not answer:
                problem = f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'"
                reject_record(problem, self.options.skip_invalid, self.skipped)
                continue
            example_id = str(row.get("unique_id") or row.get("id") or f"math-{split}-{index}")
            examples.append(Example(example_id, row["problem"], str(answer), {"source": where}))
        return examples[:limit]

    def user_message(self, example: Example) -> str:
        return (
            f"{example.question}\nPlease reason step by step, and put your final answer "
            "within \\boxed{}."
        )

    def is_correct(self, example: Example, response: str) -> bool:
        return answers_equivalent(example.reference, response)
