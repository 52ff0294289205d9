"""Experiment configuration: dataclasses filled from a YAML file plus command-line overrides.

``collect.py``, ``train.py`` and ``python -m r2sft.evaluate`` all read their settings the same
way::

    python train.py --config configs/train_embedded.yaml --max_steps 10

The YAML file gives values for dataclass fields, flags override them, and anything that is
not a field of the config is an error naming the key, where it came from and the nearest
valid keys. Parsing is transformers' ``HfArgumentParser`` (types, choices, ``--help`` from
field metadata); this module adds the YAML layer, the error messages and a ``--help`` that
reads well (:class:`OptionParser`): what the command does and how to launch it first, then
the options grouped by what they are about, r2sft's own before the ones a class inherits from
another library (transformers' Trainer flags).

Groups: a field's ``metadata["group"]`` (:func:`option`), else the ``_argument_group_name``
of the dataclass that declares the field (transformers' attribute for the same purpose).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import dataclasses
import difflib
import gc
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

# The value that sets an option to None on purpose where a missing value (None) means "not
# set here" (a decoder option over a preset): ``--suffix_window none``, ``suffix_window: none``
# in YAML. Only fields whose metadata carries EXPLICIT_NONE take it (see optional_twin).
NONE_WORD = "none"
EXPLICIT_NONE = "explicit_none"
# Field metadata that argparse must not see: the --help group, and what
# r2sft.decoding.options.option declares (range check, flag name, source field, NONE_WORD).
_OWN_METADATA = frozenset({"group", "check", "flag", "source", EXPLICIT_NONE})


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and how to fix it."""


def _field_types(dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for cls in dataclass_types:
        resolved = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                hints[field.name] = resolved.get(field.name, Any)
    return hints


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _accepts(annotation: Any, value: Any) -> bool:
    """Loose type check of a YAML value against a field annotation (scalars only)."""
    if value is None or annotation is Any:
        return True
    if annotation is type(None):  # the None of an optional field admits only None
        return False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        # None itself passed above; NoneType must not accept every other value.
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return any(_accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True  # enums, nested types: left to the dataclass's own validation


def explicit_none_fields(dataclass_types: tuple[type, ...]) -> frozenset[str]:
    """The fields of ``dataclass_types`` that take :data:`NONE_WORD`."""
    return frozenset(
        field.name
        for cls in dataclass_types
        for field in dataclasses.fields(cls)
        if field.metadata.get(EXPLICIT_NONE)
    )


def _or_none_word(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that also takes :data:`NONE_WORD` (kept as that word)."""

    def parse(text: str) -> Any:
        return NONE_WORD if text.strip().lower() == NONE_WORD else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse's "invalid X value"
    return parse


def load_yaml_config(path: str | Path, dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """Read a YAML mapping and check every key and scalar type against the dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; check the --config path.")
    with path.open() as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error}).") from error
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a mapping of option: value, got {type(values).__name__}."
        )
    return check_config_values(values, dataclass_types, source=str(path))


def check_config_values(
    values: dict[str, Any], dataclass_types: tuple[type, ...], source: str
) -> dict[str, Any]:
    """Check every key and scalar type of ``values`` against the dataclasses' fields.

    Raises:
        ConfigError: naming ``source`` (where the values came from), the unknown key with
            the nearest valid ones, or the wrongly typed value and the expected type.
    """
    hints = _field_types(dataclass_types)
    takes_none_word = explicit_none_fields(dataclass_types)
    for key, value in values.items():
        if key in takes_none_word and value == NONE_WORD:
            continue
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown config key {key!r}.{_suggest(str(key), sorted(hints))} "
                f"Valid keys: {', '.join(sorted(hints))}."
            )
        if not _accepts(hints[key], value):
            raise ConfigError(
                f"{source}: key {key!r} has value {value!r} of type {type(value).__name__}, "
                f"expected {hints[key]}."
            )
    return values


DEBUG_FLAG = "--debug"
DEBUG_ENV = "R2SFT_DEBUG"
# Headings of --help, in this order; other r2sft groups follow them, then LAST_GROUP, then
# the groups of options inherited from other libraries. Training comes before decoding: in
# train.py the decoder options only shape the tracking decode.
GROUP_ORDER = ("general", "model and data", "training", "tracking", "decoding")
LAST_GROUP = "run and output"
GROUP_ATTRIBUTE = "_argument_group_name"  # transformers' HfArgumentParser reads it too
_TYPE_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


def option(help: str, group: str | None = None, **metadata: Any) -> dict[str, Any]:
    """A dataclass field's metadata: its ``--help`` text and, when it differs from its
    class's, its ``--help`` group (``field(default=..., metadata=option("...", "tracking"))``)."""
    return {"help": help, **({"group": group} if group else {}), **metadata}


def _declaring_class(dtype: type, name: str) -> type:
    """The class in ``dtype``'s MRO that declares the field ``name`` (its own annotation)."""
    for cls in dtype.__mro__:
        if name in inspect.get_annotations(cls):
            return cls
    return dtype


