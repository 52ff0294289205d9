"""GSM8K grade-school math: final numeric answer, checked numerically and by math-verify.

Data: a local folder (or file) of JSONL in the format of the original release
(``question``, ``answer`` ending in ``#### N``), e.g. a folder with ``train.jsonl`` /
``test.jsonl``; without a path, the Hub dataset ``openai/gsm8k``
(config "main") through ``datasets.load_dataset`` (needs network).

A response's answer (:func:`extract_answer`) is the final one it states: the last of its
``#### N`` lines, answer phrases ("The answer is N", "Answer: N") and ``\\boxed{N}``, with
the response cut where it starts a new question; without any, its last number (fractions
included). It is correct when it equals the reference numerically or math-verify finds
them equivalent (``1,000`` vs ``1000``, ``1/2`` vs ``0.5``). math-verify runs with
``parsing_timeout=None`` / ``timeout_seconds=None`` because its SIGALRM timeouts raise
outside the main thread.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from math_verify import parse, verify

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.files import find_split_file, load_hub_rows, read_jsonl, reject_record

# The answer marker and the rest of its line (or the next line when the marker ends one).
_MARKER = re.compile(r"####[ \t]*(?:\n[ \t]*)?([^\n]*)")
# An answer phrase and the rest of its line (or the next line when the phrase ends one):
# "... the (final) answer is N" anywhere, with N right after it (not "isn't", not "the answer
# is not 12", not "the answer is consistent with step 2"); "Answer: N", "Final answer: N",
# "**Answer:** N" at the start of a line (so "check the answer: 12 / 3 = 4" is no answer).
_PHRASE = re.compile(
    r"(?:\banswer\s+is\b(?=[ \t*_:]*(?:\n[ \t]*)?[-\u2212$\\(.\d])"
    r"|^[ \t>#*_]*(?:final\s+)?answer[*_]*[ \t]*:)[ \t*_:]*(?:\n[ \t]*)?([^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
# Where an answer fragment's leading statement ends: a parenthesis, a semicolon, a comma or
# full stop before a space, "since" / "because". An equation after it ("#### 18 (check: 18 =
# 2 * 9)", "6, since 6 = 2 x 3") checks the answer; it does not state it.
_CLAUSE_END = re.compile(r"[(;]|[,.](?=\s)|\s(?:since|because)\b", re.IGNORECASE)
# A line opening a new question: where lm-eval's GSM8K tasks stop generating ("Question:"
# for gsm8k, "Q:" for gsm8k_cot); what follows it is another problem, not this answer.
_NEW_QUESTION = re.compile(r"^[ \t>#*_]*(?:Question|Q)[*_]*[ \t]*:", re.MULTILINE)
# A number: a minus sign only where it cannot be a hyphen ("5-10"), decimals, fractions.
_NUMBER = re.compile(r"(?:(?<![\w)\]])-)?(?<![\d.])(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+(?:\.\d+)?)?")
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_LATEX_SPACING = re.compile(r"\\[,!;: ]|\{,\}")
_LATEX_MATH_DELIMITERS = re.compile(r"\\[()\[\]]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Digit groups split by a space, no-break space or thin space (U+2009, U+202F): a first group
# of 1-3 digits, then only groups of exactly 3 ("1 400", "12 345 678"; not "14 apples 3").
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?![\d])")


def _clean(text: str) -> str:
    """Text with its numbers in plain form: no currency signs (so ``-$10`` keeps its sign),
    thousands separators, LaTeX spacing, math delimiters or ``\\text{}`` wrappers;
    ``\\frac{a}{b}`` as a/b."""
    text = text.replace("\u2212", "-")  # a Unicode minus
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _LATEX_FRACTION.sub(r"\1/\2", text)
    text = _LATEX_SPACING.sub("", text)
    text = _LATEX_MATH_DELIMITERS.sub(" ", text)  # \( 3 \times 4 = 12 \): no parenthesis
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "%")
    return _THOUSANDS.sub("", text)


def _number_in(fragment: str) -> str | None:
    """The answer a short answer fragment states: its first number, or, when its leading
    statement is an equation (``5 + 3 = 8``), the first after that statement's last ``=``;
    None when it has none. ``240 dollars`` gives 240, ``1 400`` (a space or thin space between
    thousands) 1400, ``18 (check: 18 = 2 * 9)`` 18. Only for what follows an answer marker,
    phrase or box: in running text "step 1 200 apples" is two numbers."""
    text = _clean(fragment)
    text = _SPACED_THOUSANDS.sub(lambda m: re.sub(r"\D", "", m.group(0)), text)
    clause_end = _CLAUSE_END.search(text)
    statement = text[: clause_end.start()] if clause_end else text
    if "=" in statement and _NUMBER.search(statement.rsplit("=", 1)[1]):
        text = statement.rsplit("=", 1)[1]
    found = _NUMBER.search(text)
    return found.group(0) if found else None


def _boxes(text: str) -> list[tuple[int, str]]:
    """``(position, contents)`` of every ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced,
    in order."""
    found = []
    for start in _BOX_START.finditer(text):
        depth = 1
        for index in range(start.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                found.append((start.start(), text[start.end() : index]))
                break
    return found


def stated_answers(text: str) -> list[tuple[int, str]]:
    """``(position, answer)`` of every answer ``text`` states explicitly, in order: each
    ``####`` line, answer phrase and ``\\boxed{}`` that holds a number (one without a number
    is passed over), up to the first new question ("Question:", "Q:") after the first
    answer. A phrase holding a box (``The answer is \\boxed{5}``) states its number twice."""
    fragments = [(m.start(), m.group(1)) for m in _MARKER.finditer(text)]
    fragments += [(m.start(), m.group(1)) for m in _PHRASE.finditer(text)]
    fragments += _boxes(text)
    answers = sorted(
        (position, answer)
        for position, fragment in fragments
        if (answer := _number_in(fragment)) is not None
    )
    if not answers:
        return []
    new_question = _NEW_QUESTION.search(text, answers[0][0])
    end = new_question.start() if new_question else len(text)
    return [(position, answer) for position, answer in answers if position < end]


def extract_answer(text: str) -> str | None:
    """The final answer of a response, as a plain number string (``-10``, ``1234``, ``3/4``).

    The response's answer is the last one it states (:func:`stated_answers`): the number of
    its last ``#### N`` line (on the marker's line, or the next when the marker ends one),
    "The answer is N" / "Answer: N" phrase or ``\\boxed{N}`` (``\\boxed{240 dollars}``,
    ``\\boxed{\\$240,000}``), whichever comes last. A statement's answer is the first
    number after it on its line (after its last ``=`` when it has one: ``#### 5 + 3 = 8``),
    so numbers that merely follow it ("The answer is 160. I hope step 2 was clear.") do not
    replace it. Without any such statement, the last number of the text.
    None when there is none. Inside a statement, ``1,000``, ``1 400`` and ``1\\u2009400``
    (thin space) are single numbers.

    Why the last statement: a response is judged by the answer it ends with. A model that
    writes ``#### 104``, then "Hmm, on second thought" and ``#### 107`` has answered 107;
    taking the first marker, as lm-eval's GSM8K strict match does (its regex filter takes
    the first match), would pass the withdrawn 104 against a reference of 104 and fail a
    corrected 107. A scorer whose verdicts select training data must never pass an answer
    the model took back: that would train on a trajectory that ends wrong. Text a decoder
    writes after its answer is judged with it (an "Explanation" ending in ``#### 3`` states
    3: a response that contradicts itself is no candidate to train on), except a new
    question: a line opening with "Question:" or "Q:" after an answer ends the response,
    as lm-eval's GSM8K tasks end generation there.
    """
    answers = stated_answers(text)
    if answers:
        return answers[-1][1]
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
