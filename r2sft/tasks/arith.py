"""The embedded arithmetic task: procedurally generated word problems in GSM8K format.

A problem starts with a quantity and applies 2-4 operations (+, -, x, /) to it, every
intermediate result a non-negative integer no larger than :data:`MAX_VALUE`. The worked
solution has one equation per step and a final line ``#### N``, exactly like GSM8K::

    question: Mia has 12 marbles. She finds 7 more. She gives away 5 of them.
              How many marbles does Mia have now?
    answer:   12 + 7 = 19
              19 - 5 = 14
              #### 14

Splits are disjoint by construction: a problem's split is a hash of its arithmetic (start
value and operation sequence), not of its wording, so no test problem's computation is
ever seen in training under another name or object. Everything is deterministic from a
seed. ``data/arith/{train,dev,test}.jsonl`` are written by :func:`write_splits`
(``python -m r2sft.embedded.make_task``); pretraining draws fresh train problems on the fly
with :func:`iter_problems`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from r2sft.paths import EMBEDDED_BLOCK_LENGTH, EMBEDDED_GEN_LENGTH, EMBEDDED_TASK_DIR
from r2sft.tasks.base import Example, register_task
from r2sft.tasks.gsm8k import GSM8KTask

# Difficulty knobs. The aim is a ~1M-parameter model that learns the task imperfectly in ~45
# CPU minutes (1-token-per-step accuracy 50-95%); the shipped one reaches 56% in 41 minutes
# (see data/tiny-llada/README.md), so the task is not made harder than this.
MAX_VALUE = 20
MAX_START = 15
MAX_OPERAND = 9  # largest number added or subtracted
MAX_PRODUCT_BASE = 10  # only values up to this are multiplied (by 2-5)
SPLITS = ("train", "dev", "test")
# Share of the arithmetic-signature hash space given to each held-out split.
_HELD_OUT_BUCKETS = {"test": range(0, 5), "dev": range(5, 10)}
_NUM_BUCKETS = 100
# Sizes of the shipped split files (train is also generated on the fly for pretraining).
SPLIT_SIZES = {"train": 2000, "dev": 200, "test": 500}
SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}

_NAMES = [
    ("Mia", "She"), ("Tom", "He"), ("Ava", "She"), ("Leo", "He"), ("Zoe", "She"),
    ("Sam", "He"), ("Ivy", "She"), ("Max", "He"), ("Lily", "She"), ("Ben", "He"),
    ("Emma", "She"), ("Jack", "He"), ("Nora", "She"), ("Owen", "He"), ("Ruby", "She"),
    ("Luke", "He"),
]  # fmt: skip
_OBJECTS = [
    "apples", "marbles", "stickers", "books", "coins", "cards", "pencils", "shells",
    "stamps", "cookies", "toys", "beads", "flowers", "eggs", "candies", "rocks",
]  # fmt: skip
# Sentence templates per operation; {n} is the operand, {p} the pronoun, {o} the objects.
_TEMPLATES = {
    "+": [
        "{p} buys {n} more.",
        "{p} finds {n} more.",
        "A friend gives {p_obj} {n} more.",
        "{p} gets {n} more {o}.",
    ],
    "-": [
        "{p} gives away {n} of them.",
        "{p} loses {n} {o}.",
        "{p} sells {n} of them.",
        "{p} gives {n} {o} to a friend.",
    ],
    "*": [
        "{p} ends up with {n} times as many {o}.",
        "Then the number of {o} is multiplied by {n}.",
    ],
    "/": [
        "{p} splits the {o} into {n} equal groups and keeps one group.",
        "{p} shares them equally among {n} kids, keeping one share.",
    ],
}
_SYMBOL = {"+": "+", "-": "-", "*": "*", "/": "/"}


@dataclass(frozen=True)
class Problem:
    """One generated problem: its arithmetic, its wording and its worked solution."""

    start: int
    ops: tuple[tuple[str, int], ...]
    question: str
    answer: str  # GSM8K style: one equation per line, then "#### N"
    result: int

    @property
    def signature(self) -> str:
        """The arithmetic alone, independent of names and objects (what splits hash)."""
        return f"{self.start}" + "".join(f"{op}{n}" for op, n in self.ops)


def split_of(signature: str) -> str:
    """Which split owns a problem with this arithmetic signature (stable across runs)."""
    bucket = int(hashlib.sha256(signature.encode()).hexdigest(), 16) % _NUM_BUCKETS
    for split, buckets in _HELD_OUT_BUCKETS.items():
        if bucket in buckets:
            return split
    return "train"


def _apply(op: str, value: int, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    return value // operand


def _pick_operation(rng: random.Random, value: int) -> tuple[str, int]:
    """An operation whose result stays a non-negative integer <= MAX_VALUE."""
    while True:
        op = rng.choice("++--*/")
        if op == "+" and value < MAX_VALUE - 1:
            return op, rng.randint(2, min(MAX_OPERAND, MAX_VALUE - value))
        if op == "-" and value >= 4:
            return op, rng.randint(2, min(MAX_OPERAND, value - 1))
        if op == "*" and 2 <= value <= MAX_PRODUCT_BASE:
            return op, rng.randint(2, min(5, MAX_VALUE // value))
        if op == "/":
            divisors = [d for d in range(2, 6) if value % d == 0 and value // d >= 1]
            if divisors and value >= 4:
                return op, rng.choice(divisors)


def generate_problem(rng: random.Random) -> Problem:
    """Draw one problem with 2-4 operations from ``rng``."""
    name, pronoun = rng.choice(_NAMES)
    objects = rng.choice(_OBJECTS)
    pronoun_obj = "her" if pronoun == "She" else "him"
    value = rng.randint(2, MAX_START)
    start = value
    sentences = [f"{name} has {value} {objects}."]
    equations = []
    ops = []
    for _ in range(rng.randint(2, 4)):
        op, operand = _pick_operation(rng, value)
        new_value = _apply(op, value, operand)
        template = rng.choice(_TEMPLATES[op])
        sentences.append(template.format(p=pronoun, p_obj=pronoun_obj, n=operand, o=objects))
        equations.append(f"{value} {_SYMBOL[op]} {operand} = {new_value}")
        ops.append((op, operand))
        value = new_value
    sentences.append(f"How many {objects} does {name} have now?")
    answer = "\n".join([*equations, f"#### {value}"])
    return Problem(start, tuple(ops), " ".join(sentences), answer, value)


def iter_problems(seed: int, split: str = "train") -> Iterator[Problem]:
    """An endless, deterministic stream of the problems of ``split`` drawn from ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"unknown arith split {split!r}; use one of {', '.join(SPLITS)}")
    rng = random.Random(f"arith-{seed}")
    while True:
        problem = generate_problem(rng)
        if split_of(problem.signature) == split:
            yield problem


