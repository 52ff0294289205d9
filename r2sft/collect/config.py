"""Settings of a collection run (``collect.py``): what to decode, how many candidates, where.

Every field is a ``--flag`` of ``collect.py`` and a key of its ``--config`` YAML (see
:func:`r2sft.config.parse_config`). Decoder fields left at None take the preset's value,
then the task's canvas, then the official values (:meth:`r2sft.decoding.DecoderArgs.resolve`);
scoring fields left at None take :class:`r2sft.decoding.RedundancyConfig`'s defaults. The
defaults run on the embedded model and task, offline, in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from r2sft.collect.mix import MixEntry, allocate, default_mix, parse_mix_entry
from r2sft.collect.selection import SELECTION_POLICIES, get_policy, policy_help
from r2sft.collect.shards import RESOLVED_DECODERS
from r2sft.config import option
from r2sft.decoding import DecoderArgs, DecoderConfig, RedundancyConfig
from r2sft.decoding.redundancy import ScoreArgs
from r2sft.paths import DEFAULT_COLLECT_DIR, EMBEDDED_MODEL_DIR
from r2sft.tasks import TaskArgs, task_class

# Fields that change how the run goes, not what it produces: they may differ between a run
# and its resumption (everything else must match, or the candidates would mix settings).
RUNTIME_FIELDS = frozenset(
    {
        "num_prompts",
        "batch_size",
        "prompts_per_shard",
        "output_dir",
        "skip_invalid",
        "push_to_hub",
        "hub_private",
        "scoring_workers",
        "dist_timeout_s",
        "selection",  # applied at the merge: re-running merges again with the new policy
    }
)


def _help(text: str, group: str | None = None) -> dict[str, Any]:
    return option(text, group)


@dataclass(frozen=True)
class CollectPlan:
    """What a collection decodes, resolved once from its :class:`CollectConfig` (presets
    read, decoder mix allocated) and handed to every shard and to the merge.

    Attributes:
        base: the run's greedy decoder (the summary's ``decoder``, the canvas every
            candidate shares).
        candidates: (mix label, decoder) of candidates k = 0 .. K-1, the same for every prompt.
        redundancy: the settings of the R_s / R_t measurement.
    """

    base: DecoderConfig
    candidates: tuple[tuple[str, DecoderConfig], ...]
    redundancy: RedundancyConfig

    def labels(self) -> dict[str, str]:
        """Mix label of each distinct decoder, keyed by its JSON (the shards' ``decoder``)."""
        return {decoder.to_json(): label for label, decoder in self.candidates}

    def decoders(self) -> dict[str, dict[str, Any]]:
        """Settings of each mix entry's decoder, by label (the summary's ``decoders``)."""
        return {label: json.loads(decoder.to_json()) for label, decoder in self.candidates}


@dataclass
class CollectConfig(TaskArgs, DecoderArgs, ScoreArgs):
    """One collection run: candidates per prompt, scored and selected by lowest R_total.

    The task fields (``task``, ``data_path``, ``skip_invalid``, sandbox limits) and the
    decoder fields (``decoder`` and its overrides) are those of every entry point.
    """

    _argument_group_name = "model and data"  # --help heading of fields without a group

    # --- data and model
    model: str = field(
        default=str(EMBEDDED_MODEL_DIR), metadata=_help("model folder or Hub id (a dLLM).")
    )
    split: str = field(default="train", metadata=_help("split of the task to collect on."))
    num_prompts: int | None = field(
        default=None, metadata=_help("first N prompts of the split (None: all).")
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata=_help("longest allowed prompt (None: model's max length minus gen_length)."),
    )
    dtype: str = field(default="auto", metadata=_help("model dtype: auto, bfloat16, float32."))
    # --- candidates
    num_candidates: int = field(
        default=4, metadata=_help("candidates K per prompt.", "candidates and selection")
    )
    seed: int = field(
        default=0,
        metadata=_help(
            "base seed; candidate seeds derive from (seed, prompt, k).", "candidates and selection"
        ),
    )
    temperature: float = field(
        default=0.5,
        metadata=_help(
            "Gumbel-noise temperature of the sampled candidates.", "candidates and selection"
        ),
    )
    greedy_first: bool = field(
        default=True,
        metadata=_help(
            "without decoder_mix: decode candidate 0 greedily (temperature 0).",
            "candidates and selection",
        ),
    )
    decoder_mix: list[str] | None = field(
        default=None,
        metadata=_help(
            'decoders of the K candidates, each "SHARE: DECODER key=value ...", e.g. "0.5: r2" '
            '"0.5: threshold threshold=0.6 temperature=0.7"; shares sum to 1 (None: the '
            "run's decoder, greedy_first and temperature).",
            "candidates and selection",
        ),
    )
    selection: str = field(
        default="r_total",
        metadata=option(
            f"which correct candidate a prompt keeps: {policy_help()}. r_total is the "
            "paper's; a resumed run may change it.",
            "candidates and selection",
            choices=SELECTION_POLICIES,
        ),
    )
    # --- run
    output_dir: str = field(
        default=str(DEFAULT_COLLECT_DIR),
        metadata=_help("where shards, datasets and summary go (default: outputs/collect of "
                       "the checkout, whatever the working directory).", "run and output"),
    )  # fmt: skip
    batch_size: int = field(
        default=32, metadata=_help("sequences decoded per forward batch.", "run and output")
    )
    prompts_per_shard: int | None = field(
        default=None,
        metadata=_help(
            "prompts per shard file / resume unit (None: batch_size).", "run and output"
        ),
    )
    push_to_hub: str | None = field(
        default=None,
        metadata=_help(
            "Hub dataset repo for the selected set (token: HF_TOKEN).", "run and output"
        ),
    )
    hub_private: bool = field(
        default=False, metadata=_help("create the Hub repo private.", "run and output")
    )
    dist_timeout_s: int = field(
        default=7200,
        metadata=_help("how long processes wait for each other at barriers.", "run and output"),
    )

    def __post_init__(self) -> None:
        self.check_task_args()
        self.check_decoder_args()
        self.check_score_args()
        checks = {
            "num_candidates": self.num_candidates >= 1,
            "batch_size": self.batch_size >= 1,
            "num_prompts": self.num_prompts is None or self.num_prompts >= 1,
            "prompts_per_shard": self.prompts_per_shard is None or self.prompts_per_shard >= 1,
            "max_prompt_tokens": self.max_prompt_tokens is None or self.max_prompt_tokens >= 1,
            "temperature": self.temperature >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"collect config: {key}={getattr(self, key)!r} is out of range "
                    "(counts >= 1, temperature >= 0)."
                )
        get_policy(self.selection)  # a clear error for an unknown policy
        self.plan()  # resolves the decoders: a clear error for bad settings now, not mid-run

    def plan(self) -> CollectPlan:
        """The run's decoders and scoring settings, resolved once (at parse time) and reused
        while this config is unchanged, so a process reads the decoder preset (for a Hub
        model, a Hub download) once, not once per shard."""
        key = self.to_json()
        cached = self.__dict__.get("_plan")
        if cached is None or cached[0] != key:
            self._plan = (key, self._resolve_plan())
        return self._plan[1]

    def _resolve_plan(self) -> CollectPlan:
        redundancy = self._resolve_redundancy()
        base = self.resolve(
            task_class(self.task), model=self.model, temperature=0.0, record_trace=True
        )
        return CollectPlan(base, tuple(self._resolve_candidates(base)), redundancy)

    def base_decoder(self) -> DecoderConfig:
        """The run's decoder for this task with this config's overrides, greedy, trace on
        (R_total needs it): what the summary reports and the canvas every candidate shares."""
        return self.plan().base

    def mix(self) -> list[MixEntry]:
        """The decoder mix: ``decoder_mix`` parsed, or the default greedy + sampled one."""
        if not self.decoder_mix:
            return default_mix(self.greedy_first, self.num_candidates)
        return [parse_mix_entry(text) for text in self.decoder_mix]

    def candidate_decoders(self) -> list[tuple[str, DecoderConfig]]:
        """(mix label, decoder) of candidates k = 0 .. K-1, the same for every prompt."""
        return list(self.plan().candidates)

    def _resolve_candidates(self, base: DecoderConfig) -> list[tuple[str, DecoderConfig]]:
        entries = self.mix()
        counts = allocate([entry.share for entry in entries], self.num_candidates)
        task = task_class(self.task)
        decoders = []
        for entry, count in zip(entries, counts, strict=True):
            if count == 0:
                raise ValueError(
                    f"decoder_mix entry {entry.label!r} gets no candidate of "
                    f"num_candidates={self.num_candidates}; raise its share or num_candidates."
                )
            settings = self.decoder_args(
                decoder=entry.decoder or self.decoder, preset=entry.preset or self.preset
            )
            options = {"temperature": self.temperature, **entry.options}
            decoder = settings.resolve(task, model=self.model, record_trace=True, **options)
            if decoder.temperature == 0 and count > 1:
                raise ValueError(
                    f"decoder_mix entry {entry.label!r} decodes greedily (temperature 0) but "
                    f"gets {count} candidates per prompt, which would be identical; give it "
                    "one candidate's share or a temperature."
                )
            if (decoder.gen_length, decoder.block_length) != (base.gen_length, base.block_length):
                raise ValueError(
                    f"decoder_mix entry {entry.label!r} decodes a canvas of gen_length "
                    f"{decoder.gen_length}, block_length {decoder.block_length}; every "
                    f"candidate needs the run's ({base.gen_length}, {base.block_length})."
                )
            decoders += [(entry.label, decoder)] * count
        return decoders

    def redundancy_config(self) -> RedundancyConfig:
        """The redundancy measurement's settings (RedundancyConfig defaults where unset)."""
        return self.plan().redundancy

    def _resolve_redundancy(self) -> RedundancyConfig:
        return self.resolve_redundancy()

    def shard_prompts(self) -> int:
        """Prompts per shard file. The default, batch_size, fills whole batches in both decoder
        groups of a shard (the greedy candidates: one per prompt; the sampled: K - 1)."""
        return self.prompts_per_shard if self.prompts_per_shard is not None else self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the candidates; a resumed run must match them. Besides
        the options, the decoders they resolve to: a preset file edited between two runs
        (a re-run ``r2sft.tune`` into the folder ``--preset`` names) changes the candidates
        under the same options."""
        settings = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return {**settings, RESOLVED_DECODERS: self.plan().decoders()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
