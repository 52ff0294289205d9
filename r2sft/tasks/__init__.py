"""Built-in tasks. Importing this package registers every task module in it."""

from __future__ import annotations

import importlib
import pkgutil

from r2sft.tasks.base import (
    Example,
    Task,
    TaskArgs,
    TaskOptions,
    available_tasks,
    get_task,
    register_task,
    task_class,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "files"):
        importlib.import_module(f"{__name__}.{_module.name}")

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
