"""Declaring an option once: a dataclass field with its help and range check.

Decoder options (and the redundancy weights) are declared as fields made by :func:`option`:
the default, one line of help and, where the type alone does not bound it, a check. From
that one declaration come the range checks of the resolved config (:func:`check_options`)
and the command-line layer (:func:`optional_twin`: the same fields, each defaulting to None
= "not set here", checked the same way when set).

A ``Literal[...]`` annotation is its own check: the value must be one of its choices, and
the command line offers them as choices.

Where a field's own default is None and None means something (``suffix_window``: no pruning),
its twin takes the word ``none`` (:data:`~r2sft.config.NONE_WORD`) to set that None on
purpose, over a preset: ``--suffix_window none``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from r2sft.config import EXPLICIT_NONE, NONE_WORD

Check = Callable[[Any], str | None]
"""A range check: None when the value is fine, else what is wrong ("must be >= 0")."""


def option(default: Any, help: str, check: Check | None = None, flag: str | None = None) -> Any:
    """A dataclass field with its help text and range check (``flag``: its command-line name
    where it differs from the field's, e.g. ``score_window`` for the redundancy window)."""
    metadata = {"help": help, "check": check, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be >= {low}"

    return check


def greater_than(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value > low else f"must be > {low}"

    return check


def confidence(value: Any) -> str | None:
    """A probability a token's confidence is compared with."""
    return None if 0.0 <= value <= 1.0 else "is a confidence: choose a value in [0, 1]"


def fraction(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be in [0, 1]"


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` (or optional ``Literal``) annotation, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return None


def _flag(item: dataclasses.Field) -> str:
    return item.metadata.get("flag") or item.name


def check_options(instance: Any, names: Iterable[str] | None = None, prefix: str = "") -> None:
    """Range-check the option fields of ``instance`` (those in ``names``; all by default).

    None values are skipped (an optional field not set). The error names the option as
    ``prefix + flag`` (``--threshold`` on a command line, ``threshold`` in a config) and the
    allowed values or range.
    """
    cls = type(instance)
    hints = typing.get_type_hints(cls)
    wanted = None if names is None else set(names)
    for item in dataclasses.fields(cls):
        if wanted is not None and item.name not in wanted:
            continue
        value = getattr(instance, item.name)
        if value is None or (value == NONE_WORD and item.metadata.get(EXPLICIT_NONE)):
            continue
        label = f"{prefix}{_flag(item)}"
        allowed = choices_of(hints.get(item.name))
        if allowed is not None and value not in allowed:
            raise ValueError(
                f"{label} {value!r} is unknown; choose one of {', '.join(map(str, allowed))}."
            )
        check = item.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem is not None:
            raise ValueError(f"{label} {value!r} {problem}.")


def optional_twin(
    source: type,
    name: str,
    bases: tuple[type, ...] = (),
    skip: Iterable[str] = (),
    leading: Iterable[tuple[str, Any, dataclasses.Field]] = (),
    module: str | None = None,
    default_label: str = "the default",
) -> type:
    """A dataclass with every option field of ``source`` (but ``skip``) as ``T | None =
    None``, named by its ``flag``, with the same help (plus "not set: ...") and check.

    ``leading`` fields come first (e.g. the decoder name); ``bases`` give the methods; each
    help ends with ``(None: default_label source-default)``. A field whose source default is
    None also takes :data:`~r2sft.config.NONE_WORD`: that None, set here.
    """
    hints = typing.get_type_hints(source)
    skipped = set(skip)
    fields = list(leading)
    for item in dataclasses.fields(source):
        if item.name in skipped:
            continue
        metadata = {**item.metadata, "flag": None, "source": item.name}
        metadata["help"] = f"{item.metadata['help']} (None: {default_label} {item.default!r})"
        if item.default is None:
            metadata[EXPLICIT_NONE] = True
            metadata["help"] = (
                f"{item.metadata['help']} (not set: {default_label} None; {NONE_WORD}: None "
                "whatever the preset says)"
            )
        fields.append(
            (_flag(item), hints[item.name] | None, dataclasses.field(default=None,
                                                                     metadata=metadata))
        )  # fmt: skip
    twin = dataclasses.make_dataclass(name, fields, bases=bases)
    twin.__module__ = module or source.__module__
    twin.__qualname__ = name
    return twin


def set_fields(instance: Any, twin: type) -> dict[str, Any]:
    """The options of :func:`optional_twin` class ``twin`` that ``instance`` (a ``twin``, or
    a config inheriting it, which may redeclare a field for another default) sets, under the
    names of the source's fields."""
    values = {}
    for item in dataclasses.fields(twin):
        origin = item.metadata.get("source")
        value = getattr(instance, item.name)
        if origin is not None and value is not None:
            explicit_none = value == NONE_WORD and item.metadata.get(EXPLICIT_NONE)
            values[origin] = None if explicit_none else value
    return values
