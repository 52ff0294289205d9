"""Decoder settings: the commit policy, the R² rules and their parameters.

Defaults are the official R²-dLLM GSM8K settings for LLaDA-8B-Instruct (gen 256, block 32,
threshold 0.9, window 3, tau_s 0.8, u_max 1, token cluster "confidence", K 3, tau_t 0.8,
temporal aggregation "last"), see docs/method.md section 2. The KV cache defaults to the dual
cache (for models that have one) refreshed after half a block of commits: the official runs
use the dual cache without refresh, which lost accuracy on the embedded model (README, "KV
cache").

:class:`DecoderArgs` is the one set of decoder options that every entry point (collect,
evaluate, training's tracking, the benches) exposes; :meth:`DecoderArgs.resolve` turns it
into a :class:`DecoderConfig` with one resolution order: explicit options, then the canvas
the task asks for, then the preset.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from r2sft.decoding.presets import MODEL, OFFICIAL, read_preset, resolve_preset

Policy = Literal["fixed", "threshold", "factor"]
TokenClusterMode = Literal["confidence", "mid", "random", "none"]
TemporalAgg = Literal["last", "ave", "max"]
FactorRule = Literal["paper", "official"]
CacheMode = Literal["auto", "none", "prefix", "dual"]
CACHE_MODES = ("auto", "none", "prefix", "dual")
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
        factor_rule: "paper" commits the largest top-n passing the test; "official" is the
            official code's variant, which also commits the last mask when only that one
            fails (so a block of two masks always commits both).
        r2: apply the R² rules after the baseline rule in every forward.
        window: confidence-cluster window w (0 disables the confidence cluster and, as in
            the official code, the token cluster).
        tau_s: spatial threshold: confidence-cluster window mean (>=) and token-cluster
            maximum (>).
        u_max: most already-committed tokens a qualifying window may hold.
        token_cluster_mode: which position of a token cluster commits ("none" disables).
        temporal_k: streak length K of temporal finalisation (0 disables it).
        tau_t: temporal threshold on the aggregated streak confidence (>=).
        temporal_agg: aggregation of the streak's confidences: last | ave | max.
        temperature: 0 decodes greedily; > 0 samples candidates with Gumbel noise drawn from
            the row's own seeded generator (reproducible, batch-independent).
        early_exit: stop a row once its answer is complete: when it has committed an
            end-of-text / end-of-turn token with every position before it committed, the
            rest of its canvas becomes end-of-text in that same forward. The response (cut
            at the first end token) is unchanged; the fill is recorded with its own rule.
        record_trace: keep the per-forward top-1 token and confidence of the active block.
        cache: KV cache of the forwards inside a block: "auto" ("dual" for models with
            r2sft's decoding cache, such as r2sft's LLaDA, else "none"), "none" (every
            forward runs the whole canvas), "prefix" (Fast-dLLM's prefix cache: the block
            and everything after it are recomputed against the cached prompt and earlier
            blocks) or "dual" (Fast-dLLM's dual cache: only the block is recomputed, against
            the cached prefix and suffix). The cache is filled by a full forward at each
            block's start (one NFE).
        cache_refresh: with a cache, also refill it by a full forward (one NFE) once this
            many of the block's tokens were committed since the last fill (None: half the
            block; 0: only at the block's start; 1: every forward, the same tokens as no
            cache). The cached keys and values outside the block go stale as the block
            fills in; a big commit (the block-opening forward often commits most of the
            block) is what costs accuracy.
    """

    gen_length: int = 256
    block_length: int = 32
    policy: Policy = "threshold"
    steps: int | None = None
    threshold: float = 0.9
    factor: float = 1.0
    factor_rule: FactorRule = "paper"
    r2: bool = False
    window: int = 3
    tau_s: float = 0.8
    u_max: int = 1
    token_cluster_mode: TokenClusterMode = "confidence"
    temporal_k: int = 3
    tau_t: float = 0.8
    temporal_agg: TemporalAgg = "last"
    temperature: float = 0.0
    early_exit: bool = False
    record_trace: bool = True
    cache: CacheMode = "auto"
    cache_refresh: int | None = None

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
        for name in ("threshold", "tau_s", "tau_t"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} is a confidence: choose a value in [0, 1].")
        if self.factor <= 0:
            raise ValueError(f"factor {self.factor} must be > 0.")
        if self.factor_rule not in ("paper", "official"):
            raise ValueError(f"factor_rule {self.factor_rule!r} must be paper or official.")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache {self.cache!r} must be one of {', '.join(CACHE_MODES)}.")
        if self.cache_refresh is not None and self.cache_refresh < 0:
            raise ValueError(f"cache_refresh {self.cache_refresh} must be >= 0.")

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


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass
class DecoderArgs:
    """The decoder options of a config or command line: a preset and field overrides.

    Every field but ``decoder`` defaults to None, meaning "not set here": the value then
    comes from the task's canvas (``Task.gen_length`` / ``block_length``) or the preset.
    Configs of collect, evaluate and training inherit these fields, so the flags are the
    same everywhere (``--decoder r2 --threshold 0.8 --tau_t 0.7``).
    """

    decoder: str = field(default="r2", metadata=_help("decoder: fixed | threshold | factor | "
                                                       "r2."))  # fmt: skip
    preset: str = field(
        default=MODEL,
        metadata=_help("decoder settings: model (the model folder's r2sft_decoding.json, else "
                       "official) | official (the R²-dLLM GSM8K values) | PATH (a preset JSON "
                       "file or a folder holding one). Options given here override it."),
    )  # fmt: skip
    gen_length: int | None = field(default=None, metadata=_help("canvas length (None: task's)."))
    block_length: int | None = field(default=None, metadata=_help("block (None: task's)."))
    policy: Policy | None = field(default=None, metadata=_help("fixed | threshold | factor."))
    steps: int | None = field(default=None, metadata=_help("fixed policy: total steps."))
    threshold: float | None = field(default=None, metadata=_help("threshold policy tau."))
    factor: float | None = field(default=None, metadata=_help("factor policy f."))
    factor_rule: FactorRule | None = field(
        default=None, metadata=_help("factor policy: paper | official (commits the last mask "
                                     "too when only it fails).")
    )  # fmt: skip
    r2: bool | None = field(default=None, metadata=_help("apply the R² rules."))
    window: int | None = field(default=None, metadata=_help("R² confidence-cluster window."))
    tau_s: float | None = field(default=None, metadata=_help("R² spatial threshold."))
    u_max: int | None = field(default=None, metadata=_help("R² committed tokens per window."))
    token_cluster_mode: TokenClusterMode | None = field(
        default=None, metadata=_help("R² token cluster: confidence | mid | random | none.")
    )
    temporal_k: int | None = field(default=None, metadata=_help("R² temporal streak K."))
    tau_t: float | None = field(default=None, metadata=_help("R² temporal threshold."))
    temporal_agg: TemporalAgg | None = field(
        default=None, metadata=_help("R² temporal aggregation: last | ave | max.")
    )
    temperature: float | None = field(
        default=None, metadata=_help("Gumbel sampling temperature (0: greedy).")
    )
    cache: CacheMode | None = field(
        default=None,
        metadata=_help(
            "KV cache inside a block: auto (dual where the model has one) | none | prefix | dual."
        ),
    )
    cache_refresh: int | None = field(
        default=None, metadata=_help("refill the KV cache once N block tokens were committed "
                                     "since the last fill (0: at block start only; default "
                                     "half the block).")
    )  # fmt: skip
    early_exit: bool | None = field(
        default=None,
        metadata=_help("stop a row once its answer is complete (None: the preset's; r2sft's "
                       "tuned presets turn it on, official leaves it off)."),
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.check_decoder_args()

    def check_decoder_args(self) -> None:
        """Range-check the values set here (at parse time, before any work)."""
        if self.decoder not in DECODER_NAMES:
            raise ValueError(
                f"--decoder {self.decoder!r} is unknown; choose one of {', '.join(DECODER_NAMES)}."
            )
        if self.preset not in (OFFICIAL, MODEL):
            read_preset(self.preset)  # a preset file must exist and be valid
        for name in ("threshold", "tau_s", "tau_t"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} {value} is a confidence: choose a value in [0, 1].")
        for name in ("gen_length", "block_length", "steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value} must be >= 1.")
        for name in ("window", "u_max", "temporal_k", "cache_refresh"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} {value} must be >= 0.")
        if self.factor is not None and self.factor <= 0:
            raise ValueError(f"--factor {self.factor} must be > 0.")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature} must be >= 0.")
        if self.factor_rule is not None and self.factor_rule not in ("paper", "official"):
            raise ValueError(f"--factor_rule {self.factor_rule!r} must be paper or official.")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"--cache {self.cache!r} must be one of {', '.join(CACHE_MODES)}.")

    def decoder_args(self, **changes: Any) -> DecoderArgs:
        """These decoder options alone, as a plain :class:`DecoderArgs`, with ``changes``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(DecoderArgs)}
        return DecoderArgs(**{**values, **changes})

    def decoder_overrides(self) -> dict[str, Any]:
        """The DecoderConfig fields this config sets (None ones left out)."""
        names = DECODER_ARG_FIELDS
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def resolve(
        self,
        task: Any = None,
        defaults: dict[str, Any] | None = None,
        model: str | None = None,
        **fixed: Any,
    ) -> DecoderConfig:
        """The decoder, each source overriding the next: ``fixed`` values, this config's
        options, ``defaults`` (e.g. the collect decoder a training run tracks with), the
        preset (``--preset``; ``model`` reads ``model``'s r2sft_decoding.json), ``task``'s
        canvas, the official values.
        """
        values = {}
        if task is not None:
            canvas = {"gen_length": task.gen_length, "block_length": task.block_length}
            values.update({k: v for k, v in canvas.items() if v is not None})
        values.update(resolve_preset(self.preset, model).values(self.decoder))
        values.update({k: v for k, v in (defaults or {}).items() if k in DECODER_ARG_FIELDS})
        values.update(self.decoder_overrides())
        values.update(fixed)
        return decoder_config(self.decoder, **values)


DECODER_ARG_FIELDS = tuple(
    f.name for f in dataclasses.fields(DecoderArgs) if f.name not in ("decoder", "preset")
)
