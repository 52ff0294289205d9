"""Batched dLLM decoding: commit rules, the R² sampler, trajectories and their redundancy."""

from r2sft.decoding.config import DECODER_NAMES, DecoderConfig, decoder_config
from r2sft.decoding.redundancy import Redundancy, RedundancyConfig, redundancy
from r2sft.decoding.rules import CommitRule
from r2sft.decoding.sampler import generate
from r2sft.decoding.trace import DecodeResult, Trace

__all__ = [
    "DECODER_NAMES",
    "CommitRule",
    "DecodeResult",
    "DecoderConfig",
    "Redundancy",
    "RedundancyConfig",
    "Trace",
    "decoder_config",
    "generate",
    "redundancy",
]