def _inherited_help(dtype: type, name: str) -> str | None:
    """The help of a field redeclared without one (a new default): the base class's."""
    for cls in dtype.__mro__[1:]:
        base_field = getattr(cls, "__dataclass_fields__", {}).get(name)
        if base_field is not None and base_field.metadata.get("help"):
            return base_field.metadata["help"]
    return None


def field_group(dtype: type, field: dataclasses.Field) -> str:
    """The ``--help`` heading of a field: its metadata's group, else its declaring class's
    group name, else its group in a base class that declares it too, else (a class of
    another library) "inherited from LIBRARY CLASS", else "options"."""
    if field.metadata.get("group"):
        return field.metadata["group"]
    cls = _declaring_class(dtype, field.name)
    own = cls.__dict__.get(GROUP_ATTRIBUTE)
    if own:
        return own
    for base in cls.__mro__[1:]:  # a field redeclared (a new default) keeps its base's group
        base_field = getattr(base, "__dataclass_fields__", {}).get(field.name)
        if base_field is not None:
            return field_group(base, base_field)
    if _third_party(cls):
        return f"inherited from {cls.__module__.split('.')[0]} {cls.__name__}"
    return "options"


def _third_party(cls: type) -> bool:
    """Whether ``cls`` comes from an installed library other than r2sft (transformers...)."""
    if cls.__module__.split(".")[0] == __name__.split(".")[0]:
        return False
    path = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
    return any(part in ("site-packages", "dist-packages") for part in Path(path).parts)


class _HelpFormatter(argparse.HelpFormatter):
    """One spelling per option (``--gen_length INT``; the ``--gen-length`` alias still
    works), wide enough for long option names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=min(100, _terminal_width()))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        # --gen-length is HfArgumentParser's alias of --gen_length: accepted, not listed.
        spellings = [
            spelling
            for spelling in action.option_strings
            if "--" + spelling[2:].replace("-", "_") == spelling
            or "--" + spelling[2:].replace("-", "_") not in action.option_strings
        ]
        if action.nargs == 0:
            return ", ".join(spellings)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(f"{spelling} {metavar}" for spelling in spellings)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


class OptionParser(HfArgumentParser):
    """``HfArgumentParser`` with a ``--help`` that reads well.

    The help starts with what the command does and how it is launched; options are grouped
    (:func:`field_group`), r2sft's groups first in :data:`GROUP_ORDER`, inherited ones last;
    each option is shown once with a type placeholder (INT, FLOAT, TEXT, a|b|c), its
    default, and for booleans the values they take, with the ``--no_X`` switch folded into
    ``--X``'s line.
    """

    def __init__(
        self, dataclass_types: tuple[type, ...], command: str | None, summary: str | None
    ) -> None:
        self._groups: dict[str, argparse._ArgumentGroup] = {}
        prog = command or os.path.basename(sys.argv[0])
        super().__init__(
            dataclass_types,
            prog=prog,
            usage=f"{prog} [--config FILE.yaml] [--OPTION VALUE ...]",
            description=summary,
            formatter_class=_HelpFormatter,
        )
        general = self._group("general")
        general._group_actions.append(self._option_string_actions["-h"])
        self._action_groups.remove(self._optionals)
        general.add_argument(
            "--config", type=str, default=None, metavar="FILE.yaml",
            help="YAML file of option: value pairs; flags given here override it.",
        )  # fmt: skip
        # --debug is read by run_main before parsing (a field may have that name too).
        general.description = f"{DEBUG_FLAG} (or {DEBUG_ENV}=1): a failure shows its traceback."
        self._action_groups.sort(key=self._group_rank)

    def _group(self, title: str) -> argparse._ArgumentGroup:
        if title not in self._groups:
            self._groups[title] = self.add_argument_group(title)
        return self._groups[title]

    def _group_rank(self, group: argparse._ArgumentGroup) -> tuple[int, int]:
        titles = list(self._groups)
        title = group.title or ""
        if title in GROUP_ORDER:
            return (0, GROUP_ORDER.index(title))
        if title == LAST_GROUP:
            return (2, 0)
        inherited = title.startswith("inherited from ")
        return (3 if inherited else 1, titles.index(title) if title in titles else 0)

    def _add_dataclass_arguments(self, dtype: type) -> None:
        hints = typing.get_type_hints(dtype)

        # In each group the command's own options come first, those it redeclares for a new
        # default (learning_rate...) next, then those of its base classes.
        def rank(field: dataclasses.Field) -> int:
            if _declaring_class(dtype, field.name) is not dtype:
                return 2
            redeclared = any(field.name in getattr(base, "__dataclass_fields__", {})
                             for base in dtype.__mro__[1:])  # fmt: skip
            return 1 if redeclared else 0

        for field in sorted(dataclasses.fields(dtype), key=rank):
            if not field.init:
                continue
            group = self._group(field_group(dtype, field))
            shown = copy.copy(field)
            metadata = {k: v for k, v in field.metadata.items() if k not in _OWN_METADATA}
            if not metadata.get("help"):
                metadata["help"] = _inherited_help(dtype, field.name) or ""
            shown.metadata = metadata
            shown.type = hints[field.name]
            before = len(self._actions)
            self._parse_dataclass_field(group, shown)
            main = self._actions[before]
            if main.type is string_to_bool and main.nargs is None:
                # An optional boolean (None: from the preset) takes the bare flag as true,
                # like the plain booleans: --compile is --compile true.
                main.nargs, main.const = "?", True
            _describe(self._actions[before:])
            if field.metadata.get(EXPLICIT_NONE):
                for action in self._actions[before:]:
                    action.type = _or_none_word(action.type or str)
                    action.metavar = f"{action.metavar}|{NONE_WORD}" if action.metavar else None

    def format_help(self) -> str:
        formatter = self._get_formatter()
        if self.description:
            formatter.add_text(self.description)
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        for group in self._action_groups:
            if group._group_actions:
                formatter.start_section(group.title)
                formatter.add_text(group.description)
                formatter.add_arguments(group._group_actions)
                formatter.end_section()
        return formatter.format_help()


def _describe(actions: list[argparse.Action]) -> None:
    """Placeholders, values and defaults in the help of one field's actions (the option and,
    for a boolean defaulting to true, its ``--no_X`` complement, folded into the option)."""
    main, *rest = actions
    text = (main.help or "").strip()
    if text and text[-1] not in ".?!)":
        text += "."
    if main.type is string_to_bool:
        switch = f"; --no_{main.dest} means false" if rest else ""
        bare = "; the bare flag means true" if main.nargs == "?" else ""
        main.metavar = "true|false"
        default = (
            ""
            if main.default is None and "None" in text
            else (f" (default: {_shown(main.default)})")
        )
        text += f" Takes true or false{bare}{switch}{default}."
    else:
        choices = getattr(main, "choices", None)
        if choices:
            main.metavar = "|".join(str(choice) for choice in choices)
        elif main.metavar is None:
            main.metavar = _TYPE_METAVARS.get(main.type, "VALUE")
        if not main.required and not (main.default is None and "None" in text):
            text += f" (default: {_shown(main.default)})"
    main.help = text.replace("%", "%%").strip()
    for complement in rest:  # --no_X: described on --X's line
        complement.help = argparse.SUPPRESS


def _shown(value: Any) -> str:
    """A default as --help shows it: booleans as typed, paths inside the working folder
    relative to it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and os.path.isabs(value):
        relative = os.path.relpath(value)
        return value if relative.startswith("..") else relative
    return str(getattr(value, "value", value))


