"""Does code extraction score correct answers as correct whatever shape the model gives them?

Every HumanEval problem's canonical solution is rendered in the answer shapes instruct and
diffusion models produce, and each rendering is scored by the real task
(``get_task("humaneval").is_correct_batch``: extraction, the prompt's helpers, the
sandbox). A correct solution must pass in every shape, so each shape's pass rate measures
how many correct answers the extraction would throw away; a wrong answer in the same form
(``control_wrong_answer``) must fail. Prints JSON: the sandbox's isolation in force, and
per shape the pass count, rate and failing task ids (passing ones for the control).

    python bench/check_extraction.py [--data PATH] [--limit N] [--workers N]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

from r2sft.sandbox import isolation_report
from r2sft.tasks import get_task

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
)


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def entry_function(prompt: str, entry_point: str) -> str:
    """The prompt from the entry-point function's first line on (decorators included):
    what a model restating only that function writes before the body."""
    for node in ast.parse(prompt).body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return "\n".join(prompt.splitlines()[first - 1 :]) + "\n"
    raise ValueError(f"no function {entry_point} in the prompt")


def usage_call(prompt: str, entry_point: str) -> str:
    """A call of the entry point as the docstring shows it, else with ``...``."""
    for line in prompt.splitlines():
        text = line.strip()
        if text.startswith(f">>> {entry_point}("):
            return text[4:]
    return f"{entry_point}(...)"


FENCE_TAGS = ("python", "py", "Python", "", "{.python}", "python3")


def _whole(row: dict) -> str:
    return row["prompt"] + row["canonical_solution"]


# Each shape: (problem row) -> response text, as a model might write it.
SHAPES: dict[str, Callable[[dict], str]] = {
    "fence_python3_with_prose": lambda r: (
        "Sure! Here is the completed function:\n\n```python3\n"
        f"{_whole(r)}```\n\nThis solution handles the edge cases mentioned in the docstring."
    ),
    "unfenced_with_prose": lambda r: (
        f"Here is the solution:\n{_whole(r)}\n"
        "This function works by following the steps described in the docstring.\n"
    ),
    "usage_block_then_solution": lambda r: (
        "You can call it like this:\n\n```python\n"
        f"result = {usage_call(r['prompt'], r['entry_point'])}\nprint(result)\n```\n\n"
        f"Here is the implementation:\n\n```python\n{_whole(r)}```\n"
    ),
    "restated_with_main_input": lambda r: (
        f'```python\n{_whole(r)}\n\nif __name__ == "__main__":\n'
        "    data = input()\n"
        f"    print({r['entry_point']}(eval(data)))\n```\n"
    ),
    "restated_function_only": lambda r: (
        f"```python\n{entry_function(r['prompt'], r['entry_point'])}{r['canonical_solution']}```\n"
    ),
    "body_only": lambda r: r["canonical_solution"],
    # Beyond the shapes above: other tags with a text block of output after the code, and
    # a body inside a fence.
    "fence_tags_and_output_block": lambda r: (
        f"```{FENCE_TAGS[int(r['task_id'].split('/')[-1]) % len(FENCE_TAGS)]}\n{_whole(r)}```\n"
        f"Output:\n```text\n{usage_call(r['prompt'], r['entry_point'])}\n```\n"
    ),
    "body_fenced": lambda r: f"```python\n{r['canonical_solution']}```",
}
# A negative control: the restated function returning None must fail (rate near 0), or the
# check above would be vacuous.
CONTROL = "control_wrong_answer"
SHAPES[CONTROL] = lambda r: (
    "```python\n" + entry_function(r["prompt"], r["entry_point"]) + "    return None\n```"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HumanEval JSONL(.gz)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timeout_s", type=float, default=10.0)
    args = parser.parse_args()
    rows = _rows(args.data)[: args.limit]
    task = get_task(
        "humaneval",
        path=str(args.data),
        sandbox_timeout_s=args.timeout_s,
        scoring_workers=args.workers,
    )
    examples = {example.id: example for example in task.load("test")}
    report: dict[str, dict] = {"isolation": isolation_report()}
    for shape, render in SHAPES.items():
        start = time.monotonic()
        batch = [examples[row["task_id"]] for row in rows]
        passed = task.is_correct_batch(batch, [render(row) for row in rows])
        report[shape] = {
            "passed": sum(passed),
            "total": len(rows),
            "rate": round(sum(passed) / len(rows), 4),
            "failed" if shape != CONTROL else "passed_ids": [
                row["task_id"]
                for row, ok in zip(rows, passed, strict=True)
                if ok == (shape == CONTROL)
            ],
            "seconds": round(time.monotonic() - start, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
