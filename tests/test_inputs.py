"""Bad input is a clear error before any work; runs that would mix inputs are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

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


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"question": "q \xff one", "answer": "#### 5"}', r"not UTF-8 text \(byte 0xff"),
        (b'{"question": "q", "answer": 5}', r"field 'answer' must be a string, got int"),
        (
            b'{"question": ["q"], "answer": "#### 5"}',
            r"field 'question' must be a string, got list",
        ),
        (b'{"question": "  ", "answer": "#### 5"}', r"missing or empty field\(s\) \['question'\]"),
        (b'{"question": "q", "answer": "#### 5"', r"malformed JSON"),
        (b"[1, 2]", r"expected a JSON object, got list"),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_bad_data_line_is_named_by_file_and_line(
    tmp_path: Path, line: bytes, problem: str, suffix: str
) -> None:
    import gzip

    content = b'{"question": "fine", "answer": "#### 1"}\n' + line + b"\n"
    path = tmp_path / f"test{suffix}"
    path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    with pytest.raises(ValueError, match=rf"test{suffix}:2: {problem}.*--skip_invalid"):
        get_task("gsm8k", path=tmp_path).load("test")
    task = get_task("gsm8k", path=tmp_path, skip_invalid=True)
    assert [example.question for example in task.load("test")] == ["fine"]
    assert len(task.skipped) == 1 and f"test{suffix}:2:" in task.skipped[0]


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
        (["--device", "tpu9"], r"--device 'tpu9' is not a torch device"),
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


@pytest.mark.parametrize("fails", [False, True])
def test_entry_scripts_end_the_process_group_they_ran_in(tmp_path, fails) -> None:
    import torch.distributed as dist

    def main(argv: list[str]) -> str:
        assert dist.is_initialized()
        if fails:
            raise RuntimeError("a failing run ends its process group too")
        return "done"

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        if fails:
            with pytest.raises(SystemExit):
                run_main(main, [])
        else:
            assert run_main(main, []) == "done"
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    run_main(lambda argv: None, [])  # no process group: nothing to end


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
    with pytest.raises(IncompatibleRunError, match=r"model.safetensors size 7 -> 12 bytes\)"):
        store.check_compatible({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(examples))
    (model / "model.safetensors").write_bytes(b"weights")  # same size, rewritten
    os.utime(model / "model.safetensors", ns=(1, 1))
    with pytest.raises(IncompatibleRunError, match=r"model.safetensors rewritten"):
        store.check_compatible({"seed": 0}, model_fingerprint(str(model)), prompt_hashes(examples))


def test_collect_resume_refuses_hub_model_updated_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An offline Hub cache holding two commits of one repository; refs/main says which is
    # current, as after `hf download` picked up an upstream update.
    repo = tmp_path / "hub" / "models--org--dllm"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    examples = [Example("p-0", "What is 2 + 2?", "4")]
    prompts = prompt_hashes(examples)
    assert model_fingerprint("org/dllm") == {"hub_id": "org/dllm", "revision": "a" * 40}
    store = ShardStore(tmp_path / "out")
    store.prepare({"seed": 0}, model_fingerprint("org/dllm"), prompts)
    assert store.check_compatible({"seed": 0}, model_fingerprint("org/dllm"), prompts)
    (repo / "refs" / "main").write_text("b" * 40)
    with pytest.raises(IncompatibleRunError, match=r"org/dllm: Hub revision a+ -> b+"):
        store.check_compatible({"seed": 0}, model_fingerprint("org/dllm"), prompts)
    # A run recorded before revisions were (no "revision" key) still resumes.
    store.prepare({"seed": 0}, {"hub_id": "org/dllm"}, prompts)
    assert store.check_compatible({"seed": 0}, model_fingerprint("org/dllm"), prompts)


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


def _checkpoint(run: Path, step: int, complete: bool = True, **record: object) -> Path:
    """A checkpoint folder as the Trainer leaves it (``complete=False``: killed during the
    save, before trainer_state.json), with r2sft's run record when ``record`` is given."""
    from r2sft.training.run import CONFIG_FILE

    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if record:
        (folder / CONFIG_FILE).write_text(json.dumps(record))
    return folder


