"""Where each prompt's K candidates come from: a mix of decoders with a share each.

Selection can only keep a fast correct decode if one is in the pool. Candidates sampled from
one decoder at one threshold rarely differ in forwards, so a collection can spread its K
candidates over several decoders: the model's preset, lower thresholds, looser R² values,
other temperatures. A mix is a short table of entries, in a config::

    decoder_mix:
      - "0.25: r2 temperature=0"          # share: decoder, then any decoder option
      - "0.25: r2"                        # the preset's r2, at the run's temperature
      - "0.25: threshold threshold=0.6"
      - "0.25: r2 threshold=0.7 tau_s=0.3 tau_t=0.3 preset=official"

The shares split the K candidates of every prompt (largest remainders, in table order), so
every prompt gets the same number from each entry. Pure functions: parsing and allocation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from r2sft.decoding import DECODER_NAMES, DecoderConfig

PRESET_KEY = "preset"


@dataclass(frozen=True)
class MixEntry:
    """One row of a decoder mix: its share of the candidates, decoder name and options."""

    share: float
    decoder: str | None  # None: the run's --decoder
    options: dict[str, Any] = field(default_factory=dict)  # DecoderConfig fields
    preset: str | None = None  # None: the run's --preset
    label: str = ""


def _option_types() -> dict[str, Any]:
    hints = typing.get_type_hints(DecoderConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(DecoderConfig)}


def _coerce(name: str, text: str, annotation: Any) -> Any:
    """``text`` as a value of the DecoderConfig field ``name``."""
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        if text.lower() == "none":
            return None
        base = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(base) is typing.Literal:
        if text not in typing.get_args(base):
            raise ValueError(f"{name}={text}: choose one of {typing.get_args(base)}")
        return text
    if base is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{name}={text}: write true or false")
        return text.lower() == "true"
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise ValueError(f"{name}={text}: expected {base.__name__}") from None
    return text


def parse_mix_entry(text: str) -> MixEntry:
    """``"SHARE: DECODER key=value ..."`` -> :class:`MixEntry` (a clear error otherwise)."""
    usage = 'write "SHARE: DECODER key=value ...", e.g. "0.5: threshold threshold=0.7"'
    share_text, colon, rest = str(text).partition(":")
    words = rest.split()
    if not colon or not words:
        raise ValueError(f"decoder_mix entry {text!r}: {usage}.")
    try:
        share = float(share_text)
    except ValueError:
        raise ValueError(f"decoder_mix entry {text!r}: the share {share_text!r} is no number; "
                         f"{usage}.") from None  # fmt: skip
    if not 0 < share <= 1:
        raise ValueError(f"decoder_mix entry {text!r}: the share must be in (0, 1].")
    decoder, *assignments = words
    if decoder not in DECODER_NAMES:
        raise ValueError(
            f"decoder_mix entry {text!r}: unknown decoder {decoder!r}; choose one of "
            f"{', '.join(DECODER_NAMES)}."
        )
    types = _option_types()
    options: dict[str, Any] = {}
    preset = None
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not value:
            raise ValueError(f"decoder_mix entry {text!r}: {assignment!r} is not key=value.")
        if name == PRESET_KEY:
            preset = value
        elif name in types and name != "record_trace":
            try:
                options[name] = _coerce(name, value, types[name])
            except ValueError as error:
                raise ValueError(f"decoder_mix entry {text!r}: {error}.") from None
        else:
            valid = sorted(set(types) - {"record_trace"} | {PRESET_KEY})
            raise ValueError(
                f"decoder_mix entry {text!r}: unknown option {name!r}; valid: {valid}."
            )
    return MixEntry(share, decoder, options, preset, " ".join(words))


def allocate(shares: list[float], num_candidates: int) -> list[int]:
    """How many of ``num_candidates`` each share gets: floors of ``share * K``, the rest to
    the largest remainders (earlier entries first on ties). Shares must sum to 1."""
    if abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"decoder_mix shares sum to {sum(shares):g}; they must sum to 1.")
    exact = [share * num_candidates for share in shares]
    counts = [int(value + 1e-9) for value in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in order[: num_candidates - sum(counts)]:
        counts[index] += 1
    return counts


def default_mix(greedy_first: bool, num_candidates: int) -> list[MixEntry]:
    """The mix without a ``decoder_mix``: the run's decoder, candidate 0 greedy when
    ``greedy_first``, the others sampled at the run's temperature."""
    if not greedy_first:
        return [MixEntry(1.0, None, label="sampled")]
    greedy = MixEntry(1 / num_candidates, None, {"temperature": 0.0}, label="greedy")
    if num_candidates == 1:
        return [dataclasses.replace(greedy, share=1.0)]
    return [greedy, MixEntry(1 - 1 / num_candidates, None, label="sampled")]
