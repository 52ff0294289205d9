"""The decoder options of every command line: a decoder name, a preset, and field overrides.

:class:`DecoderArgs` is derived from :class:`~r2sft.decoding.config.DecoderConfig`: the same
fields with the same help and range checks, each defaulting to None, meaning "not set here".
:meth:`DecoderArgs.resolve` turns it into a validated ``DecoderConfig`` with one resolution
order: explicit options, then defaults the caller gives (e.g. the collect decoder a training
run tracks with), then the preset, then the canvas the task asks for, then the official
values. Configs of collect, evaluate, training, tune, report and the benches inherit it, so
the flags are the same everywhere (``--decoder r2 --threshold 0.8 --tau_t 0.7``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from r2sft.decoding.config import DECODER_NAMES, DecoderConfig, decoder_config
from r2sft.decoding.options import check_options, optional_twin, set_fields
from r2sft.decoding.presets import MODEL, OFFICIAL, RUN_FIELDS, read_preset, resolve_preset


class _DecoderArgsMethods:
    """The behaviour of :class:`DecoderArgs` (its fields are generated)."""

    decoder: str
    preset: str

    def __post_init__(self) -> None:
        self.check_decoder_args()

    def check_decoder_args(self) -> None:
        """Check the decoder name, the preset and the range of every value set here (at parse
        time, before any work); the resolved config is validated as a whole by
        :meth:`resolve`."""
        if self.decoder not in DECODER_NAMES:
            raise ValueError(
                f"--decoder {self.decoder!r} is unknown; choose one of {', '.join(DECODER_NAMES)}."
            )
        if self.preset not in (OFFICIAL, MODEL):
            read_preset(self.preset)  # a preset file must exist and be valid
        check_options(self, DECODER_ARG_FIELDS, prefix="--")

    def decoder_args(self, **changes: Any) -> DecoderArgs:
        """These decoder options alone, as a plain :class:`DecoderArgs`, with ``changes``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(DecoderArgs)}
        return DecoderArgs(**{**values, **changes})

    def decoder_overrides(self) -> dict[str, Any]:
        """The DecoderConfig fields this config sets (None ones left out)."""
        return set_fields(self, DecoderArgs)

    def resolve(
        self,
        task: Any = None,
        defaults: dict[str, Any] | None = None,
        model: str | None = None,
        **fixed: Any,
    ) -> DecoderConfig:
        """The decoder, each source overriding the next: ``fixed`` values, this config's
        options, ``defaults``, the preset (``--preset``; ``model`` reads ``model``'s
        r2sft_decoding.json), ``task``'s canvas, the official values."""
        values = {}
        if task is not None:
            canvas = {"gen_length": task.gen_length, "block_length": task.block_length}
            values.update({k: v for k, v in canvas.items() if v is not None})
        values.update(resolve_preset(self.preset, model).values(self.decoder))
        values.update({k: v for k, v in (defaults or {}).items() if k in DECODER_ARG_FIELDS})
        explicit = self.decoder_overrides()
        values.update(explicit)
        values.update(fixed)
        config = decoder_config(self.decoder, **values)
        if "suffix_tail" in explicit and config.suffix_window is None:
            raise ValueError(
                "--suffix_tail only matters with suffix pruning; set --suffix_window too (or "
                "leave --suffix_tail out)."
            )
        return config


DecoderArgs = optional_twin(
    DecoderConfig,
    "DecoderArgs",
    bases=(_DecoderArgsMethods,),
    skip=RUN_FIELDS - {"temperature"},
    default_label="the preset's, officially",
    leading=[
        (
            "decoder",
            str,
            dataclasses.field(
                default="r2", metadata={"help": "decoder: " + " | ".join(DECODER_NAMES)}
            ),
        ),
        (
            "preset",
            str,
            dataclasses.field(
                default=MODEL,
                metadata={
                    "help": (
                        "decoder settings: model (the model folder's r2sft_decoding.json, "
                        "else official) | official (the R²-dLLM GSM8K values) | PATH (a preset "
                        "JSON file or a folder holding one). Options given here override it."
                    )
                },
            ),
        ),
    ],  # fmt: skip
    module=__name__,
)
DecoderArgs._argument_group_name = "decoding"  # its --help heading (r2sft.config)
DecoderArgs.__doc__ = """The decoder options of a config or command line: a decoder name, a
preset and every :class:`DecoderConfig` field as an optional override (None: from the task's
canvas or the preset). See the module docstring."""

DECODER_ARG_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(DecoderArgs) if f.name not in ("decoder", "preset")
)
