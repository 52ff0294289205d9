"""Task plug-ins: where prompts come from and how a response is judged.

A task turns a split of a data set into :class:`Example` records, writes the user turn of
the prompt (the chat template itself is the model's business, see ``r2sft.specs``) and
scores a decoded response. Tasks register themselves by name so configs can say
``task: gsm8k`` and command lines ``--task gsm8k``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar


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


class Task(ABC):
    """A source of prompts plus a correctness function."""

    name: str = ""

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


def get_task(name: str, **options: Any) -> Task:
    """Instantiate the task ``name`` with its ``options`` (e.g. ``path=`` for local files)."""
    return task_class(name)(**options)
