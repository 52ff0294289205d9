"""Decoder settings: the commit policy, the R² rules and their parameters.

Defaults are the official R²-dLLM GSM8K settings for LLaDA-8B-Instruct (gen 256, block 32,
threshold 0.9, window 3, tau_s 0.8, u_max 1, token cluster "confidence", K 3, tau_t 0.8,
temporal aggregation "last"), see ../shared/method.md section 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

Policy = Literal["fixed", "threshold", "factor"]
TokenClusterMode = Literal["confidence", "mid", "random", "none"]
TemporalAgg = Literal["last", "ave", "max"]
DECODER_NAMES = ("fixed", "threshold", "factor", "r2")


@dataclass
class DecoderConfig:
    """How a canvas of ``gen_length`` masks is filled.

    Attributes:
        gen_length: generated canvas length (answer plus its end-of-text fill).
        block_length: semi-autoregressive block; only positions of the current block commit.
        policy: baseline commit rule of every forward: "fixed" (LLaDA: k most confident per
            step), "threshold" (Fast-dLLM: best one plus all with conf >= threshold) or
            "factor" (Fast-dLLM: largest top-n with (n + 1) * (1 - c_n) < factor).
        steps: fixed policy only: total steps over the canvas (None: gen_length, i.e. one
            token per step); must be a multiple of gen_length / block_length.
        threshold: confidence threshold tau of the threshold policy.
        factor: f of the factor policy.
        r2: apply the R² rules after the baseline rule in every forward.
        window: confidence-cluster window w (0 disables the confidence cluster).
        tau_s: spatial threshold: confidence-cluster window mean (>=) and token-cluster
            maximum (>).
        u_max: most already-committed tokens a qualifying window may hold.
        token_cluster_mode: which position of a token cluster commits ("none" disables).
        temporal_k: streak length K of temporal finalisation (0 disables it).
        tau_t: temporal threshold on the aggregated streak confidence (>=).
        temporal_agg: aggregation of the streak's confidences: last | ave | max.
        temperature: 0 decodes greedily; > 0 samples candidates with Gumbel noise drawn from
            the row's own seeded generator (reproducible, batch-independent).
        record_trace: keep the per-forward top-1 token and confidence of the active block.
    """

    gen_length: int = 256
    block_length: int = 32
    policy: Policy = "threshold"
    steps: int | None = None
    threshold: float = 0.9
    factor: float = 1.0
    r2: bool = False
    window: int = 3
    tau_s: float = 0.8
    u_max: int = 1
    token_cluster_mode: TokenClusterMode = "confidence"
    temporal_k: int = 3
    tau_t: float = 0.8
    temporal_agg: TemporalAgg = "last"
    temperature: float = 0.0
    record_trace: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field and how to fix it."""
        if self.gen_length <= 0 or self.block_length <= 0:
            raise ValueError(
                f"gen_length ({self.gen_length}) and block_length ({self.block_length}) "
                "must be positive."
            )
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length {self.gen_length} is not a multiple of block_length "
                f"{self.block_length}; choose block_length dividing gen_length."
            )
        if self.policy not in ("fixed", "threshold", "factor"):
            raise ValueError(f"policy {self.policy!r} must be fixed, threshold or factor.")
        if self.steps is not None:
            num_blocks = self.gen_length // self.block_length
            if not 0 < self.steps <= self.gen_length or self.steps % num_blocks:
                raise ValueError(
                    f"steps {self.steps} must be in 1..gen_length ({self.gen_length}) and a "
                    f"multiple of the number of blocks ({num_blocks})."
                )
        if self.token_cluster_mode not in ("confidence", "mid", "random", "none"):
            raise ValueError(
                f"token_cluster_mode {self.token_cluster_mode!r} must be confidence, mid, "
                "random or none."
            )
        if self.temporal_agg not in ("last", "ave", "max"):
            raise ValueError(f"temporal_agg {self.temporal_agg!r} must be last, ave or max.")
        if self.window < 0 or self.u_max < 0 or self.temporal_k < 0:
            raise ValueError("window, u_max and temporal_k must be >= 0.")
        if self.temperature < 0:
            raise ValueError(f"temperature {self.temperature} must be >= 0.")

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


def decoder_config(name: str, **overrides: Any) -> DecoderConfig:
    """A named preset with field overrides (None values are ignored).

    ``"fixed"``: LLaDA's one-token-per-step schedule; ``"threshold"`` / ``"factor"``:
    Fast-dLLM's parallel policies; ``"r2"``: threshold followed by the R² rules.
    """
    presets: dict[str, dict[str, Any]] = {
        "fixed": {"policy": "fixed"},
        "threshold": {"policy": "threshold"},
        "factor": {"policy": "factor"},
        "r2": {"policy": "threshold", "r2": True},
    }
    if name not in presets:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODER_NAMES)}.")
    fields = {field.name for field in dataclasses.fields(DecoderConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown DecoderConfig field(s) {unknown}; valid: {sorted(fields)}.")
    values = {**presets[name], **{k: v for k, v in overrides.items() if v is not None}}
    return DecoderConfig(**values)
