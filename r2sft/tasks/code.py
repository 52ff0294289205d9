"""Code tasks scored by running their unit tests: HumanEval and MBPP.

Both read a local JSONL / ``.jsonl.gz`` file (or a folder holding ``{split}.jsonl[.gz]`` or
a single data file) in the data set's own format, or the data set's Hub name when online.
A response is judged by extracting its code (the first fenced block, else the raw text),
assembling the task's test program around it and running that program in
:mod:`r2sft.tasks.sandbox`: it passes iff it exits 0 within the time limit.

``read_jsonl`` is shared with the MATH task: it reports a malformed line or a missing field
with file and line, or, with ``skip_invalid``, skips and records it.
"""

from __future__ import annotations

import gzip
import json
import re
from abc import abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.sandbox import SandboxLimits, run_many


class InvalidRecordError(ValueError):
    """A data record cannot be used; the message names the file, line and problem."""


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open()


def reject_record(problem: str, skip_invalid: bool, skipped: list[str] | None) -> None:
    """Handle an invalid data record: raise naming it, or (``skip_invalid``) record it in
    ``skipped`` so the caller can drop it and count it."""
    if not skip_invalid:
        raise InvalidRecordError(f"{problem}. Fix or remove the line, or pass --skip_invalid.")
    if skipped is not None:
        skipped.append(problem)


def read_jsonl(
    path: Path,
    required: Iterable[str],
    skip_invalid: bool = False,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL(.gz) file that carry every ``required`` field.

    A malformed line, a non-object or a missing / empty required field raises
    :class:`InvalidRecordError` naming ``path:line``; with ``skip_invalid`` the line is
    skipped and its reason appended to ``skipped`` instead.
    """
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist; check the task's --data_path.")
    required = tuple(required)
    records = []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            problem = None
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problem = f"{path}:{line_number}: malformed JSON ({error.msg})"
            else:
                if not isinstance(record, dict):
                    problem = f"{path}:{line_number}: expected a JSON object"
                else:
                    missing = [key for key in required if record.get(key) in (None, "", [])]
                    if missing:
                        problem = f"{path}:{line_number}: missing or empty field(s) {missing}"
            if problem is not None:
                reject_record(problem, skip_invalid, skipped)
                continue
            record["_line"] = line_number
            records.append(record)
    return records


def find_split_file(root: Path, split: str) -> Path:
    """``root`` itself if it is a file, else ``root/{split}.jsonl[.gz]`` or its only data file."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"data path {root} does not exist; check --data_path.")
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (root / name).is_file():
            return root / name
    candidates = sorted([*root.glob("*.jsonl"), *root.glob("*.jsonl.gz")])
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"no {split}.jsonl(.gz) in {root} (found {[c.name for c in candidates]}); "
        "point --data_path at the file itself."
    )


def _load_hub_rows(name: str, split: str) -> list[dict[str, Any]]:
    from datasets import load_dataset  # only when a Hub name is used: needs network

    rows = [dict(row) for row in load_dataset(name, split=split)]
    for index, row in enumerate(rows):
        row["_line"] = index + 1
    return rows


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(response: str) -> str:
    """The first fenced code block of ``response`` (an unclosed one runs to the end), else
    the whole response."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def _imports_of(source: str) -> str:
    """The import lines of a prompt: a full-function answer still needs them."""
    lines = source.splitlines()
    return "\n".join(line for line in lines if line.startswith(("import ", "from ")))


class _CodeTask(Task):
    """Shared loading and sandboxed scoring of HumanEval-like tasks."""

    hub_name: str = ""
    required_fields: tuple[str, ...] = ()

    def __init__(
        self,
        path: str | Path | None = None,
        sandbox_timeout_s: float = 10.0,
        sandbox_memory_mb: int = 1024,
        max_workers: int | None = None,
        skip_invalid: bool = False,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.limits = SandboxLimits(timeout_s=sandbox_timeout_s, memory_mb=sandbox_memory_mb)
        self.max_workers = max_workers
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []  # reasons for records skipped by the last load()

    def _rows(self, split: str) -> tuple[list[dict[str, Any]], str]:
        self.skipped = []
        if self.path is None:
            return _load_hub_rows(self.hub_name, split), self.hub_name
        file = find_split_file(self.path, split)
        return read_jsonl(file, self.required_fields, self.skip_invalid, self.skipped), str(file)

    @abstractmethod
    def program(self, example: Example, response: str) -> str:
        """The test program that exits 0 iff ``response`` solves ``example``."""

    def is_correct(self, example: Example, response: str) -> bool:
        return self.is_correct_batch([example], [response])[0]

    def is_correct_batch(self, examples: list[Example], responses: list[str]) -> list[bool]:
        programs = [self.program(ex, r) for ex, r in zip(examples, responses, strict=True)]
        return [result.passed for result in run_many(programs, self.limits, self.max_workers)]


@register_task("humaneval")
class HumanEvalTask(_CodeTask):
    """HumanEval: complete a function from its signature and docstring (164 problems, split
    "test"). Fields: task_id, prompt, test, entry_point."""

    hub_name = "openai/openai_humaneval"
    required_fields = ("task_id", "prompt", "test", "entry_point")

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        rows, source = self._rows(split)
        examples = [
            Example(
                id=str(row["task_id"]),
                question=row["prompt"],
                reference=row["test"],
                meta={"entry_point": row["entry_point"], "source": f"{source}:{row['_line']}"},
            )
            for row in rows
        ]
        return examples[:limit]

    def user_message(self, example: Example) -> str:
        return (
            "Complete the following Python function. Reply with the whole function in a "
            f"```python code block.\n```python\n{example.question}```"
        )

    def program(self, example: Example, response: str) -> str:
        code = extract_code(response)
        entry_point = example.meta["entry_point"]
        if re.search(rf"^def {re.escape(entry_point)}\s*\(", code, re.MULTILINE):
            solution = f"{_imports_of(example.question)}\n{code}"  # a whole function
        else:
            solution = example.question + code  # a body completing the prompt
        return f"{solution}\n\n{example.reference}\n\ncheck({entry_point})\n"


@register_task("mbpp")
class MBPPTask(_CodeTask):
    """MBPP: write a function from a one-line description and its asserts (splits train,
    validation, test, prompt). Fields: task_id, text (or prompt, as in the sanitized set),
    test_list; optional test_setup_code, test_imports."""

    hub_name = "google-research-datasets/mbpp"
    required_fields = ("task_id", "test_list")

    def load(self, split: str = "test", limit: int | None = None) -> list[Example]:
        rows, source = self._rows(split)
        examples = []
        for row in rows:
            text = row.get("text") or row.get("prompt")
            where = f"{source}:{row['_line']}"
            if not text:
                reject_record(
                    f"{where}: missing field 'text' (or 'prompt')", self.skip_invalid, self.skipped
                )
                continue
            tests = list(row["test_list"])
            setup = "\n".join(
                part
                for part in (*row.get("test_imports", []), row.get("test_setup_code", ""))
                if part
            )
            examples.append(
                Example(
                    id=f"mbpp-{row['task_id']}",
                    question=text,
                    reference="\n".join(tests),
                    meta={"setup": setup, "source": where},
                )
            )
        return examples[:limit]

    def user_message(self, example: Example) -> str:
        tests = example.reference
        return (
            f"{example.question}\nYour code should pass these tests:\n{tests}\n"
            "Reply with the function in a ```python code block."
        )

    def program(self, example: Example, response: str) -> str:
        return f"{example.meta['setup']}\n{extract_code(response)}\n\n{example.reference}\n"
