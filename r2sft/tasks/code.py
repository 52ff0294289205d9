"""Code tasks scored by running their unit tests: HumanEval and MBPP.

Both read a local JSONL / ``.jsonl.gz`` file (or a folder holding ``{split}.jsonl[.gz]`` or
a single data file) in the data set's own format, or the data set's Hub name when online.
A response is judged by extracting its code and joining it to the prompt's code
(:mod:`r2sft.tasks.extraction`), then running it in :mod:`r2sft.sandbox`: the
solution in an unprivileged worker, the task's tests (with the prompt's or the setup's own
code as their context) in the harness, calling the solution's functions. It passes iff
every test returns within the time limit; how the process ends does not count.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from r2sft.sandbox import CodeCheck, SandboxLimits, run_many
from r2sft.tasks.base import Example, Task, register_task
from r2sft.tasks.extraction import build_solution, called_names, parseable_head
from r2sft.tasks.extraction import extract_code as extract_code  # re-exported
from r2sft.tasks.files import find_split_file, load_hub_rows, read_jsonl, reject_record


class _CodeTask(Task):
    """Shared loading and sandboxed scoring of HumanEval-like tasks."""

    hub_name: str = ""
    required_fields: tuple[str, ...] = ()

    runs_code = True

    @property
    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout_s=self.options.sandbox_timeout_s, memory_mb=self.options.sandbox_memory_mb
        )

    def _rows(self, split: str) -> tuple[list[dict[str, Any]], str]:
        self.skipped = []
        if self.path is None:
            return load_hub_rows(self.hub_name, split), self.hub_name
        file = find_split_file(self.path, split)
        rows = read_jsonl(file, self.required_fields, self.options.skip_invalid, self.skipped)
        return rows, str(file)

    @abstractmethod
    def program(self, example: Example, response: str) -> CodeCheck:
        """The solution built from ``response`` and the tests that judge it."""

    def is_correct(self, example: Example, response: str) -> bool:
        return self.is_correct_batch([example], [response])[0]

    def is_correct_batch(self, examples: list[Example], responses: list[str]) -> list[bool]:
        programs = [self.program(ex, r) for ex, r in zip(examples, responses, strict=True)]
        return [
            result.passed
            for result in run_many(programs, self.limits, self.options.scoring_workers)
        ]


@register_task("humaneval")
class HumanEvalTask(_CodeTask):
    """HumanEval: complete a function from its signature and docstring (164 problems, split
    "test"). Fields: task_id, prompt, test, entry_point."""

    description = "Python functions from their docstrings, tests run in the sandbox"
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

    def program(self, example: Example, response: str) -> CodeCheck:
        """The prompt's helpers and imports with the model's function (restated whole, or
        as a body continuing the prompt), pruned by :func:`build_solution`. The tests run
        with the prompt itself as context (HumanEval/32, 38, 50 call its helpers), never
        with the model's versions of them."""
        entry_point = example.meta["entry_point"]
        solution = build_solution(example.question, response, entry_point)
        tests = f"{example.reference}\n\ncheck({entry_point})\n"
        return CodeCheck(solution, tests, (entry_point,), parseable_head(example.question))


@register_task("mbpp")
class MBPPTask(_CodeTask):
    """MBPP: write a function from a one-line description and its asserts (splits train,
    validation, test, prompt). Fields: task_id, text (or prompt, as in the sanitized set),
    test_list; optional test_setup_code, test_imports."""

    description = "Python functions from one-line descriptions, asserts run in the sandbox"
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
                    f"{where}: missing field 'text' (or 'prompt')",
                    self.options.skip_invalid,
                    self.skipped,
                )
                continue
            problem = None
            for key in ("test_list", "test_imports"):
                value = row.get(key)
                if value is None or (
                    isinstance(value, list) and all(isinstance(item, str) for item in value)
                ):
                    continue
                problem = (
                    f"field {key!r} must be a JSON list of strings, got {type(value).__name__}"
                )
                if isinstance(value, str):  # it would be read one character per test
                    problem += ' (a single string): wrap it in a list, ["assert ..."]'
                break
            if problem is None and not isinstance(row.get("test_setup_code") or "", str):
                problem = "field 'test_setup_code' must be a string"
            if problem is not None:
                reject_record(f"{where}: {problem}", self.options.skip_invalid, self.skipped)
                continue
            tests = row["test_list"]
            setup = "\n".join(
                part
                for part in (*(row.get("test_imports") or []), row.get("test_setup_code") or "")
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

    def program(self, example: Example, response: str) -> CodeCheck:
        """The test setup with the model's code, pruned to what the functions the asserts
        call need (the entry points are read from the asserts); the asserts run with the
        setup as context."""
        setup = example.meta["setup"]
        entry_points = called_names(example.reference, setup)
        solution = build_solution(setup, response, entry_points or None)
        return CodeCheck(solution, example.reference, tuple(entry_points), context=setup)