def test_a_used_output_folder_needs_resume_or_overwrite(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 4)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UsedOutputDirError, match=r"holds another run .*--overwrite_output_dir"):
        check_output_dir(_train_config(tmp_path), None)
    check_output_dir(_train_config(tmp_path, overwrite_output_dir=True), None)
    assert not (tmp_path / "checkpoint-4").exists() and not (tmp_path / "metrics.jsonl").exists()
    check_output_dir(_train_config(tmp_path), None)  # now unused


def test_resume_with_changed_options_is_refused_wherever_the_checkpoint_is(
    tmp_path: Path,
) -> None:
    from r2sft.training.config import resume_fingerprint

    first = _train_config(tmp_path / "a", learning_rate=1e-4, objective="trajectory")
    checkpoint = _checkpoint(tmp_path / "a", 2, resume_fingerprint=resume_fingerprint(first))
    # Same options (run length and tracking may change; a folder may be spelled another
    # way), same folder or a fresh one.
    model = os.path.relpath(first.model)
    check_output_dir(_train_config(tmp_path / "a", max_steps=9000, model=model), checkpoint)
    check_output_dir(_train_config(tmp_path / "b"), checkpoint)
    # Another run's checkpoint with another objective and learning rate, into a new folder:
    # the checkpoint's own record of its options refuses it.
    changed = _train_config(tmp_path / "b", learning_rate=3e-4, objective="llada")
    with pytest.raises(UsedOutputDirError, match=r"learning_rate: 0.0001 -> 0.0003.*objective"):
        check_output_dir(changed, checkpoint)
    # ... also when a kill came before the copy: the run folder's record stands in.
    (checkpoint / "r2sft_train_config.json").rename(tmp_path / "a" / "r2sft_train_config.json")
    with pytest.raises(UsedOutputDirError, match="learning_rate"):
        check_output_dir(changed, checkpoint)


def test_resuming_a_checkpoint_without_record_checks_its_learning_rate(tmp_path: Path) -> None:
    import torch

    checkpoint = _checkpoint(tmp_path / "foreign", 2)
    torch.save({"base_lrs": [1e-4, 1e-4], "last_epoch": 2}, checkpoint / "scheduler.pt")
    check_output_dir(_train_config(tmp_path / "new", learning_rate=1e-4), checkpoint)
    with pytest.raises(UsedOutputDirError, match=r"learning rate 0.0001, not --learning_rate"):
        check_output_dir(_train_config(tmp_path / "new", learning_rate=3e-4), checkpoint)


def test_resuming_an_earlier_checkpoint_needs_leave_to_drop_the_later_ones(tmp_path: Path) -> None:
    earlier, _ = _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, complete=False)
    with pytest.raises(UsedOutputDirError, match=r"later checkpoints \['checkpoint-4'\]"):
        check_output_dir(_train_config(tmp_path), earlier)
    check_output_dir(_train_config(tmp_path, overwrite_output_dir=True), earlier)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-2"]
    # A checkpoint a kill left incomplete after the resumed one is removed anyway.
    _checkpoint(tmp_path, 4, complete=False)
    check_output_dir(_train_config(tmp_path), latest_checkpoint(tmp_path))
    assert not (tmp_path / "checkpoint-4").exists()


def test_latest_skips_incomplete_checkpoints(tmp_path: Path) -> None:
    from r2sft.training.run import resolve_checkpoint

    _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, complete=False)  # killed during the save: no trainer state
    torn = _checkpoint(tmp_path, 8)  # killed while the trainer state was being written
    (torn / "trainer_state.json").write_text('{"global_st')
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert latest_checkpoint(tmp_path / "nowhere") is None
    only_torn = tmp_path / "torn"
    _checkpoint(only_torn, 2, complete=False)
    config = _train_config(only_torn, resume_from_checkpoint="latest")
    with pytest.raises(FileNotFoundError, match=r"only incomplete ones.*\['checkpoint-2'\]"):
        resolve_checkpoint(config)


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


