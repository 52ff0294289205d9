"""Experiment configuration: dataclasses filled from a YAML file plus command-line overrides.

``collect.py``, ``train.py`` and ``python -m r2sft.evaluate`` all read their settings the same
way::

    python train.py --config configs/train_embedded.yaml --max_steps 10

The YAML file gives values for dataclass fields, flags override them, and anything that is
not a field of the config is an error naming the key, where it came from and the nearest
valid keys. Parsing is transformers' ``HfArgumentParser`` (types, choices, ``--help`` from
field metadata); this module only adds the YAML layer and the error messages.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import difflib
import gc
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

# Field metadata of r2sft's own (r2sft.decoding.options.option) that argparse must not see.
_OWN_METADATA = frozenset({"check", "flag", "source"})


class _ArgumentParser(HfArgumentParser):
    """HfArgumentParser that passes argparse only the metadata it knows."""

    @staticmethod
    def _parse_dataclass_field(parser: Any, field: dataclasses.Field) -> None:
        if _OWN_METADATA & set(field.metadata):
            field = copy.copy(field)
            field.metadata = types.MappingProxyType(
                {k: v for k, v in field.metadata.items() if k not in _OWN_METADATA}
            )
        HfArgumentParser._parse_dataclass_field(parser, field)


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
    for key, value in values.items():
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


def parse_config(*dataclass_types: type, args: list[str] | None = None) -> Any:
    """Build config dataclass instances from ``--config FILE.yaml`` and ``--key value`` flags.

    Args:
        dataclass_types: one or more dataclass types; every field becomes a flag.
        args: the command line (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        The single instance when one type is given, else a tuple in the given order.

    Raises:
        ConfigError: unknown key in the YAML file or on the command line, or a wrongly
            typed YAML value.
    """
    argv = list(sys.argv[1:] if args is None else args)
    parser = _ArgumentParser(dataclass_types)
    parser.add_argument(
        "--config", type=str, default=None, help="YAML file of option: value pairs."
    )
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


DEBUG_FLAG = "--debug"
DEBUG_ENV = "R2SFT_DEBUG"


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