def make_split(split: str, size: int, seed: int) -> list[Problem]:
    """``size`` problems of ``split`` with distinct arithmetic, deterministic from ``seed``."""
    seen: set[str] = set()
    problems = []
    for problem in iter_problems(seed, split):
        if problem.signature not in seen:
            seen.add(problem.signature)
            problems.append(problem)
            if len(problems) == size:
                return problems
    raise AssertionError("unreachable: iter_problems is endless")


def write_splits(
    out_dir: Path = EMBEDDED_TASK_DIR,
    splits: tuple[str, ...] = SPLITS,
    seed: int | None = None,
    size: int | None = None,
) -> dict[str, Path]:
    """Write ``{split}.jsonl`` for ``splits`` (GSM8K fields ``question`` / ``answer``): the
    shipped files by default; another ``seed`` draws other problems of the same splits (e.g.
    fresh train prompts for each self-training round), ``size`` problems each."""
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise ValueError(f"unknown arith split(s) {unknown}; use some of {', '.join(SPLITS)}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in splits:
        path = out_dir / f"{split}.jsonl"
        split_seed = SPLIT_SEEDS[split] if seed is None else seed
        with path.open("w") as f:
            for problem in make_split(split, size or SPLIT_SIZES[split], split_seed):
                f.write(json.dumps({"question": problem.question, "answer": problem.answer}))
                f.write("\n")
        paths[split] = path
    return paths


@register_task("arith")
class ArithTask(GSM8KTask):
    """The embedded arithmetic word-problem task: GSM8K's format and answer checking, files
    under ``data/arith``, a 64-token canvas in blocks of 16 (answers are short)."""

    description = "the embedded arithmetic word problems (data/arith)"
    default_path = EMBEDDED_TASK_DIR
    id_prefix = "arith"
    instruction = ""  # the embedded model was pretrained on the bare question
    splits = SPLITS
    gen_length = EMBEDDED_GEN_LENGTH
    block_length = EMBEDDED_BLOCK_LENGTH

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        if self.path == self.default_path and split in SPLITS:  # the shipped splits
            if not (self.path / f"{split}.jsonl").is_file():
                raise FileNotFoundError(
                    f"{self.path / f'{split}.jsonl'} does not exist; regenerate the arith splits "
                    "with `python -m r2sft.embedded.make_task`"
                )
        return super().load(split, limit)
