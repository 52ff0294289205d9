import json
import random
import re
from itertools import islice
from pathlib import Path

import pytest

from r2sft.paths import EMBEDDED_TASK_DIR
from r2sft.tasks import get_task
from r2sft.tasks.arith import (
    MAX_VALUE,
    SPLIT_SEEDS,
    SPLIT_SIZES,
    SPLITS,
    generate_problem,
    iter_problems,
    make_split,
    split_of,
    write_splits,
)
from r2sft.tasks.base import Example
from r2sft.tasks.gsm8k import answers_match, extract_answer

_EQUATION = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


def _check_solution(problem) -> None:
    """Re-derive every step of the worked solution from its own equations."""
    *equations, final = problem.answer.split("\n")
    assert 2 <= len(equations) <= 4
    value = problem.start
    for line, (op, operand) in zip(equations, problem.ops, strict=True):
        left, symbol, right, result = _EQUATION.match(line).groups()
        assert int(left) == value and symbol == op and int(right) == operand
        expected = {"+": value + operand, "-": value - operand, "*": value * operand}.get(
            op, value // operand
        )
        if op == "/":
            assert value % operand == 0
        assert int(result) == expected and 0 <= expected <= MAX_VALUE
        value = expected
    assert final == f"#### {value}" and problem.result == value
    # Every operand appears in the question, in order.
    numbers = [int(n) for n in re.findall(r"\d+", problem.question)]
    assert numbers == [problem.start] + [operand for _, operand in problem.ops]


def test_generated_answers_are_correct_by_construction():
    rng = random.Random(0)
    for _ in range(2000):
        _check_solution(generate_problem(rng))


def test_generator_is_deterministic_from_seed():
    first = list(islice((p.question + p.answer for p in iter_problems(7)), 50))
    again = list(islice((p.question + p.answer for p in iter_problems(7)), 50))
    other = list(islice((p.question + p.answer for p in iter_problems(8)), 50))
    assert first == again
    assert first != other


def test_splits_are_disjoint_by_arithmetic():
    signatures = {
        split: {p.signature for p in make_split(split, 300, SPLIT_SEEDS[split])} for split in SPLITS
    }
    assert not signatures["train"] & signatures["test"]
    assert not signatures["train"] & signatures["dev"]
    assert not signatures["dev"] & signatures["test"]
    for split, sigs in signatures.items():
        assert all(split_of(sig) == split for sig in sigs)


def test_shipped_split_files_match_the_generator(tmp_path):
    written = write_splits(tmp_path)
    for split in SPLITS:
        shipped = (EMBEDDED_TASK_DIR / f"{split}.jsonl").read_text()
        assert written[split].read_text() == shipped, f"regenerate data/arith/{split}.jsonl"
        assert len(shipped.splitlines()) == SPLIT_SIZES[split]
    assert SPLIT_SIZES["test"] >= 500


def test_make_task_draws_fresh_train_prompts_by_seed(tmp_path, capsys):
    from r2sft.embedded.make_task import main as make_task

    make_task(["--out", str(tmp_path / "r1"), "--splits", "train", "--seed", "101",
               "--size", "50"])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["train.jsonl"]
    fresh = get_task("arith", path=tmp_path / "r1").load("train")
    shipped = get_task("arith").load("train")
    questions = {e.question for e in fresh}
    assert len(fresh) == 50 and not questions & {e.question for e in shipped}
    # Every seed stays inside the train split: nothing of dev or test leaks in.
    held_out = {e.question for split in ("dev", "test") for e in get_task("arith").load(split)}
    assert not questions & held_out
    with pytest.raises(SystemExit, match="error: size must be >= 1"):
        make_task(["--out", str(tmp_path / "r2"), "--size", "0"])


def test_extract_answer_prefers_final_marker_then_last_number():
    assert extract_answer("3 + 4 = 7\n#### 7") == "7"
    assert extract_answer("#### 1,234") == "1234"
    assert extract_answer("#### 5\nthen 9") == "5"
    assert extract_answer("3 + 4 = 7") == "7"
    assert extract_answer("no number") is None
    assert answers_match("7", "7") and answers_match("7.0", "7")
    assert not answers_match("8", "7") and not answers_match(None, "7")


# The labelled responses of test_gsm8k (issue #25): arith scores them with the same rule.
FINAL_ANSWERS = json.loads((Path(__file__).parent / "fixtures" / "final_answers.json").read_text())


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        pytest.param(case["response"], reference, verdict, id=f"{case['pattern']}: {reference}")
        for case in FINAL_ANSWERS
        for reference, verdict in case["verdicts"].items()
    ],
)
def test_the_final_answer_is_scored(response, reference, correct):
    example = Example("arith-test-0", "Mia has 12 marbles.", reference)
    assert get_task("arith").is_correct(example, response) is correct


def test_task_plugin_loads_and_scores():
    task = get_task("arith")
    examples = task.load("test", limit=3)
    assert len(examples) == 3 and examples[0].id == "arith-test-0"
    example = examples[0]
    assert task.user_message(example) == example.question
    assert task.is_correct(example, example.meta["solution"])
    assert task.is_correct(example, f"blah\n#### {example.reference}")
    assert not task.is_correct(example, f"#### {int(example.reference) + 1}")
    assert task.is_correct_batch(examples, [e.meta["solution"] for e in examples]) == [True] * 3
    assert len(task.load("test")) == SPLIT_SIZES["test"]


def test_task_errors_name_the_file_and_line(tmp_path, monkeypatch):
    task = get_task("arith", path=tmp_path)
    # A folder of the user's: the split is missing there (make_task writes only data/arith).
    with pytest.raises(FileNotFoundError, match=r"no test.jsonl\(.gz\) in .* \(found \[\]\)"):
        task.load("test")
    from r2sft.tasks.arith import ArithTask

    monkeypatch.setattr(ArithTask, "default_path", tmp_path)  # the shipped splits' folder
    with pytest.raises(FileNotFoundError, match="make_task"):
        get_task("arith").load("test")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"dev.jsonl:1: missing or empty field"):
        task.load("dev")
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "7"}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1: answer has no final"):
        task.load("train")
    with pytest.raises(ValueError, match="unknown arith split"):
        task.load("validation")
