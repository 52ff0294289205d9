from dataclasses import dataclass, field
from typing import Literal

import pytest

from r2sft.config import ConfigError, parse_config


@dataclass
class Demo:
    output_dir: str = "out"
    batch_size: int = 8
    threshold: float = 0.9
    decoder: Literal["fixed", "threshold", "r2"] = "r2"
    push: bool = False
    limit: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None


@dataclass
class Other:
    steps: int = 3


def test_defaults_yaml_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("batch_size: 4\nthreshold: 1\ndecoder: fixed\n")
    cfg = parse_config(Demo, args=["--config", str(cfg_file), "--batch_size", "2", "--push"])
    assert (cfg.batch_size, cfg.threshold, cfg.decoder, cfg.push) == (2, 1, "fixed", True)
    assert parse_config(Demo, args=[]).batch_size == 8


def test_multiple_dataclasses_share_one_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("batch_size: 4\nsteps: 7\n")
    demo, other = parse_config(Demo, Other, args=["--config", str(cfg_file)])
    assert (demo.batch_size, other.steps) == (4, 7)


def test_unknown_yaml_key_names_key_file_and_suggestion(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'batch_sise'.*'batch_size'"):
        parse_config(Demo, args=["--config", str(cfg_file)])


def test_wrong_yaml_type_is_reported(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("batch_size: many\n")
    with pytest.raises(ConfigError, match="batch_size"):
        parse_config(Demo, args=["--config", str(cfg_file)])
    # An optional field takes None or its type, not anything (argparse would then report the
    # value without naming the YAML file).
    cfg_file.write_text("limit: abc\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: key 'limit' has value 'abc'"):
        parse_config(Demo, args=["--config", str(cfg_file)])
    cfg_file.write_text("limit: null\n")
    assert parse_config(Demo, args=["--config", str(cfg_file)]).limit is None


def test_wrong_type_of_an_optional_field_is_reported(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("limit: all\n")
    with pytest.raises(ConfigError, match="'limit' has value 'all'"):
        parse_config(Demo, args=["--config", str(cfg_file)])


def test_unknown_flag_and_missing_file():
    with pytest.raises(ConfigError, match="--batch_sze"):
        parse_config(Demo, args=["--batch_sze", "3"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(Demo, args=["--config", "/nonexistent.yaml"])