# ----------------------------------------------------------------------------- models


def test_a_missing_model_folder_is_named_as_such(tmp_path: Path) -> None:
    from r2sft.specs import ModelLoadError, load_model

    for name in (str(tmp_path / "no" / "model"), "./nowhere", "nowhere/model/dir"):
        with pytest.raises(ModelLoadError, match="does not exist .*--model a model folder"):
            load_model(name)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"empty has no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "no_such_type"}')
    with pytest.raises(ModelLoadError, match=r"names a model type that neither r2sft"):
        load_model(str(tmp_path / "empty"))


def test_a_truncated_weights_file_is_named_with_its_path(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from r2sft.specs import load_model

    broken = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # an interrupted download
    with pytest.raises(ValueError, match=rf"weights file {weights} is damaged or truncated"):
        load_model(str(broken))


# ----------------------------------------------------------------------------- evaluate


def test_an_unwritable_evaluate_output_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import r2sft.evaluate
    from r2sft.evaluate import run

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(r2sft.evaluate, "load_model", no_loading)
    (tmp_path / "a_file").write_text("")
    args = parse_config(EvaluateArgs, args=["--output", str(tmp_path / "a_file" / "m.json")])
    with pytest.raises(OSError, match=r"--output .*a_file/m.json cannot be written"):
        run(args)
    # A writable path is left as it was: no empty file behind when the run fails later.
    args = parse_config(EvaluateArgs, args=["--output", str(tmp_path / "new" / "m.json")])
    with pytest.raises(AssertionError, match="model was loaded"):
        run(args)
    assert not (tmp_path / "new" / "m.json").exists()


# ----------------------------------------------------------------------------- train data


def test_an_empty_selected_set_is_a_clear_error(tmp_path: Path) -> None:
    from r2sft.collect.shards import save_dataset_atomically
    from r2sft.training.data import EmptyDataError

    nothing = load_from_disk(str(_trajectories(tmp_path / "x", [True], ["a"]))).select([])
    nothing.save_to_disk(str(tmp_path / "old" / "selected"))  # datasets' default: no shard
    with pytest.raises(EmptyDataError, match="holds no trajectories: no prompt had a correct"):
        load_trajectories(tmp_path / "old")
    save_dataset_atomically(nothing, tmp_path / "new" / "selected")  # collect.py's way
    assert len(load_from_disk(str(tmp_path / "new" / "selected"))) == 0
    with pytest.raises(EmptyDataError, match="holds no trajectories"):
        load_trajectories(tmp_path / "new")


def test_the_card_of_unselected_data_does_not_call_it_selected(tmp_path: Path) -> None:
    from r2sft.training.data import data_summary
    from r2sft.training.export import model_card

    config = _train_config(tmp_path, allow_unselected_data=True)
    candidates = load_trajectories(
        _trajectories(tmp_path / "c", [True, False, True], ["a", "a", "b"]), allow_unselected=True
    )
    card = model_card(config, data_summary(candidates), [])
    assert (
        "3 trajectories, **not a selected set** (1 incorrect, 1 prompts with several rows" in card
    )
    selected = load_trajectories(_trajectories(tmp_path / "s", [True], ["a"]))
    assert "1 selected trajectories" in model_card(config, data_summary(selected), [])


# ----------------------------------------------------------------------------- Hub uploads


class _Unreachable(Exception):
    """What an offline machine's HTTP client raises (no response)."""


class _Refused(Exception):
    def __init__(self) -> None:
        super().__init__("401 Client Error: Unauthorized")
        self.response = type("Response", (), {"status_code": 401})()


def _fake_hub(monkeypatch: pytest.MonkeyPatch, token: str | None, failure: Exception | None):
    import huggingface_hub

    class FakeApi:
        def whoami(self):
            if failure is not None:
                raise failure
            return {"name": "me"}

        def create_repo(self, *args, **kwargs):
            raise _Unreachable("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)


@pytest.mark.parametrize(
    ("token", "failure", "message"),
    [
        (None, None, r"no Hugging Face token found. Set the HF_TOKEN .* or drop --push_to_hub"),
        ("hf_x", _Unreachable("[Errno -2] Name or service not known"),
         r"cannot reach the Hugging Face Hub \(_Unreachable: \[Errno -2\].*drop --push_to_hub"),
        ("hf_x", _Refused(), r"the Hugging Face token was refused \(HTTP 401\)"),
    ],
)  # fmt: skip
def test_hub_access_is_checked_before_any_work(monkeypatch, token, failure, message) -> None:
    from r2sft.hub import HubError, check_hub_access

    _fake_hub(monkeypatch, token, failure)
    with pytest.raises(HubError, match=rf"--push_to_hub \(repo me/x\): {message}"):
        check_hub_access("me/x")


def test_a_failed_upload_says_where_the_model_is_kept(tmp_path, monkeypatch) -> None:
    from r2sft.hub import HubError
    from r2sft.training.export import push_to_hub

    _fake_hub(monkeypatch, "hf_x", None)
    with pytest.raises(HubError) as failed:
        push_to_hub(tmp_path, "me/x")
    assert str(failed.value) == (
        f"uploading {tmp_path} to the Hub repo me/x failed: cannot reach the Hugging Face Hub "
        "(_Unreachable: [Errno -2] Name or service not known). The model is saved in "
        f"{tmp_path}; upload it later with `hf upload me/x {tmp_path}`."
    )


def test_train_checks_the_hub_before_loading_the_model(tmp_path, monkeypatch) -> None:
    import r2sft.training.run as run
    from r2sft.hub import HubError

    def no_loading(config):
        raise AssertionError("the model was loaded before the Hub was checked")

    monkeypatch.setattr(run, "build_model", no_loading)
    _fake_hub(monkeypatch, "hf_x", _Unreachable("offline"))
    data = _trajectories(tmp_path / "data", [True], ["a"])
    config = _train_config(tmp_path / "out", data_dir=str(data), push_to_hub=True,
                           hub_model_id="me/x")  # fmt: skip
    with pytest.raises(HubError, match="cannot reach the Hugging Face Hub"):
        run.train(config)


def test_redundancy_options_are_declared_once_and_checked_at_parse_time() -> None:
    """collect's --score_* / --lambda_* options are RedundancyConfig's fields (one declaration):
    set ones reach the measurement, bad ones fail naming the flag."""
    from r2sft.collect import CollectConfig
    from r2sft.decoding import RedundancyConfig

    config = CollectConfig(score_window=4, score_tau_t=0.5, lambda_t=0.25)
    assert config.redundancy_config() == RedundancyConfig(window=4, tau_t=0.5, lambda_t=0.25)
    assert CollectConfig().redundancy_config() == RedundancyConfig()
    with pytest.raises(ValueError, match="--score_tau_s 1.5 is a confidence"):
        CollectConfig(score_tau_s=1.5)
    with pytest.raises(ValueError, match="--lambda_s -1.0 must be >= 0"):
        CollectConfig(lambda_s=-1.0)


def test_decoder_and_redundancy_options_of_one_config_stay_apart() -> None:
    """collect's --score_window is the redundancy measurement's window, never the decoder's
    --window (both twins derive from fields called window)."""
    from r2sft.collect import CollectConfig

    config = CollectConfig(score_window=5, window=2, threshold_alpha=0.3)
    assert config.redundancy_config().window == 5
    assert config.resolve().window == 2 and config.resolve().threshold_alpha == 0.3
    assert CollectConfig(score_window=5).resolve().window == 3  # the preset's / official
