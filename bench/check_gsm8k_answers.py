"""Does the GSM8K scorer read the answer a response ends with, whatever shape it takes?

Every GSM8K test solution is reworded in the ways models answer (calculator annotations
``<<...>>`` removed): its final answer restated after a withdrawn one, stated as a phrase
followed by more numbers, with a space or thin space between thousands, followed by a new
question, boxed. Each rendering is scored by the real task (``get_task("gsm8k").is_correct``)
against the solution's reference. A shape whose final answer is right must pass; a control
whose final answer is wrong (the right one withdrawn) must fail, or the scorer would train
on answers a model took back. Prints JSON: per shape the pass count and rate, and the ids
that scored the wrong way.

    python bench/check_gsm8k_answers.py [--data FOLDER] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from r2sft.tasks import get_task
from r2sft.tasks.base import Example

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"\n?####[^\n]*\s*$")


def _body(solution: str) -> str:
    """The reasoning of a solution as a model would write it: no annotations, no final line."""
    return _FINAL_LINE.sub("", _CALCULATOR.sub("", solution)).rstrip()


def _wrong(answer: str) -> str:
    """A different answer of the same shape."""
    return str(int(answer) + 7) if answer.lstrip("-").isdigit() else f"{answer}1"


def _spaced(answer: str, separator: str) -> str:
    """``answer`` with ``separator`` between its thousands (``1400`` -> ``1 400``)."""
    head, dot, tail = answer.partition(".")
    sign, digits = ("-", head[1:]) if head.startswith("-") else ("", head)
    groups = [digits[max(0, i - 3) : i] for i in range(len(digits), 0, -3)][::-1]
    return sign + separator.join(groups) + dot + tail


RECHECK = "Hmm, on second thought, let me check that again."
# Each shape: (example, next example) -> response. Shapes ending "_control" state a wrong
# final answer after withdrawing the right one: they must fail.
SHAPES: dict[str, Callable[[Example, Example], str]] = {
    "final_after_withdrawn": lambda e, _: (
        f"{_body(e.meta['solution'])}\n#### {_wrong(e.reference)}\n{RECHECK}\n#### {e.reference}"
    ),
    "withdrawn_right_final_wrong_control": lambda e, _: (
        f"{_body(e.meta['solution'])}\n#### {e.reference}\n{RECHECK}\n#### {_wrong(e.reference)}"
    ),
    "answer_phrase_then_numbers": lambda e, _: (
        f"{_body(e.meta['solution'])}\nThe answer is {e.reference}. I hope step 2 was clear."
    ),
    "answer_phrase_withdrawn_control": lambda e, _: (
        f"{_body(e.meta['solution'])}\nThe answer is {e.reference}.\n{RECHECK}\n"
        f"The answer is {_wrong(e.reference)}."
    ),
    "space_thousands": lambda e, _: (
        f"{_body(e.meta['solution'])}\n#### {_spaced(e.reference, ' ')}"
    ),
    "thin_space_thousands": lambda e, _: (
        f"{_body(e.meta['solution'])}\n#### {_spaced(e.reference, chr(0x2009))}"
    ),
    "new_question_after_answer": lambda e, following: (
        f"{_body(e.meta['solution'])}\n#### {e.reference}\n\nQuestion: {following.question}\n"
        f"Answer: {_body(following.meta['solution'])}\n#### {following.reference}"
    ),
    "boxed_after_marker": lambda e, _: (
        f"{_body(e.meta['solution'])}\n#### {_wrong(e.reference)}\n{RECHECK}\n"
        f"So the answer is $\\boxed{{{e.reference}}}$."
    ),
}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K JSONL folder")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    task = get_task("gsm8k", path=args.data)
    examples = task.load("test", limit=args.limit)
    report: dict[str, dict] = {}
    for shape, render in SHAPES.items():
        control = shape.endswith("_control")
        cases = []
        for index, example in enumerate(examples):
            following = examples[(index + 1) % len(examples)]
            if shape == "new_question_after_answer" and following.reference == example.reference:
                continue  # the next problem's answer would not tell the two readings apart
            if shape.endswith("thousands") and _spaced(example.reference, " ") == example.reference:
                continue  # below 1000: nothing to separate
            cases.append((example, render(example, following)))
        passed = [task.is_correct(example, response) for example, response in cases]
        report[shape] = {
            "passed": sum(passed),
            "total": len(cases),
            "rate": round(sum(passed) / len(cases), 4),
            "passed_ids" if control else "failed_ids": [
                example.id for (example, _), ok in zip(cases, passed, strict=True) if ok == control
            ][:20],
        }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