def parse_config(
    *dataclass_types: type,
    args: list[str] | None = None,
    command: str | None = None,
    summary: str | None = None,
) -> Any:
    """Build config dataclass instances from ``--config FILE.yaml`` and ``--key value`` flags.

    Args:
        dataclass_types: one or more dataclass types; every field becomes a flag.
        args: the command line (without the program name); ``sys.argv[1:]`` when None.
        command: how the command is launched (``--help``'s usage line), e.g.
            ``"python -m r2sft.evaluate"``; the script name when None.
        summary: what the command does, in a line (the first line of ``--help``); the first
            line of a module docstring may be passed whole.

    Returns:
        The single instance when one type is given, else a tuple in the given order.

    Raises:
        ConfigError: unknown key in the YAML file or on the command line, or a wrongly
            typed YAML value.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if summary:
        summary = summary.strip().splitlines()[0]
    parser = OptionParser(dataclass_types, command=command, summary=summary)
    known, _ = parser.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**load_yaml_config(known.config, dataclass_types))
    *instances, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    instances = [instance for instance in instances if dataclasses.is_dataclass(instance)]
    if remaining:
        valid = sorted(_field_types(dataclass_types))
        flag = next((item for item in remaining if item.startswith("--")), remaining[0])
        raise ConfigError(
            f"unknown command-line option {flag!r}.{_suggest(flag.lstrip('-'), valid)} "
            "Run with --help for every option."
        )
    return instances[0] if len(instances) == 1 else tuple(instances)


def end_process_group() -> None:
    """Destroy torch.distributed's default process group if this process initialised one
    (``accelerate launch`` on several processes, DeepSpeed): without it NCCL warns at exit
    that ``destroy_process_group() was not called`` and may leak its resources."""
    distributed = sys.modules.get("torch.distributed")  # never imported: no group to end
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    """Run an entry script's ``main(argv)``; a failure becomes one ``error: ...`` line on
    stderr and exit status 1, unless ``--debug`` is on the command line or ``R2SFT_DEBUG=1``
    is set, which show the full traceback instead. Either way the process group ends with
    ``main`` (:func:`end_process_group`), and the exit skips the interpreter's last garbage
    collection over every object torch and transformers made (``gc.freeze`` at exit: about
    2 s of a short run on the 2-core machine, spent collecting what the exit frees anyway)."""
    atexit.unregister(gc.freeze)  # once, however often run_main runs in this process
    atexit.register(gc.freeze)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [item for item in argv if item != DEBUG_FLAG]
    try:
        if debug:
            return main(argv)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception as error:  # noqa: BLE001  (every failure gets the same clear line)
            message = str(error) or type(error).__name__
            print(f"error: {message} (run with --debug for the traceback)", file=sys.stderr)
            raise SystemExit(1) from None
    finally:
        end_process_group()
