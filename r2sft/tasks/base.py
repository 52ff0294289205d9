"""Task plug-ins: where prompts come from and how a response is judged.

A task turns a split of a data set into :class:`Example` records, writes the user turn of
the prompt (the chat template itself is the model's business, see ``r2sft.specs``) and
scores a decoded response. Tasks register themselves by name so configs can say
``task: gsm8k`` and command lines ``--task gsm8k``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from r2sft.paths import EMBEDDED_TASK


@dataclass(frozen=True)
class Example:
    """One prompt of a task.

    ``reference`` is whatever the scorer needs: a final answer for math, test code for
    code tasks. ``meta`` carries task-specific extras (entry point, solution text...).
    """

    id: str
    question: str
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOptions:
    """The options every task takes; collect, evaluate and tracking pass them through.

    Attributes:
        path: local data file or folder (None: the task's own default or its Hub data set).
        skip_invalid: skip (and count in ``Task.skipped``) unusable records instead of
            failing on the first one.
        sandbox_timeout_s: code tasks: wall-clock limit of one test run.
        sandbox_memory_mb: code tasks: address-space limit of one test run.
        scoring_workers: code tasks: sandboxes run at once (None: the CPU count).
    """

    path: str | Path | None = None
    skip_invalid: bool = False
    sandbox_timeout_s: float = 10.0
    sandbox_memory_mb: int = 1024
    scoring_workers: int | None = None

    def __post_init__(self) -> None:
        if self.sandbox_timeout_s <= 0 or self.sandbox_memory_mb <= 0:
            raise ValueError(
                f"sandbox limits must be positive (got sandbox_timeout_s="
                f"{self.sandbox_timeout_s}, sandbox_memory_mb={self.sandbox_memory_mb})."
            )
        if self.scoring_workers is not None and self.scoring_workers < 1:
            raise ValueError(f"scoring_workers must be >= 1, got {self.scoring_workers}.")


class Task(ABC):
    """A source of prompts plus a correctness function.

    Class attributes a task may set: ``default_path`` (its data when no path is given),
    ``gen_length`` / ``block_length`` (the canvas its answers need, when it differs from the
    decoder preset's) and ``runs_code`` (scores by running model code in the sandbox).
    """

    name: ClassVar[str] = ""
    default_path: ClassVar[Path | None] = None
    gen_length: ClassVar[int | None] = None
    block_length: ClassVar[int | None] = None
    runs_code: ClassVar[bool] = False

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options or TaskOptions()
        path = self.options.path if self.options.path is not None else self.default_path
        self.path = Path(path) if path is not None else None
        self.skipped: list[str] = []  # reasons for the records the last load() skipped

    @abstractmethod
    def load(self, split: str, limit: int | None = None) -> list[Example]:
        """Return the first ``limit`` examples of ``split`` (all when None)."""

    @abstractmethod
    def user_message(self, example: Example) -> str:
        """The text of the user turn for ``example`` (no chat markup)."""

    @abstractmethod
    def is_correct(self, example: Example, response: str) -> bool:
        """Whether the decoded ``response`` text solves ``example``."""

    def is_correct_batch(self, examples: list[Example], responses: list[str]) -> list[bool]:
        """Score many responses; code tasks override this to run sandboxes in parallel."""
        return [self.is_correct(ex, r) for ex, r in zip(examples, responses, strict=True)]


_TASKS: dict[str, Callable[..., Task]] = {}
T = TypeVar("T", bound=type[Task])


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator adding a task to the registry under ``name``."""

    def wrap(cls: T) -> T:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def task_class(name: str) -> Callable[..., Task]:
    """The registered class of task ``name`` (to inspect which options it accepts)."""
    import r2sft.tasks  # noqa: F401  (imports every built-in task so it registers)

    if name not in _TASKS:
        raise ValueError(
            f"unknown task {name!r}; available tasks: {', '.join(available_tasks())}. "
            "Set --task to one of them, or register a new one with r2sft.tasks.register_task."
        )
    return _TASKS[name]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TaskArgs:
    """The task options of a config or command line (collect, evaluate, training's
    tracking, the benches inherit these fields): which task, its data and its options."""

    _argument_group_name = "model and data"  # the --help heading (r2sft.config)

    task: str = field(
        default=EMBEDDED_TASK,
        metadata=_help("task name (r2sft.tasks): arith, gsm8k, math, humaneval, mbpp."),
    )
    data_path: str | None = field(
        default=None,
        metadata=_help("the task's data: a JSONL file or a folder of {split}.jsonl (None: the "
                       "task's default, or its Hub data set)."),
    )  # fmt: skip
    skip_invalid: bool = field(
        default=False,
        metadata=_help("skip (and count) malformed, empty or too long prompts instead of failing."),
    )
    sandbox_timeout_s: float = field(
        default=TaskOptions.sandbox_timeout_s, metadata=_help("code tasks: time limit per test.")
    )
    sandbox_memory_mb: int = field(
        default=TaskOptions.sandbox_memory_mb, metadata=_help("code tasks: memory limit per test.")
    )
    scoring_workers: int | None = field(
        default=None, metadata=_help("code tasks: parallel sandboxes (None: CPU count).")
    )

    def __post_init__(self) -> None:
        self.check_task_args()

    def check_task_args(self) -> None:
        """Validate the options now (at parse time, before any work)."""
        self.task_options()

    def task_options(self) -> TaskOptions:
        return TaskOptions(
            path=self.data_path,
            skip_invalid=self.skip_invalid,
            sandbox_timeout_s=self.sandbox_timeout_s,
            sandbox_memory_mb=self.sandbox_memory_mb,
            scoring_workers=self.scoring_workers,
        )

    def make_task(self) -> Task:
        """The configured task (a clear error for an unknown name or a bad option)."""
        return task_class(self.task)(self.task_options())


def get_task(name: str, **options: Any) -> Task:
    """Instantiate the task ``name`` with :class:`TaskOptions` ``options`` (None values
    keep the defaults), e.g. ``get_task("gsm8k", path="data/gsm8k")``."""
    valid = {f.name for f in dataclasses.fields(TaskOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown task option(s) {unknown}; valid options: {sorted(valid)}.")
    cls = task_class(name)
    return cls(TaskOptions(**{k: v for k, v in options.items() if v is not None}))
