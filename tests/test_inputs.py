"""Bad input is a clear error before any work; runs that would mix inputs are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datasets import Dataset

from r2sft.collect.pipeline import model_fingerprint, prompt_hashes
from r2sft.collect.shards import IncompatibleRunError, ShardStore
from r2sft.config import parse_config, run_main
from r2sft.decoding import DecoderArgs, DecoderConfig
from r2sft.evaluate import EvaluateArgs
from r2sft.scoring import InvalidPromptError, prepare_prompts
from r2sft.tasks import Example, TaskArgs, get_task
from r2sft.tasks.files import find_split_file
from r2sft.training.config import TrainConfig
from r2sft.training.data import UnselectedDataError, load_trajectories
from r2sft.training.run import UsedOutputDirError, check_output_dir, latest_checkpoint

# ----------------------------------------------------------------------------- data files


def test_a_missing_split_is_an_error_not_another_file(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    assert find_split_file(tmp_path, "train") == tmp_path / "train.jsonl"
    with pytest.raises(FileNotFoundError, match=r"no test.jsonl.*found \['train.jsonl'\]"):
        find_split_file(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no test.jsonl"):
        get_task("gsm8k", path=tmp_path).load("test")


def test_unknown_task_option_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown task option\(s\) \['pth'\].*'path'"):
        get_task("gsm8k", pth="x")
    with pytest.raises(ValueError, match="sandbox limits must be positive"):
        TaskArgs(sandbox_timeout_s=0)


# ----------------------------------------------------------------------------- option ranges


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--threshold", "1.5"], r"--threshold 1.5 is a confidence"),
        (["--tau_t", "-0.1"], r"--tau_t -0.1 is a confidence"),
        (["--gen_length", "0"], r"--gen_length 0 must be >= 1"),
        (["--decoder", "fast"], r"--decoder 'fast' is unknown"),
        (["--limit", "-1"], r"--limit -1 must be >= 1"),
        (["--limit", "0"], r"--limit 0 must be >= 1"),
        (["--batch_size", "0"], r"--batch_size 0 must be >= 1"),
    ],
)
def test_option_values_are_range_checked_at_parse_time(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config(EvaluateArgs, args=flags)


def test_decoder_config_range_checks() -> None:
    with pytest.raises(ValueError, match="threshold 1.2 is a confidence"):
        DecoderConfig(threshold=1.2)
    with pytest.raises(ValueError, match="factor 0 must be > 0"):
        DecoderConfig(factor=0)


def test_decoder_resolution_order_flag_then_defaults_then_task_then_preset() -> None:
    class Canvas:
        gen_length, block_length = 64, 16

    assert DecoderArgs().resolve(Canvas).gen_length == 64  # the task's canvas
    assert DecoderArgs().resolve(None).gen_length == 256  # the preset's
    assert DecoderArgs().resolve(Canvas, defaults={"gen_length": 32}).gen_length == 32
    args = DecoderArgs(gen_length=48, decoder="threshold")
    decoder = args.resolve(Canvas, defaults={"gen_length": 32})
    assert (decoder.gen_length, decoder.block_length, decoder.r2) == (48, 16, False)


def test_entry_scripts_print_one_error_line_or_the_traceback_with_debug(capsys) -> None:
    def failing(argv: list[str]) -> None:
        raise FileNotFoundError("data file x.jsonl does not exist; check --data_path.")

    with pytest.raises(SystemExit) as stop:
        run_main(failing, ["--limit", "2"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: data file x.jsonl does not exist") and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        run_main(failing, ["--debug"])


# ----------------------------------------------------------------------------- prompts


class _Tokenizer:
    """Whitespace tokeniser with a trivial chat template (enough for prepare_prompts)."""

    chat_template = "{{ messages[-1].content }}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return messages[-1]["content"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def test_prompt_plus_canvas_beyond_the_model_positions_is_refused_before_decoding() -> None:
    task = get_task("gsm8k")
    examples = [Example("a", "one two three", "3"), Example("b", "  ", "1")]
    # The default gsm8k canvas of 256 fills a 256-position model: no room for any prompt.
    with pytest.raises(InvalidPromptError, match="leaves no room for a prompt"):
        prepare_prompts(task, examples, _Tokenizer(), gen_length=256, max_length=256)
    with pytest.raises(InvalidPromptError, match="b: empty prompt"):
        prepare_prompts(task, examples, _Tokenizer(), gen_length=64, max_length=256)
    items, invalid = prepare_prompts(task, examples, _Tokenizer(), 64, 256, skip_invalid=True)
    assert [item.example.id for item in items] == ["a"] and invalid[0]["prompt_id"] == "b"


# ----------------------------------------------------------------------------- collect resume


def test_collect_resume_refuses_changed_data_or_weights(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    examples = [Example("p-0", "What is 2 + 2?", "4"), Example("p-1", "What is 3 + 3?", "6")]
    store = ShardStore(tmp_path / "out")
    store.prepare({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(examples))
    # Same inputs, more prompts: resumable.
    more = [*examples, Example("p-2", "What is 1 + 1?", "2")]
    assert store.check_compatible({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(more))
    # The data file changed under the same ids.
    edited = [Example("p-0", "What is 2 + 5?", "7"), examples[1]]
    with pytest.raises(IncompatibleRunError, match=r"the data: 1 prompt\(s\) changed.*p-0"):
        store.check_compatible({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(edited))
    # The weights were replaced in place.
    (model / "model.safetensors").write_bytes(b"new weights!")
    with pytest.raises(IncompatibleRunError, match="model weights"):
        store.check_compatible({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(examples))


# ----------------------------------------------------------------------------- train inputs


def _trajectories(folder: Path, correct: list[bool], ids: list[str]) -> Path:
    rows = [
        {"prompt_id": prompt_id, "prompt_ids": [1, 2], "response_ids": [3, 4], "step_map": [0, 1],
         "correct": ok}
        for prompt_id, ok in zip(ids, correct, strict=True)
    ]  # fmt: skip
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def test_train_refuses_data_that_is_not_a_selected_set(tmp_path: Path) -> None:
    candidates = _trajectories(tmp_path / "candidates", [True, False], ["a", "b"])
    with pytest.raises(UnselectedDataError, match="1 of 2 rows are incorrect"):
        load_trajectories(candidates)
    assert len(load_trajectories(candidates, allow_unselected=True)) == 2
    repeated = _trajectories(tmp_path / "repeated", [True, True], ["a", "a"])
    with pytest.raises(UnselectedDataError, match="several rows"):
        load_trajectories(repeated)
    assert len(load_trajectories(_trajectories(tmp_path / "ok", [True], ["a"]))) == 1


def _train_config(output_dir: Path, **values) -> TrainConfig:
    return TrainConfig(output_dir=str(output_dir), report_to="none", **values)


def test_a_used_output_folder_needs_resume_or_overwrite(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UsedOutputDirError, match=r"holds another run .*--overwrite_output_dir"):
        check_output_dir(_train_config(tmp_path), resuming=False)
    check_output_dir(_train_config(tmp_path, overwrite_output_dir=True), resuming=False)
    assert not (tmp_path / "checkpoint-4").exists() and not (tmp_path / "metrics.jsonl").exists()
    check_output_dir(_train_config(tmp_path), resuming=False)  # now unused


def test_resume_with_changed_options_is_refused(tmp_path: Path) -> None:
    from r2sft.training.config import resume_fingerprint
    from r2sft.training.run import CONFIG_FILE

    first = _train_config(tmp_path, learning_rate=1e-4, objective="trajectory")
    (tmp_path / CONFIG_FILE).write_text(
        json.dumps({"resume_fingerprint": resume_fingerprint(first)})
    )
    check_output_dir(_train_config(tmp_path, max_steps=9000, eval_limit=3), resuming=True)
    changed = _train_config(tmp_path, learning_rate=3e-4, objective="llada")
    with pytest.raises(UsedOutputDirError, match=r"learning_rate: 0.0001 -> 0.0003.*objective"):
        check_output_dir(changed, resuming=True)


def test_latest_skips_incomplete_checkpoints(tmp_path: Path) -> None:
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
            (folder / "model.safetensors").write_bytes(b"w")
        else:  # killed during the save: weights written, no trainer state
            (folder / "model.safetensors").write_bytes(b"w")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_push_to_hub_needs_a_repo_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        _train_config(tmp_path, push_to_hub=True)
    config = _train_config(tmp_path, push_to_hub=True, hub_model_id="me/model")
    assert config.trainer_arguments().push_to_hub is False and config.push_to_hub


def test_default_collect_output_is_train_input_from_any_directory(tmp_path: Path) -> None:
    from r2sft.collect import CollectConfig

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert Path(CollectConfig().output_dir) == Path(TrainConfig(report_to="none").data_dir)
        assert Path(CollectConfig().output_dir).is_absolute()
    finally:
        os.chdir(cwd)
