"""Every entry point's --help: what it does and how to launch it first, r2sft's options
grouped before the inherited Trainer flags, booleans that say which values they take."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field

import pytest

from r2sft.config import GROUP_ORDER, field_group, option, parse_config
from r2sft.paths import REPO_ROOT

# (how it is loaded, the launch command its --help must show)
ENTRY_POINTS = {
    "collect.py": "accelerate launch collect.py",
    "train.py": "accelerate launch train.py",
    "r2sft.evaluate": "python -m r2sft.evaluate",
    "r2sft.tune": "python -m r2sft.tune",
    "r2sft.report": "python -m r2sft.report",
    "r2sft.rounds": "python -m r2sft.rounds",
    "r2sft.threads": "python -m r2sft.threads",
    "bench/bench_decode.py": "python bench/bench_decode.py",
    "bench/bench_cache.py": "python bench/bench_cache.py",
    "bench/bench_shared_cpu.py": "python bench/bench_shared_cpu.py",
    "launch/pretrain_embedded.py": "python launch/pretrain_embedded.py",
}


def load_entry(name: str):
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = REPO_ROOT / name
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # bench scripts import their siblings
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def help_text(name: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stop:
        load_entry(name).main(["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_starts_with_what_it_does_and_the_launch_command(name, capsys):
    lines = help_text(name, capsys).splitlines()
    summary = lines[0]
    assert summary and not summary.startswith("usage") and summary.endswith(".")
    usage = next(line for line in lines[1:] if line.strip())
    assert usage.startswith(f"usage: {ENTRY_POINTS[name]} ")
    assert ".py" not in usage or not name.startswith("r2sft.")  # not 'evaluate.py'


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_booleans_say_their_values_and_no_switch_is_folded_in(name, capsys):
    text = help_text(name, capsys)
    lines = text.splitlines()
    # --no_X is never a line of its own (it used to repeat X's help, "show a progress bar").
    assert not any(line.startswith("  --no_") for line in lines)
    flowing = " ".join(text.split())  # help lines wrap anywhere
    booleans = flowing.count(" true|false ") + flowing.count(" [true|false] ")
    assert flowing.count("Takes true or false") == booleans


def test_train_help_shows_r2sft_options_first_and_trainer_flags_last(capsys):
    text = help_text("train.py", capsys)
    lines = text.splitlines()
    first = "\n".join(lines[:60])
    for flag in ("--model", "--data_dir", "--task", "--config", "--objective"):
        assert f"  {flag} " in first, flag
    headings = [line[:-1] for line in lines if line and not line[0].isspace() and line[-1] == ":"]
    inherited = "inherited from transformers TrainingArguments"
    assert headings[-1] == inherited
    assert [h for h in headings if h in GROUP_ORDER] == list(GROUP_ORDER)
    own = max(text.index(f"  {flag} ") for flag in ("--objective", "--lora", "--eval_limit",
                                                     "--learning_rate"))  # fmt: skip
    assert own < text.index(inherited) < text.index("  --deepspeed ")
    # A Trainer field r2sft redeclares with a new default keeps the Trainer's help.
    assert "The initial learning rate" in text


def test_progress_switch_reads_right(capsys):
    text = help_text("r2sft.evaluate", capsys)
    line = text[text.index("  --progress ") :].split("\n  --")[0]
    assert "[true|false]" in line and "--no_progress means false" in line
    assert "(default: true)" in line


@dataclass
class Base:
    """A shared options class, like TaskArgs."""

    _argument_group_name = "model and data"

    task: str = field(default="arith", metadata=option("task name."))


@dataclass
class Demo(Base):
    _argument_group_name = "training"

    model: str = field(default="m", metadata=option("model folder.", "model and data"))
    steps: int = field(default=3, metadata=option("optimizer steps."))
    track: bool = field(default=True, metadata=option("decode at every save.", "tracking"))
    quiet: bool | None = field(default=None, metadata=option("say less (None: the default)."))


def test_groups_come_from_field_metadata_then_the_declaring_class():
    from r2sft.decoding import DecoderArgs
    from r2sft.training import TrainConfig

    fields = {f.name: f for f in Demo.__dataclass_fields__.values()}
    assert field_group(Demo, fields["task"]) == "model and data"  # declared by Base
    assert field_group(Demo, fields["model"]) == "model and data"  # its metadata
    assert field_group(Demo, fields["steps"]) == "training"
    assert field_group(Demo, fields["track"]) == "tracking"
    train_fields = TrainConfig.__dataclass_fields__
    assert field_group(TrainConfig, train_fields["deepspeed"]).startswith("inherited from")
    assert field_group(TrainConfig, train_fields["learning_rate"]) == "training"
    for name in DecoderArgs.__dataclass_fields__:
        assert field_group(TrainConfig, train_fields[name]) == "decoding"


def test_help_of_a_demo_command(capsys):
    with pytest.raises(SystemExit):
        parse_config(Demo, args=["--help"], command="python demo.py", summary="Run a demo.\nMore.")
    text = capsys.readouterr().out
    assert text.startswith("Run a demo.\n\nusage: python demo.py [--config FILE.yaml]")
    assert text.index("model and data:") < text.index("training:") < text.index("tracking:")
    assert "  --model TEXT " in text and "  --steps INT " in text
    assert "--track [true|false]" in text and "--no_track means false" in text
    assert "--quiet [true|false]" in text  # optional boolean: the bare flag means true too
    # The flags still parse, under either spelling, and the group key is not an argparse kwarg.
    demo = parse_config(Demo, args=["--no_track", "--steps", "5", "--quiet", "true"])
    assert (demo.track, demo.steps, demo.quiet) == (False, 5, True)
    assert parse_config(Demo, args=["--quiet", "--steps", "5"]).quiet is True
    assert parse_config(Demo, args=[]).quiet is None  # not set: the caller's default


def test_harness_help_names_r2sft_part_before_lm_evals(capsys):
    pytest.importorskip("lm_eval")
    from r2sft import harness

    with pytest.raises(SystemExit) as stop:
        harness.main(["--help"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Run lm-eval's benchmarks with r2sft's sampler")
    assert lines[2].startswith("usage: python -m r2sft.harness --model r2sft ")
    assert any("Language Model Evaluation Harness" in line for line in lines[8:])


def test_a_redeclared_field_keeps_its_base_group():
    @dataclass
    class Bench(Demo):
        steps: int = 7  # a new default, no metadata, in a class without a group name
        repeats: int = 3

    fields = Bench.__dataclass_fields__
    assert field_group(Bench, fields["steps"]) == "training"
    assert field_group(Bench, fields["track"]) == "tracking"
    assert field_group(Bench, fields["repeats"]) == "options"
