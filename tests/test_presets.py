"""Decoder presets: the settings a model ships, and how they combine with options."""

import json

import pytest

from r2sft.config import parse_config
from r2sft.decoding import DecoderArgs
from r2sft.decoding.presets import (
    PRESET_FILE,
    DecoderPreset,
    PresetError,
    read_preset,
    resolve_preset,
    write_preset,
)
from r2sft.evaluate import EvaluateArgs

TUNED = DecoderPreset(
    "tuned",
    decoders={
        "r2": {
            "gen_length": 64,
            "block_length": 16,
            "threshold": 0.8,
            "tau_s": 0.3,
            "tau_t": 0.3,
            "temporal_k": 2,
            "early_exit": True,
        },  # fmt: skip
        "threshold": {"threshold": 0.6, "early_exit": True},
    },
    tuned={"task": "arith", "split": "dev"},
)


class Canvas:
    gen_length, block_length = 32, 8


@pytest.fixture
def model_dir(tmp_path):
    write_preset(tmp_path, TUNED)
    return tmp_path


def test_model_preset_is_the_default_and_options_override_it(model_dir):
    decoder = DecoderArgs().resolve(Canvas, model=str(model_dir))
    assert (decoder.r2, decoder.threshold, decoder.tau_s, decoder.temporal_k) == (True, 0.8, 0.3, 2)
    assert (decoder.gen_length, decoder.block_length, decoder.early_exit) == (64, 16, True)
    # Values the preset leaves out come from the task's canvas, then the official values.
    threshold = DecoderArgs(decoder="threshold").resolve(Canvas, model=str(model_dir))
    assert (threshold.threshold, threshold.gen_length, threshold.tau_s) == (0.6, 32, 0.8)
    assert not threshold.r2
    # Options beat the preset; --early_exit false turns the preset's exit off.
    flagged = DecoderArgs(tau_s=0.5, early_exit=False).resolve(Canvas, model=str(model_dir))
    assert (flagged.tau_s, flagged.tau_t, flagged.early_exit) == (0.5, 0.3, False)


def test_none_turns_off_an_option_the_preset_sets(model_dir, tmp_path):
    """A preset with a window (as r2sft.tune writes one): ``none`` unsets it on the command
    line, in YAML and in code, where leaving the option out keeps the preset's."""
    pruned = DecoderPreset("pruned", decoders={"r2": {"suffix_window": 16, "steps": 8}})
    write_preset(model_dir, pruned)
    model = ["--model", str(model_dir)]
    kept = parse_config(EvaluateArgs, args=model).resolve(Canvas, model=str(model_dir))
    assert (kept.suffix_window, kept.steps) == (16, 8)
    flags = [*model, "--suffix_window", "none", "--steps", "None"]
    off = parse_config(EvaluateArgs, args=flags).resolve(Canvas, model=str(model_dir))
    assert (off.suffix_window, off.steps) == (None, None)
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {model_dir}\nsuffix_window: none\n")
    from_yaml = parse_config(EvaluateArgs, args=["--config", str(config)])
    assert from_yaml.resolve(Canvas, model=str(model_dir)).suffix_window is None
    assert DecoderArgs(suffix_window="none").resolve(Canvas, model=str(model_dir)).steps == 8
    # Only where None means something: a threshold has no "none".
    with pytest.raises(SystemExit):
        parse_config(EvaluateArgs, args=["--threshold", "none"])
    with pytest.raises(ValueError, match="threshold"):
        config.write_text("threshold: none\n")
        parse_config(EvaluateArgs, args=["--config", str(config)])


def test_official_preset_ignores_the_model_file(model_dir):
    decoder = DecoderArgs(preset="official").resolve(Canvas, model=str(model_dir))
    assert (decoder.threshold, decoder.tau_s, decoder.temporal_k) == (0.9, 0.8, 3)
    assert (decoder.gen_length, decoder.block_length, decoder.early_exit) == (32, 8, False)
    assert DecoderArgs(preset="official", early_exit=True).resolve(Canvas).early_exit


def test_a_model_without_a_preset_decodes_with_the_official_values(tmp_path):
    assert resolve_preset("model", tmp_path).name == "official"
    assert resolve_preset("model", None).name == "official"
    assert DecoderArgs().resolve(None, model=str(tmp_path)).tau_s == 0.8


def test_a_preset_file_or_folder_by_path(model_dir):
    by_folder = DecoderArgs(preset=str(model_dir)).resolve(None)
    by_file = DecoderArgs(preset=str(model_dir / PRESET_FILE)).resolve(None)
    assert by_folder == by_file and by_file.tau_s == 0.3
    assert read_preset(model_dir).tuned == {"task": "arith", "split": "dev"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": "r2sft-decoding/1", "decoders": {"greedy": {}}}, "unknown decoder 'greedy'"),
        ({"format": "r2sft-decoding/1", "decoders": {"r2": {"tau": 1}}}, r"unknown .*\['tau'\]"),
        ({"format": "r2sft-decoding/1", "decoders": {"r2": {"temperature": 1.0}}}, "run-only"),
        ({"format": "r2sft-decoding/1", "decoders": {"r2": {"tau_s": 3}}}, "tau_s 3 is a conf"),
        ({"decoders": {}}, "format"),
    ],
)
def test_a_bad_preset_file_is_an_error_naming_it(tmp_path, document, message):
    path = tmp_path / PRESET_FILE
    path.write_text(json.dumps(document))
    with pytest.raises(PresetError, match=message):
        read_preset(path)
    path.write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        read_preset(path)


def test_preset_option_is_checked_when_parsed(tmp_path, model_dir):
    with pytest.raises(PresetError, match="no decoder preset at"):
        parse_config(EvaluateArgs, args=["--preset", str(tmp_path / "missing.json")])
    args = parse_config(EvaluateArgs, args=["--preset", str(model_dir), "--early_exit", "false"])
    assert args.preset == str(model_dir) and args.early_exit is False


def test_round_trip_keeps_every_value(tmp_path):
    path = write_preset(tmp_path, TUNED)
    again = read_preset(path)
    assert again.decoders == TUNED.decoders and again.tuned == TUNED.tuned
