"""Built-in tasks. Importing this package registers every task module in it.

A task is a :class:`Task` subclass registered with :func:`register_task` (its name, and a
``description`` for ``--help``), in a module of this package or in the caller's own code.
Helpers that hold no task (``files``, ``extraction``) and the code sandbox
(:mod:`r2sft.sandbox`) are not discovered.
"""

from __future__ import annotations

import importlib
import pkgutil

from r2sft.tasks.base import (
    Example,
    Task,
    TaskOptions,
    available_tasks,
    get_task,
    register_task,
    task_class,
)

# Every module here but these holds tasks: import it so its tasks register.
_NOT_TASKS = {"base", "args", "files", "extraction"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_TASKS:
        importlib.import_module(f"{__name__}.{_module.name}")

# After the tasks: TaskArgs' help lists them.
from r2sft.tasks.args import TaskArgs  # noqa: E402

__all__ = [
    "Example",
    "Task",
    "TaskArgs",
    "TaskOptions",
    "available_tasks",
    "get_task",
    "register_task",
    "task_class",
]
