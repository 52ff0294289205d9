"""HumanEval / MBPP scoring through the sandbox, MATH answers through math-verify, and the
clear errors (file:line) of malformed data files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from r2sft.tasks import get_task
from r2sft.tasks.code import extract_code
from r2sft.tasks.files import InvalidRecordError
from r2sft.tasks.math import last_boxed

# The workplace keeps shared data beside the checkout: <repo>/../shared/data.
HUMANEVAL = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
)


def _write_jsonl(path: Path, rows: list, raw_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(row) for row in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def humaneval_file(tmp_path: Path) -> Path:
    """The real HumanEval file when present, else two HumanEval-format problems."""
    if HUMANEVAL.is_file():
        return HUMANEVAL
    rows = [
        {
            "task_id": "HumanEval/0",
            "prompt": 'def add(a: int, b: int) -> int:\n    """Sum."""\n',
            "canonical_solution": "    return a + b\n",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
            "entry_point": "add",
        },
        {
            "task_id": "HumanEval/1",
            "prompt": "from typing import List\n\ndef total(xs: List[int]) -> int:\n",
            "canonical_solution": "    return sum(xs)\n",
            "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n",
            "entry_point": "total",
        },
    ]
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(humaneval_file: Path) -> None:
    task = get_task("humaneval", path=str(humaneval_file), sandbox_timeout_s=10)
    examples = task.load("test", limit=2)
    assert len(examples) == 2 and examples[0].id == "HumanEval/0"
    with gzip.open(humaneval_file, "rt") as handle:
        canonical = [json.loads(line)["canonical_solution"] for line in handle][:2]
    prompt_text = task.user_message(examples[0])
    assert examples[0].question in prompt_text
    # A body completing the prompt, a whole function in a fence, and wrong answers.
    whole = f"Here it is:\n```python\n{examples[0].question}{canonical[0]}```\nDone."
    responses = [canonical[0], canonical[1], whole, "    return None\n", "```python\nsyntax(\n```"]
    batch = [examples[0], examples[1], examples[0], examples[0], examples[1]]
    assert task.is_correct_batch(batch, responses) == [True, True, True, False, False]


def test_mbpp_from_local_file(tmp_path: Path) -> None:
    row = {
        "task_id": 11,
        "text": "Write a function to double a number.",
        "code": "def double(x):\n    return 2 * x",
        "test_list": ["assert double(2) == 4", "assert double(0) == 0"],
        "test_setup_code": "",
    }
    _write_jsonl(tmp_path / "test.jsonl", [row])
    task = get_task("mbpp", path=str(tmp_path))
    (example,) = task.load("test")
    assert example.id == "mbpp-11" and "assert double(2) == 4" in task.user_message(example)
    good = "```python\ndef double(x):\n    return x + x\n```"
    assert task.is_correct_batch([example, example], [good, "def double(x):\n    return x"]) == [
        True,
        False,
    ]


def test_extract_code() -> None:
    """Still importable from r2sft.tasks.code (see tests/test_extraction.py for the rest)."""
    assert extract_code("a\n```python\nx = 1\n```\nb") == "x = 1\n"
    assert extract_code("```\ny = 2\n") == "y = 2\n"  # unclosed fence runs to the end
    assert extract_code("z = 3") == "z = 3\n"
    assert extract_code("```python3\nw = 4\n```\nprose after") == "w = 4\n"


def test_mbpp_answers_in_model_shapes(tmp_path: Path) -> None:
    row = {
        "task_id": 2,
        "text": "Write a function to find the shared elements of two lists.",
        "test_list": ["assert set(shared([1, 2], [2, 3])) == {2}", "assert shared([], [1]) == []"],
        "test_imports": ["import math"],
    }
    _write_jsonl(tmp_path / "test.jsonl", [row])
    task = get_task("mbpp", path=str(tmp_path))
    (example,) = task.load("test")
    function = "def shared(a, b):\n    return [x for x in a if x in b]\n"
    responses = [
        f"Usage:\n```python\nprint(shared([1], [1]))\n```\nSolution:\n```python3\n{function}```",
        f"```python\n{function}\nif __name__ == '__main__':\n    print(shared(input(), []))\n```",
        f"Here it is:\n{function}\nIt keeps the order of the first list.",
        "```python\ndef common(a, b):\n    return [x for x in a if x in b]\n```",  # wrong name
    ]
    assert task.is_correct_batch([example] * 4, responses) == [True, True, True, False]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_list", "assert f(1) == 1", r"'test_list' must be a JSON list .*single string"),
        ("test_list", [1, 2], r"'test_list' must be a JSON list of strings"),
        ("test_imports", "import math", r"'test_imports' must be a JSON list .*single string"),
        ("test_setup_code", ["x = 1"], r"'test_setup_code' must be a string"),
    ],
)
def test_mbpp_test_fields_are_validated(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    """A string where a list of tests belongs used to be split into one-character tests."""
    good = {"task_id": 1, "text": "Identity.", "test_list": ["assert f(1) == 1"]}
    bad = {**good, "task_id": 2, field: value}
    _write_jsonl(tmp_path / "test.jsonl", [good, bad])
    with pytest.raises(InvalidRecordError, match=rf"test\.jsonl:2: .*{message}.*--skip_invalid"):
        get_task("mbpp", path=str(tmp_path)).load("test")
    lenient = get_task("mbpp", path=str(tmp_path), skip_invalid=True)
    assert [example.id for example in lenient.load("test")] == ["mbpp-1"]
    assert len(lenient.skipped) == 1 and "test.jsonl:2" in lenient.skipped[0]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    good = {
        "task_id": "T/0",
        "prompt": "def f():\n",
        "test": "def check(c): pass",
        "entry_point": "f",
    }
    missing = {"task_id": "T/1", "prompt": "def g():\n", "test": "x"}
    path = _write_jsonl(tmp_path / "data.jsonl", [good, missing], raw_lines=("{not json",))
    task = get_task("humaneval", path=str(path))
    with pytest.raises(InvalidRecordError, match=r"data\.jsonl:2: missing .*entry_point"):
        task.load("test")
    lenient = get_task("humaneval", path=str(path), skip_invalid=True)
    assert [ex.id for ex in lenient.load("test")] == ["T/0"]
    assert len(lenient.skipped) == 2
    assert "data.jsonl:3: malformed JSON" in lenient.skipped[1]


def test_missing_data_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data_path"):
        get_task("mbpp", path=str(tmp_path / "nope")).load("test")


def test_math_answers_with_math_verify(tmp_path: Path) -> None:
    rows = [
        {"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "1"},
        {"problem": "Two plus two?", "answer": "4", "unique_id": "p/2"},
        {"problem": "No answer here", "solution": "nothing boxed"},
    ]
    path = _write_jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(InvalidRecordError, match=r"test\.jsonl:3"):
        get_task("math", path=str(path)).load("test")
    task = get_task("math", path=str(path), skip_invalid=True)
    half, four = task.load("test")
    assert half.reference == "\\frac{1}{2}" and four.id == "p/2" and len(task.skipped) == 1
    assert "\\boxed{}" in task.user_message(half)
    assert task.is_correct(half, "So the answer is \\boxed{0.5}.")
    assert not task.is_correct(half, "So the answer is \\boxed{2}.")
    assert task.is_correct(four, "2 + 2 = 4, final answer \\boxed{4}")
    assert not task.is_correct(four, "I do not know")


def test_last_boxed_balances_braces() -> None:
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("no box") is None
