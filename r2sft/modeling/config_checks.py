"""Checks every r2sft model config runs before building a model: clear errors, naming the
config key, for official options the implementation does not provide or sizes that do not
fit together."""

from __future__ import annotations

from typing import Any


def reject_unsupported_options(family: str, options: dict[str, tuple[Any, Any]]) -> None:
    """``options`` maps a config key to (its value, the one supported value)."""
    for key, (value, supported) in options.items():
        if value != supported:
            raise ValueError(
                f"{family} config key {key!r}={value!r} is not supported by r2sft's {family} "
                f"(only {key}={supported!r}, as in the released {family} checkpoints)."
            )


def check_head_counts(
    family: str, width: tuple[str, int], heads: tuple[str, int], kv_heads: tuple[str, int]
) -> None:
    """Each argument is (config key, value): the hidden width splits into the query heads, and
    the query heads into groups of the key/value heads (GQA)."""
    (width_key, width_value), (heads_key, n_heads), (kv_key, n_kv_heads) = width, heads, kv_heads
    if width_value % n_heads != 0:
        raise ValueError(
            f"{family} config: {width_key}={width_value} is not divisible by {heads_key}={n_heads}."
        )
    if n_heads % n_kv_heads != 0:
        raise ValueError(
            f"{family} config: {heads_key}={n_heads} is not a multiple of {kv_key}={n_kv_heads}."
        )
