"""Batched dLLM decoding: commit rules, forward strategies, the sampler, trajectories and their
redundancy, and the decoder options every entry point shares."""

from r2sft.decoding.args import DECODER_ARG_FIELDS, DecoderArgs
from r2sft.decoding.config import DECODER_NAMES, DecoderConfig, decoder_config
from r2sft.decoding.redundancy import Redundancy, RedundancyConfig, measure_redundancy
from r2sft.decoding.rules import CommitRule, commit_step
from r2sft.decoding.sampler import generate
from r2sft.decoding.trace import DecodeResult, Trace

__all__ = [
    "DECODER_ARG_FIELDS",
    "DECODER_NAMES",
    "CommitRule",
    "DecodeResult",
    "DecoderArgs",
    "DecoderConfig",
    "Redundancy",
    "RedundancyConfig",
    "Trace",
    "commit_step",
    "decoder_config",
    "generate",
    "measure_redundancy",
]
