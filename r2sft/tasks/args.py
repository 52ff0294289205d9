"""``TaskArgs``: the task options of a config or command line.

Its own module because its help lists the registered tasks: ``r2sft/tasks/__init__`` imports
it after every built-in task module has registered (a task registered later, by the caller's
own code, works as ``--task`` all the same; the help just does not name it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r2sft.paths import EMBEDDED_TASK
from r2sft.tasks.base import Task, TaskOptions, available_tasks, task_class


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _task_names() -> str:
    return "; ".join(f"{name}: {task_class(name).description}" for name in available_tasks())


@dataclass
class TaskArgs:
    """The task options of a config or command line (collect, evaluate, training's
    tracking, the benches inherit these fields): which task, its data and its options."""

    _argument_group_name = "model and data"  # the --help heading (r2sft.config)

    task: str = field(
        default=EMBEDDED_TASK,
        metadata=_help(f"task name (r2sft.tasks): {_task_names()}."),
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
        """Validate the task name and options now (at parse time, before any work)."""
        task_class(self.task)
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
