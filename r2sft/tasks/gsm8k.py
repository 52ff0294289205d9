"""GSM8K grade-school math: final numeric answer, checked numerically and by math-verify.

Data: a local folder (or file) of JSONL in the format of the original release
(``question``, ``answer`` ending in ``#### N``), e.g. a folder with ``train.jsonl`` /
``test.jsonl``; without a path, the Hub dataset ``openai/gsm8k``
(config "main") through ``datasets.load_dataset`` (needs network).

A response's answer (:func:`extract_answer`) is the number after its first ``####`` that
has one, else the number in its last ``\\boxed{...}`` that has one, else its last number
(fractions included); why the first ``####`` and not the last: see that function. It is
correct when it equals the reference numerically or math-verify finds them equivalent
(``1,000`` vs ``1000``, ``1/2`` vs ``0.5``). math-verify runs with ``parsing_timeout=None``
/ ``timeout_seconds=None`` because its SIGALRM timeouts raise outside the main thread.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from math_verify import parse, verify

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.files import find_split_file, load_hub_rows, read_jsonl, reject_record

# The answer marker and the rest of its line (or the next line when the marker ends one).
_MARKER = re.compile(r"####[ \t]*(?:\n[ \t]*)?([^\n]*)")
# A number: a minus sign only where it cannot be a hyphen ("5-10"), decimals, fractions.
_NUMBER = re.compile(r"(?:(?<![\w)\]])-)?(?<![\d.])(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+(?:\.\d+)?)?")
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_LATEX_SPACING = re.compile(r"\\[,!;: ]|\{,\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _clean(text: str) -> str:
    """Text with its numbers in plain form: no currency signs (so ``-$10`` keeps its sign),
    thousands separators, LaTeX spacing or ``\\text{}`` wrappers; ``\\frac{a}{b}`` as a/b."""
    text = text.replace("\u2212", "-")  # a Unicode minus
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _LATEX_FRACTION.sub(r"\1/\2", text)
    text = _LATEX_SPACING.sub("", text)
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "%")
    return _THOUSANDS.sub("", text)


def _number_in(fragment: str) -> str | None:
    """The answer a short answer fragment states: its first number, or the first after its
    last ``=`` (``5 + 3 = 8``); None when it has none. ``240 dollars`` gives 240."""
    text = _clean(fragment)
    if "=" in text and _NUMBER.search(text.rsplit("=", 1)[1]):
        text = text.rsplit("=", 1)[1]
    found = _NUMBER.search(text)
    return found.group(0) if found else None


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced, in order."""
    contents = []
    for start in _BOX_START.finditer(text):
        depth = 1
        for index in range(start.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                contents.append(text[start.end() : index])
                break
    return contents


def extract_answer(text: str) -> str | None:
    """The final answer of a response, as a plain number string (``-10``, ``1234``, ``3/4``).

    In order: the number right after the first ``####`` that is followed by one (on its
    line, or the next when the marker ends a line); else the number in the last
    ``\\boxed{}`` that holds one (``\\boxed{240 dollars}``, ``\\boxed{\\$240,000}``; an
    empty box is passed over); else the last number of the text. None when there is none.

    The first ``####`` wins over later ones because the marker is where the task's format
    ends an answer (the prompt asks to *finish* with it; references end there): what a
    model writes after it is not part of its answer. That is the chatter of decoders that
    fill a fixed canvas or keep going after the answer -- an "Explanation" ending in
    ``#### 3 apples were left``, or a whole new question and answer -- and taking the last
    marker would score that chatter instead of the answer. (lm-evaluation-harness's GSM8K
    strict match likewise takes the first ``####``.) A ``\\boxed{}`` answer, by contrast,
    is conventionally the last one, as earlier boxes may hold intermediate results.
    """
    for marker in _MARKER.finditer(text):
        answer = _number_in(marker.group(1))
        if answer is not None:
            return answer
    for content in reversed(_boxed_contents(text)):
        answer = _number_in(content)
        if answer is not None:
            return answer
    numbers = _NUMBER.findall(_clean(text))
    return numbers[-1] if numbers else None


def reference_answer(solution: str) -> str | None:
    """The final ``#### N`` of a GSM8K solution as a plain number (commas removed); None
    when the solution has no marker followed by a number."""
    markers = [_number_in(marker.group(1)) for marker in _MARKER.finditer(solution)]
    markers = [answer for answer in markers if answer is not None]
    return markers[-1] if markers else None


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

    description = "grade-school math word problems (local JSONL or openai/gsm8k)"
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
        rows = read_jsonl(
            file, ("question", "answer"), self.options.skip_invalid, self.skipped,
            text_fields=("question", "answer"),
        )  # fmt: skip
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
