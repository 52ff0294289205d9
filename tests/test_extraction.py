"""Code extraction (r2sft.tasks.extraction): fences, prose, several blocks, the prompt's
helpers, pruning of ``__main__`` / stdin / exit code, body completions; and the model-style
HumanEval renderings of bench/check_extraction.py scored by the real task.

tests/fixtures/humaneval_sample.jsonl holds seven problems copied unchanged from the
HumanEval release (OpenAI, MIT licence; /work/shared/data/humaneval/HumanEval.jsonl.gz):
HumanEval/0, 1, 10, 32, 38, 50 and 64 -- the ones whose prompts define helpers (10, 32, 38,
50), import (1, 32) or assign (64) before the entry point.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

from r2sft.tasks import get_task
from r2sft.tasks.extraction import build_solution, called_names, code_spans, extract_code

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "tests" / "fixtures" / "humaneval_sample.jsonl"

SQUARE = "def square(x):\n    return x * x\n"
PROMPT = 'def square(x: int) -> int:\n    """The square of x."""\n'


def _run(source: str, name: str = "square"):
    """Execute trusted test code in-process and return the function ``name``."""
    namespace: dict = {}
    exec(compile(source, "<solution>", "exec"), namespace)
    return namespace[name]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "check_extraction", REPO_ROOT / "bench" / "check_extraction.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------- finding the code


@pytest.mark.parametrize("tag", ["python", "python3", "py", "Python", "", "{.python}", "py3"])
def test_any_python_fence_tag_with_prose_after(tag: str) -> None:
    response = f"Here you go:\n```{tag}\n{SQUARE}```\nThis squares x. It is `O(1)`."
    assert extract_code(response, "square") == SQUARE


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (f"~~~python\n{SQUARE}~~~\n", SQUARE),  # tilde fence
        (f"```python\n{SQUARE}", SQUARE),  # unclosed: runs to the end
        ("```python\ndef square(x):\n    return x * x```\nDone.", SQUARE),  # glued close
        ("1. Code:\n   ```python\n   def square(x):\n       return x * x\n   ```", SQUARE),
        (f"```python\n{SQUARE}```\n```text\nsquare(3) -> 9\n```", SQUARE),
        (f"```text\nsquare(3) -> 9\n```\n```python\n{SQUARE}```", SQUARE),
    ],
    ids=["tilde", "unclosed", "glued-close", "indented-fence", "text-after", "text-before"],
)
def test_fence_variants(response: str, expected: str) -> None:
    assert extract_code(response, "square") == expected


def test_crlf_and_tab_indented_responses() -> None:
    response = "Sure:\r\n```python\r\ndef square(x):\r\n\treturn x * x\r\n```\r\nDone."
    assert _run(build_solution(PROMPT, response, "square"))(3) == 9


def test_python3_fence_is_not_read_from_its_closing_fence() -> None:
    # The old extractor matched only python/py/Python tags: the closing fence opened a
    # "block" and the prose after it became the code.
    response = f"```python3\n{SQUARE}```\nThis function returns x squared.\n"
    assert extract_code(response) == SQUARE


@pytest.mark.parametrize(
    "response",
    [
        f"Here is the function:\n{SQUARE}This returns x times x.\n",
        f"Sure! Below.\n\n{SQUARE}\nIt works for negative numbers too. Example: square(-2)",
        f"# Solution\n{SQUARE}\n>>> square(3)\n9\n",
        f"Explanation\n{SQUARE}Note: it is fast.\n",
    ],
    ids=["prose-around", "prose-and-example", "markdown-and-doctest", "prose-that-parses"],
)
def test_unfenced_code_among_prose(response: str) -> None:
    assert _run(build_solution("", response, "square"))(3) == 9
    assert "return x * x" in extract_code(response, "square")


def test_several_blocks_the_definer_wins() -> None:
    usage = "```python\nprint(square(3))\nresult = square(4)\n```\n"
    assert extract_code(f"Use it so:\n{usage}Code:\n```python\n{SQUARE}```") == SQUARE
    # Two versions of the entry point: the last one is the answer.
    first = "```python\ndef square(x):\n    return x + x\n```\nOops, fixed:\n"
    assert extract_code(f"{first}```python\n{SQUARE}```", "square") == SQUARE
    # Without an entry point: the longest block.
    longest = extract_code(f"{usage}```python\n{SQUARE}\n\ndef cube(x):\n    return x**3\n```")
    assert longest.startswith(SQUARE) and "def cube" in longest


def test_a_python_block_outranks_an_untagged_and_an_unfenced_definer() -> None:
    other = "def square(x):\n    return 0\n"
    response = f"{other}\n```\n{other}```\n```python\n{SQUARE}```\n```\n{other}```"
    assert extract_code(response, "square") == SQUARE


def test_nothing_parses_returns_the_response() -> None:
    assert extract_code("no code here, sorry") == "no code here, sorry"
    assert code_spans("Explanation\n\n42\n") == []  # prose that parses is not code


# ------------------------------------------------------------------ building programs


def test_restated_function_keeps_the_prompt_helpers_and_imports() -> None:
    prompt = (
        "import math\n\n\ndef helper(x):\n    return math.sqrt(x)\n\n\n"
        'def root_sum(xs):\n    """Sum of roots."""\n'
    )
    response = "```python\ndef root_sum(xs):\n    return sum(helper(x) for x in xs)\n```"
    solution = build_solution(prompt, response, "root_sum")
    assert solution.startswith("import math")
    assert _run(solution, "root_sum")([4, 9]) == 5.0
    assert solution.count("def root_sum") == 1  # the prompt's stub is replaced


def test_a_model_redefinition_of_a_prompt_helper_replaces_it() -> None:
    prompt = 'def helper():\n    return 1\n\n\ndef f():\n    """Use helper."""\n'
    response = "```python\ndef helper():\n    return 2\n\ndef f():\n    return helper()\n```"
    solution = build_solution(prompt, response, "f")
    assert solution.count("def helper") == 1 and _run(solution, "f")() == 2


def test_prompt_helpers_the_tests_need_survive_even_if_unused() -> None:
    # HumanEval/38's tests call encode_cyclic; the model's decode never does.
    prompt = 'def encode(s):\n    return s[::-1]\n\n\ndef decode(s):\n    """Undo."""\n'
    response = (
        "```python\ndef encode(s):\n    return s[::-1]\n\ndef decode(s):\n    return s[::-1]\n```"
    )
    solution = build_solution(prompt, response, "decode")
    assert _run(solution, "encode")("ab") == "ba"


@pytest.mark.parametrize(
    "tail",
    [
        'if __name__ == "__main__":\n    n = int(input())\n    print(square(n))\n',
        "n = int(input())\nprint(square(n))\n",
        "import sys\nsys.exit(0)\n",  # would pass without running a single test
        "assert square(2) == 5\n",  # the model's own (wrong) test
        "for case in [1, 2]:\n    print(square(case))\nwhile True:\n    pass\n",
        "import unittest\nunittest.main()\n",
        "data = sys.stdin.read()\n",
        "from solution import square\nprint(square(2))\n",
    ],
    ids=[
        "main-guard",
        "top-level-input",
        "sys-exit",
        "assert",
        "loops",
        "unittest",
        "stdin",
        "import-of-itself",
    ],  # fmt: skip
)
def test_top_level_runs_are_dropped(tail: str) -> None:
    response = f"```python\n{SQUARE}\n{tail}```"
    solution = build_solution(PROMPT, response, "square")
    assert _run(solution)(5) == 25
    dropped_words = ("input", "exit", "assert", "print", "unittest.main", "stdin", "while")
    for dropped in (*dropped_words, "solution"):
        assert dropped not in solution


def test_what_the_entry_point_needs_is_kept() -> None:
    code = (
        "import functools\nfrom collections import Counter as C\n\nLIMIT = 10\nmemo = {}\n"
        "memo[0] = 0\nmemo.update({1: 1})\nunused = square_all([1])\n\n"
        "@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
        "    if n in memo:\n        return memo[n]\n    return fib(n - 1) + fib(n - 2)\n\n"
        "class Box:\n    size = LIMIT\n\ndef square_all(xs):\n"
        "    result = [fib(x) * Box.size for x in xs]\n    return result\n\n"
        "result = square_all([3])\nprint(result)\n"
    )
    solution = build_solution("", f"```python\n{code}```", "square_all")
    assert _run(solution, "square_all")([3, 4]) == [20, 30]
    assert "unused" not in solution and "print" not in solution
    assert "result = square_all" not in solution  # a local named like a global is no use


def test_helpers_from_another_block_are_merged() -> None:
    response = (
        "First a helper:\n```python\ndef double(x):\n    return 2 * x\n\nprint(double(2))\n```\n"
        "Then the answer:\n```python\ndef quad(x):\n    return double(double(x))\n```\n"
        "Test it:\n```python\nfrom solution import quad, double\nassert quad(1) == 4\n```"
    )
    solution = build_solution("", response, "quad")
    assert _run(solution, "quad")(3) == 12 and "print" not in solution


def test_future_imports_are_hoisted() -> None:
    response = f"```python\nfrom __future__ import annotations\n\n{SQUARE}```"
    solution = build_solution("import math\n", response, "square")
    assert solution.startswith("from __future__ import annotations\n")
    assert _run(solution)(4) == 16


@pytest.mark.parametrize(
    "response",
    [
        "    return x * x\n",
        "```python\n    return x * x\n```",
        "```python\nreturn x * x\n```",  # a body written at column 0
        "    y = x * x\n    return y\n\nThis computes the square.\n",
        "    return helper(x)\n\n\ndef helper(x):\n    return x * x\n\nprint(helper(3))\n",
        "Complete body:\n    return x * x\n",
        "\treturn x * x\n",
        "    y = x * x\r\n    return y\r\n",
    ],
    ids=["raw", "fenced", "dedented", "prose-after", "helper-after", "prose-before", "tab", "crlf"],
)
def test_body_completions(response: str) -> None:
    solution = build_solution(PROMPT, response, "square")
    assert _run(solution)(6) == 36
    assert "print" not in solution


def test_a_function_under_another_name_is_not_grafted_onto_the_entry_point() -> None:
    solution = build_solution(PROMPT, "def sq(x):\n    return x * x\n", "square")
    assert _run(solution)(3) is None  # the prompt's stub: a wrong name fails


def test_unparseable_code_is_left_to_fail() -> None:
    solution = build_solution(PROMPT, "```python\nsyntax(\n```", "square")
    with pytest.raises(SyntaxError):
        compile(solution, "<solution>", "exec")


def test_called_names_of_mbpp_asserts() -> None:
    tests = (
        "assert set(similar((3, 4), (5, 4))) == set((4,))\n"
        "assert math.isclose(area(2), 12.56, rel_tol=0.01)\nassert similar((1,), (1,)) == (1,)"
    )
    assert called_names(tests) == ["similar", "area"]
    assert called_names("assert f(1) == 2\nthis is not python") == ["f"]
    # What the test setup defines or imports is not the solution's to define.
    setup = "from math import gcd\ndef helper(x):\n    return x\n"
    assert called_names("assert f(helper(gcd(4, 6))) == 2", setup) == ["f"]


# ------------------------------------------------------- HumanEval renderings, scored


def test_model_style_renderings_of_canonical_solutions_pass() -> None:
    """Every rendering of bench/check_extraction.py, for the sample's canonical solutions,
    scored by the real HumanEval task (sandbox included); the wrong-answer control fails."""
    bench = _bench()
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    task = get_task("humaneval", path=str(SAMPLE), sandbox_timeout_s=20)
    examples = task.load("test")
    assert [e.id for e in examples] == [row["task_id"] for row in rows]
    shapes = list(bench.SHAPES.items())
    batch = [example for _ in shapes for example in examples]
    responses = [render(row) for _, render in shapes for row in rows]
    results = task.is_correct_batch(batch, responses)
    failures = [
        (shape, row["task_id"])
        for index, ((shape, _), row) in enumerate((s, r) for s in shapes for r in rows)
        if results[index] != (shape != bench.CONTROL)
    ]
    assert failures == []


def test_check_extraction_script_prints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    argv = ["check_extraction.py", "--data", str(SAMPLE), "--limit", "2", "--workers", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        bench.main()
    report = json.loads(output.getvalue())
    assert report["body_only"]["total"] == 2 and report["body_only"]["rate"] == 1.0
    assert report[bench.CONTROL]["passed"] == 0
