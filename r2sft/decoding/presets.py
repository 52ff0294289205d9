"""Decoder presets: decoder settings that belong to a model.

The R² thresholds that save the most forwards depend on the model (the paper tunes tau_s /
tau_t per setting; the official GSM8K values were chosen for LLaDA-8B). A preset stores,
per decoder name (``fixed``, ``threshold``, ``factor``, ``r2``), the :class:`DecoderConfig`
values to use, plus how and on what they were found. Three kinds:

- ``official``: the official R²-dLLM GSM8K values (``DecoderConfig``'s defaults; no early
  exit), the same for every model.
- ``model`` (the default everywhere): the model folder's ``r2sft_decoding.json``, written by
  ``python -m r2sft.tune --write``, copied into a fine-tuned model's ``final/`` and uploaded
  with it; the official values when the model has none.
- a path: a preset JSON file, or a folder holding ``r2sft_decoding.json``.

Resolution (``r2sft.decoding.args.DecoderArgs.resolve``): explicit options > the preset >
the task's canvas > the official values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2sft.decoding.config import DECODER_FIELDS, DECODER_NAMES, decoder_config
from r2sft.hub import require_hub

logger = logging.getLogger(__name__)

PRESET_FILE = "r2sft_decoding.json"
PRESET_FORMAT = "r2sft-decoding/1"
OFFICIAL = "official"
MODEL = "model"
# Settings of a decode that a preset never fixes: they belong to the run, not the model.
RUN_FIELDS = frozenset({"temperature", "record_trace"})


class PresetError(ValueError):
    """A preset cannot be found or read; the message names the file and the fix."""


@dataclass(frozen=True)
class DecoderPreset:
    """Decoder settings per decoder name, and where they came from.

    Attributes:
        name: ``official``, or the file the preset was read from.
        decoders: decoder name -> DecoderConfig field values for it (missing names and
            fields take the official values).
        tuned: how the values were found (model, task, split, limit, baseline, pick...);
            None for hand-written or official presets.
    """

    name: str
    decoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuned: dict[str, Any] | None = None

    def values(self, decoder: str) -> dict[str, Any]:
        """The DecoderConfig fields this preset sets for ``decoder`` (a copy)."""
        return dict(self.decoders.get(decoder, {}))

    def to_json(self) -> str:
        document = {"format": PRESET_FORMAT, "decoders": self.decoders, "tuned": self.tuned}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def check_preset(preset: DecoderPreset) -> DecoderPreset:
    """``preset`` when every decoder name and field is known and every value is valid."""
    known = DECODER_FIELDS - RUN_FIELDS
    for decoder, values in preset.decoders.items():
        if decoder not in DECODER_NAMES:
            raise PresetError(
                f"preset {preset.name}: unknown decoder {decoder!r}; the names are "
                f"{', '.join(DECODER_NAMES)}."
            )
        if not isinstance(values, dict):
            raise PresetError(f"preset {preset.name}: {decoder!r} must map fields to values.")
        unknown = sorted(set(values) - known)
        if unknown:
            raise PresetError(
                f"preset {preset.name}: decoder {decoder!r} sets unknown or run-only field(s) "
                f"{unknown}; valid fields: {sorted(known)}."
            )
        try:
            decoder_config(decoder, **values)
        except (TypeError, ValueError) as error:
            raise PresetError(f"preset {preset.name}: decoder {decoder!r}: {error}") from None
    return preset


def read_preset(path: str | Path) -> DecoderPreset:
    """Read a preset file (or the ``r2sft_decoding.json`` of a folder) and check it."""
    path = Path(path)
    if path.is_dir():
        path = path / PRESET_FILE
    if not path.is_file():
        raise PresetError(
            f"no decoder preset at {path}; write one with `python -m r2sft.tune --model MODEL "
            f"--write`, or use --preset official / model."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PresetError(f"decoder preset {path} is not valid JSON ({error}).") from None
    if not isinstance(document, dict) or document.get("format") != PRESET_FORMAT:
        raise PresetError(
            f'decoder preset {path}: expected a JSON object with "format": '
            f'"{PRESET_FORMAT}"; re-write it with `python -m r2sft.tune --write`.'
        )
    preset = DecoderPreset(str(path), document.get("decoders") or {}, document.get("tuned"))
    return check_preset(preset)


def write_preset(folder: str | Path, preset: DecoderPreset) -> Path:
    """Store ``preset`` as ``folder/r2sft_decoding.json``; returns the file."""
    path = Path(folder) / PRESET_FILE
    path.write_text(check_preset(preset).to_json(), encoding="utf-8")
    return path


def model_preset(model: str | Path | None) -> DecoderPreset | None:
    """The preset a model ships: its local folder's file, or the file of its Hub repo.

    None when the model has none (or no model is named). A Hub repo is asked once for the
    file; a repo without it is not an error, an unreachable Hub is (it would silently
    change the decoder).
    """
    if model is None:
        return None
    folder = Path(model)
    if folder.is_dir():
        return read_preset(folder) if (folder / PRESET_FILE).is_file() else None
    if folder.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") > 1:
        return None  # not a folder and not a Hub id: the model load reports it
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    # An unreachable Hub: named in seconds, not after a minute of retries.
    require_hub(
        f"the decoder preset {PRESET_FILE} of model {model!r}",
        "pass --preset official (or a preset file), or --model a local folder",
    )
    try:
        return read_preset(hf_hub_download(str(model), PRESET_FILE))
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    except LocalEntryNotFoundError:
        if not constants.HF_HUB_OFFLINE:
            raise PresetError(
                f"cannot reach the Hub to read the decoder preset {PRESET_FILE} of {model}; "
                "pass --preset official (or a preset file) to decode without it."
            ) from None
        logger.warning("HF_HUB_OFFLINE: no cached %s for %s; official values", PRESET_FILE, model)
        return None
    except Exception as error:  # no access, a broken file: say so instead of guessing
        raise PresetError(
            f"cannot read the decoder preset {PRESET_FILE} of Hub model {model} ({error}); "
            "pass --preset official (or a preset file) to decode without it."
        ) from None


def resolve_preset(preset: str, model: str | Path | None = None) -> DecoderPreset:
    """The preset named by ``--preset``: official, model (the model's own, else official),
    or a path to a preset file / folder."""
    if preset == OFFICIAL:
        return DecoderPreset(OFFICIAL)
    if preset == MODEL:
        return model_preset(model) or DecoderPreset(OFFICIAL)
    return read_preset(preset)
