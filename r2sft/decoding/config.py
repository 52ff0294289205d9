"""Decoder settings: one dataclass, :class:`DecoderConfig`, assembled from option groups.

Every decoder option is declared once, by :func:`~r2sft.decoding.options.option` (default,
help, range check), in the group of what it belongs to:

- :class:`CanvasOptions` (here): the canvas, the policy, the R² switch, sampling, early exit;
- each commit rule's ``options`` (``r2sft/decoding/rules/``: ``steps``; ``threshold`` and
  ``threshold_alpha``; ``factor``, ``factor_rule``; ``window``, ``tau_s``, ``u_max``;
  ``token_cluster_mode``; ``temporal_k``, ``tau_t``, ``temporal_agg``);
- :class:`~r2sft.decoding.forwards.ForwardOptions`: the KV cache, its refresh, suffix pruning.

Defaults are the official R²-dLLM GSM8K settings for LLaDA-8B-Instruct (gen 256, block 32,
threshold 0.9, window 3, tau_s 0.8, u_max 1, token cluster "confidence", K 3, tau_t 0.8,
temporal aggregation "last"), see docs/method.md section 2. The command-line layer
(:class:`~r2sft.decoding.args.DecoderArgs`) is derived from these fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from r2sft.decoding.forwards import ForwardOptions
from r2sft.decoding.options import at_least, check_options, option
from r2sft.decoding.rules import POLICY_NAMES, RULES

Policy = Literal[POLICY_NAMES]  # type: ignore[valid-type]
R2 = "r2"
DECODER_NAMES: tuple[str, ...] = (*POLICY_NAMES, R2)
"""``--decoder`` names: a baseline policy alone, or ``r2`` (threshold, then the R² rules)."""


@dataclass
class CanvasOptions:
    gen_length: int = option(256, "generated canvas length (answer plus its end-of-text fill)",
                             check=at_least(1))  # fmt: skip
    block_length: int = option(
        32, "semi-autoregressive block: only the current block's positions commit",
        check=at_least(1),
    )  # fmt: skip
    policy: Policy = option(
        "threshold",
        "baseline rule of every forward: "
        + " | ".join(f"{rule.name} ({rule.description})" for rule in RULES if rule.policy),
    )
    r2: bool = option(
        False,
        "apply the R² rules after the policy in every forward: "
        + ", ".join(rule.name for rule in RULES if not rule.policy),
    )
    temperature: float = option(
        0.0,
        "0 decodes greedily; > 0 samples candidates with Gumbel noise from the row's own "
        "seeded generator (reproducible, batch-independent)",
        check=at_least(0),
    )
    early_exit: bool = option(
        False,
        "stop a row once its answer is complete (an end-of-text / end-of-turn token with every "
        "position before it committed): the rest of its canvas becomes end of text in that "
        "forward, recorded with its own rule",
    )
    record_trace: bool = option(
        True, "keep the per-forward top-1 token and confidence of the active block"
    )


OPTION_GROUPS: tuple[type, ...] = (
    CanvasOptions,
    *(rule.options for rule in RULES if rule.options is not None),
    ForwardOptions,
)
"""Every group of decoder options, in the order ``--help`` lists them."""


# A dataclass lists the fields of its bases last base first.
@dataclass
class DecoderConfig(*reversed(OPTION_GROUPS)):  # type: ignore[misc]
    """How a canvas of ``gen_length`` masks is filled: every field of :data:`OPTION_GROUPS`
    (``python -m r2sft.evaluate --help`` lists them with their help)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field and how to fix it."""
        check_options(self)
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length {self.gen_length} is not a multiple of block_length "
                f"{self.block_length}; choose block_length dividing gen_length."
            )
        if self.steps is not None and (self.steps > self.gen_length
                                       or self.steps % self.num_blocks):  # fmt: skip
            raise ValueError(
                f"steps {self.steps} must be in 1..gen_length ({self.gen_length}) and a "
                f"multiple of the number of blocks ({self.num_blocks})."
            )

    @property
    def refresh_tokens(self) -> int:
        """Block commits since the last cache fill that trigger a refill (0: never)."""
        if self.cache_refresh is None:
            return max(self.block_length // 2, 1)
        return self.cache_refresh

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        """Fixed policy: forwards per block (one token per step when steps is None)."""
        steps = self.gen_length if self.steps is None else self.steps
        return steps // self.num_blocks

    @property
    def name(self) -> str:
        """Short label: the policy, with "+r2" when the R² rules run."""
        return f"{self.policy}+r2" if self.r2 else self.policy

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


DECODER_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(DecoderConfig))


def decoder_config(name: str, **overrides: Any) -> DecoderConfig:
    """The decoder ``name`` (a policy alone, or ``r2``: threshold followed by the R² rules)
    with field overrides (None values are ignored)."""
    if name not in DECODER_NAMES:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODER_NAMES)}.")
    unknown = sorted(set(overrides) - DECODER_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown DecoderConfig field(s) {unknown}; valid: {sorted(DECODER_FIELDS)}."
        )
    named = {"policy": "threshold", "r2": True} if name == R2 else {"policy": name}
    values = {**named, **{k: v for k, v in overrides.items() if v is not None}}
    return DecoderConfig(**values)
