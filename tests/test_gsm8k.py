"""GSM8K plug-in: loading local JSONL, answer extraction, numeric / math-verify scoring."""

import json
import threading
from pathlib import Path

import pytest

from r2sft.tasks import get_task
from r2sft.tasks.base import Example
from r2sft.tasks.gsm8k import answers_match, extract_answer, reference_answer

# The workplace keeps shared data beside the checkout: <repo>/../shared/data.
SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


def write_split(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("so #### 1,234. Then 5", "1234"),
        ("#### $18", "18"),
        ("The answer is \\boxed{42}.", "42"),
        ("We get 12 then 15.", "15"),
        ("#### -3.5", "-3.5"),
        ("no digits here", None),
        # Units and currency inside a box, the sign before a dollar sign.
        ("So she pays \\boxed{240 dollars}.", "240"),
        ("\\boxed{\\$240000}", "240000"),
        ("$\\boxed{\\$240,000}$", "240000"),
        ("\\boxed{1{,}000 \\text{ eggs}}", "1000"),
        ("#### -$10", "-10"),
        ("#### $-10", "-10"),
        ("It costs \u22125 dollars", "-5"),  # a Unicode minus
        # An empty (or numberless) box after a filled one; nested braces.
        ("The answer is \\boxed{12}. \\boxed{}", "12"),
        ("\\boxed{7} and then \\boxed{\\text{done}}", "7"),
        ("\\boxed{\\frac{3}{4}}", "3/4"),
        ("\\boxed{x = 5}", "5"),
        # Fractions in the last-number fallback; a hyphen is not a minus sign.
        ("She ate 3/4 of the pie", "3/4"),
        ("between 5-10 apples", "10"),
        # The last stated answer counts (issue #25: never one the response took back); a new
        # question after the answer ends the response.
        ("3 + 4 = 7\n#### 7\nExplanation: 5 - 2 = 3\n#### 3 apples were left", "3"),
        ("#### 22\n\nQuestion: Tom has 5 cars and sells 2.\nAnswer: 5 - 2 = 3\n#### 3", "22"),
        ("####\n17", "17"),  # the number on the next line
        ("#### \n#### 9", "9"),  # a marker without a number is passed over
        ("#### The answer is 22.", "22"),
        ("#### 5 + 3 = 8", "8"),
        ("#### 18 eggs\n\\boxed{20}", "20"),  # a later box restates the answer
        ("#### 1 400", "1400"),  # a space between thousands
        ("#### 14 apples 3", "14"),
        ("The answer is 160. I hope step 2 was clear.", "160"),
        ("The answer is:\n42", "42"),
        ("**Final Answer:** 8", "8"),
        ("Let me check the answer: 12 / 3 = 4. So 12.", "12"),  # no answer phrase mid-line
        ("The answer isn't 5, it is 6", "6"),
        ("#### 1,000,000", "1000000"),
        # An equation after the answer checks it, prose after "the answer is" states nothing.
        ("The answer is 6, since 6 = 2 x 3.", "6"),
        ("#### 18 (check: 18 = 2 * 9)", "18"),
        ("#### 2 pencils * 3 = 6", "6"),
        ("#### 7\nI double-checked: the answer is consistent with step 2.", "7"),
        ("#### 15\nNote: the answer is in dollars (100 cents = 1 dollar).", "15"),
        ("The answer is 15.\nThe answer is not 12.", "15"),
        ("The answer is therefore 42", "42"),  # no phrase: the last number
        # LaTeX math delimiters are no parentheses: the equation is the statement.
        ("The answer is \\[ 3 \\times 4 = 12 \\]", "12"),
        ("The answer is \\( 3 \\times 4 = 12 \\)", "12"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# Labelled model-style responses: each pattern of issue #25 with the reference it must pass
# and those it must fail (a withdrawn answer right and the final one wrong, and the reverse).
FINAL_ANSWERS = json.loads((Path(__file__).parent / "fixtures" / "final_answers.json").read_text())
FINAL_ANSWER_CASES = [
    pytest.param(case["response"], reference, verdict, id=f"{case['pattern']}: {reference}")
    for case in FINAL_ANSWERS
    for reference, verdict in case["verdicts"].items()
]


@pytest.mark.parametrize(("response", "reference", "correct"), FINAL_ANSWER_CASES)
def test_the_final_answer_is_scored(response, reference, correct):
    task = get_task("gsm8k")  # scoring needs no data
    example = Example("gsm8k-test-0", "q", reference)
    assert task.is_correct(example, response) is correct


def test_fraction_answers_match_decimal_references():
    assert answers_match(extract_answer("She ate 3/4 of the pie"), "0.75")
    assert answers_match(extract_answer("\\boxed{\\dfrac{1}{2}}"), "0.5")


def test_answers_match_numeric_and_math_verify():
    assert answers_match("18", "18")
    assert answers_match("18.0", "18")
    assert answers_match("1/2", "0.5")  # math-verify equivalence
    assert not answers_match("17", "18")
    assert not answers_match(None, "18")
    assert reference_answer("a\nb\n#### 1,000") == "1000"
    assert reference_answer("#### -$10") == "-10" and reference_answer("no marker") is None


def test_math_verify_scoring_works_off_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(answers_match("1/2", "0.5")))
    worker.start()
    worker.join()
    assert results == [True]


def test_load_local_folder_and_score(tmp_path):
    write_split(tmp_path, [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"},
        {"question": "Half of 10?", "answer": "#### 5"},
    ])  # fmt: skip
    task = get_task("gsm8k", path=tmp_path)
    examples = task.load("test")
    assert [e.reference for e in examples] == ["7", "5"]
    assert task.load("test", limit=1)[0].id == "gsm8k-test-0"
    message = task.user_message(examples[0])
    assert examples[0].question in message and "####" in message
    assert task.is_correct_batch(examples, ["... #### 7", "it is 6"]) == [True, False]


def test_bad_records_name_file_and_line(tmp_path):
    write_split(tmp_path, [{"question": "q", "answer": "no final marker"}])
    with pytest.raises(ValueError, match=r"test.jsonl:1: .*####"):
        get_task("gsm8k", path=tmp_path).load("test")
    write_split(tmp_path, [{"question": "q"}])
    with pytest.raises(ValueError, match=r"test.jsonl:1: missing"):
        get_task("gsm8k", path=tmp_path).load("test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_task("gsm8k", path=tmp_path / "nowhere").load("test")


@pytest.mark.skipif(not SHARED_GSM8K.is_dir(), reason="shared GSM8K copy not present")
def test_shared_gsm8k_references_score_as_correct():
    task = get_task("gsm8k", path=SHARED_GSM8K)
    examples = task.load("test", limit=50)
    assert len(examples) == 50
    solutions = [e.meta["solution"] for e in examples]
    assert all(task.is_correct_batch(examples, solutions))
