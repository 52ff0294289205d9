"""collect.py end to end on a tiny random LLaDA: outputs, selection, resume after crashes
(an exception and a real ``kill -9``), 2 processes over gloo = 1 process, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r2sft.collect import CollectConfig, run_collect
from r2sft.collect.config import RUNTIME_FIELDS
from r2sft.collect.pipeline import InvalidPromptError, candidate_seed
from r2sft.collect.selection import selection_key
from r2sft.collect.shards import IncompatibleRunError, ShardStore
from r2sft.config import ConfigError, parse_config
from r2sft.decoding import DecoderArgs, DecoderConfig
from r2sft.decoding.presets import PRESET_FILE
from r2sft.paths import EMBEDDED_MODEL_DIR

REPO = Path(__file__).resolve().parent.parent

# A task whose correctness is a fixed pseudo-random function of the response text, so a
# random model still yields a mix of correct and wrong candidates to select from.
PARITY_TASK = """
import hashlib
from r2sft.tasks import available_tasks, register_task
from r2sft.tasks.arith import ArithTask

if "parity_test" not in available_tasks():

    @register_task("parity_test")
    class ParityTask(ArithTask):
        def is_correct(self, example, response):
            return int(hashlib.md5(response.encode()).hexdigest(), 16) % 3 != 0
"""
exec(PARITY_TASK)  # noqa: S102  (registers the task in this process)

DRIVER = (
    PARITY_TASK
    + """
from r2sft.collect import CollectConfig, run_collect
from r2sft.config import parse_config

run_collect(parse_config(CollectConfig))
"""
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flags(model: Path, out: Path, **extra: object) -> list[str]:
    values = {
        "model": str(model), "task": "parity_test", "num_prompts": 6, "num_candidates": 3,
        "gen_length": 32, "block_length": 16, "temperature": 1.0, "batch_size": 8,
        "prompts_per_shard": 1, "output_dir": str(out), **extra,
    }  # fmt: skip
    # One prompt per shard: every forward batch holds candidates of a single prompt, so it is
    # the same batch whatever the process layout, and runs compare exactly. (Batches of
    # different prompts pad differently; on a random model's flat distributions that float
    # noise can reorder near-tied commits.)
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def collect(model: Path, out: Path, **extra: object) -> dict:
    return run_collect(parse_config(CollectConfig, args=flags(model, out, **extra)))


def load_rows(out: Path, name: str) -> list[dict]:
    from datasets import load_from_disk

    return load_from_disk(str(out / name)).to_list()


def comparable(rows: list[dict]) -> list[tuple]:
    return [
        (r["prompt_id"], r["candidate"], r["seed"], r["correct"], r["nfe"], r["r_total"],
         tuple(r["response_ids"]), tuple(r["step_map"]))
        for r in rows
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    collect(tiny_model, out)
    return out


def test_seeds_are_deterministic_and_distinct() -> None:
    assert candidate_seed(0, "p", 1) == candidate_seed(0, "p", 1)
    seeds = {candidate_seed(s, p, k) for s in (0, 1) for p in ("a", "b") for k in range(4)}
    assert len(seeds) == 16 and all(0 <= seed < 2**63 for seed in seeds)


def test_candidate_decoders_default_greedy_then_sampled() -> None:
    config = CollectConfig(temperature=0.7, decoder="r2", num_candidates=4, preset="official")
    decoders = config.candidate_decoders()
    base = config.base_decoder()
    assert [label for label, _ in decoders] == ["greedy", "sampled", "sampled", "sampled"]
    assert decoders[0][1] == base and base.temperature == 0.0
    assert all(d.temperature == 0.7 and d.threshold == base.threshold for _, d in decoders[1:])
    plain = CollectConfig(greedy_first=False, num_candidates=2, preset="official")
    assert [d.temperature for _, d in plain.candidate_decoders()] == [0.5, 0.5]


def test_the_decoders_are_resolved_once_per_config(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []  # each resolution reads the decoder preset (a Hub download for a Hub model's)
    real = DecoderArgs.resolve
    monkeypatch.setattr(DecoderArgs, "resolve", lambda *a, **k: reads.append(a) or real(*a, **k))
    config = CollectConfig(num_candidates=3, preset="official")
    at_parse = len(reads)
    assert at_parse >= 1  # parse time: bad settings fail before any work
    plan = config.plan()
    assert config.plan() is plan and len(reads) == at_parse
    assert (config.base_decoder(), config.redundancy_config()) == (plan.base, plan.redundancy)
    assert config.candidate_decoders() == list(plan.candidates) and len(reads) == at_parse
    assert plan.labels() == {d.to_json(): label for label, d in plan.candidates}
    config.temperature = 0.9  # a changed config resolves again
    assert config.plan().candidates[1][1].temperature == 0.9 and len(reads) > at_parse


def test_a_run_decodes_and_merges_with_the_plan_resolved_at_parse_time(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(CollectConfig, args=flags(tiny_model, tmp_path, num_prompts=3))
    reads = []
    monkeypatch.setattr(DecoderArgs, "resolve", lambda *a, **k: reads.append(a))
    summary = run_collect(config)  # 3 shards and the merge
    assert reads == [] and summary["prompts"] == 3
    assert summary["decoders"] == config.plan().decoders()


def test_candidate_decoders_from_a_mix() -> None:
    config = CollectConfig(
        num_candidates=8, temperature=0.6, preset="official",
        decoder_mix=["0.125: r2 temperature=0", "0.375: r2",
                     "0.25: threshold threshold=0.5 temperature=1.0",
                     "0.25: r2 tau_s=0.3 tau_t=0.3 temporal_k=2 early_exit=true"],
    )  # fmt: skip
    decoders = config.candidate_decoders()
    labels = [label for label, _ in decoders]
    assert (
        labels
        == ["r2 temperature=0"]
        + ["r2"] * 3
        + ["threshold threshold=0.5 temperature=1.0"] * 2
        + ["r2 tau_s=0.3 tau_t=0.3 temporal_k=2 early_exit=true"] * 2
    )
    greedy, sampled, low, loose = decoders[0][1], decoders[1][1], decoders[4][1], decoders[6][1]
    assert greedy.temperature == 0 and greedy.r2 and sampled.temperature == 0.6
    assert not low.r2 and low.threshold == 0.5 and low.temperature == 1.0
    assert (loose.tau_s, loose.tau_t, loose.temporal_k, loose.early_exit) == (0.3, 0.3, 2, True)
    assert all(d.gen_length == greedy.gen_length for _, d in decoders)


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        (["0.5: r2", "0.4: threshold"], "sum to 0.9"),
        (["0.5 r2", "0.5: r2"], "SHARE: DECODER"),
        (["0.5: greedy", "0.5: r2"], "unknown decoder 'greedy'"),
        (["0.5: r2 tau=0.3", "0.5: r2"], "unknown option 'tau'"),
        (["0.5: r2 tau_s=high", "0.5: r2"], "tau_s=high: expected float"),
        (["0.5: r2 temperature=0", "0.5: r2"], "identical"),
        (["0.9: r2", "0.1: threshold"], "gets no candidate"),
        (["0.5: r2 gen_length=32", "0.5: r2"], "every candidate needs"),
        (["0.5: r2 token_cluster_mode=all", "0.5: r2"], "choose one of"),
    ],
)
def test_bad_decoder_mix_is_a_clear_error(mix: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollectConfig(num_candidates=4, decoder_mix=mix, preset="official")


def test_every_decoder_option_is_a_collect_flag() -> None:
    import dataclasses

    collect_fields = {f.name for f in dataclasses.fields(CollectConfig)}
    decoder_fields = {f.name for f in dataclasses.fields(DecoderConfig)} - {"record_trace"}
    assert decoder_fields <= collect_fields
    assert RUNTIME_FIELDS <= collect_fields


def test_outputs_and_selection(reference_run: Path) -> None:
    out = reference_run
    candidates = load_rows(out, "candidates")
    selected = load_rows(out, "selected")
    summary = json.loads((out / "summary.json").read_text())
    assert len(candidates) == 6 * 3 == summary["candidates"]
    ids = [row["prompt_id"] for row in candidates]
    assert len(set(ids)) == 6 and all(ids.count(i) == 3 for i in set(ids))
    assert len({row["prompt_id"] for row in selected}) == len(selected) == summary["selected"]
    assert 0 < summary["selected"] <= 6  # the parity task makes ~2/3 of candidates correct
    for row in selected:
        correct = [c for c in candidates if c["prompt_id"] == row["prompt_id"] and c["correct"]]
        assert row["correct"] and selection_key(row) == min(map(selection_key, correct))
    without = {c["prompt_id"] for c in candidates} - {row["prompt_id"] for row in selected}
    assert set(summary["prompt_ids_without_correct"]) == without
    assert summary["prompts_with_correct"] + summary["prompts_without_correct"] == 6
    row = candidates[0]
    assert len(row["response_ids"]) == len(row["step_map"]) == len(row["rule_map"]) == 32
    assert row["prompt"].startswith("<|startoftext|>") and row["prompt_ids"]
    assert json.loads(row["decoder"])["gen_length"] == 32
    for key in ("mean_nfe", "median_nfe", "mean_r_total", "median_r_total"):
        assert key in summary["stats"]["selected"] and key in summary["stats"]["all_correct"]
    assert summary["candidate_accuracy"] == pytest.approx(
        sum(c["correct"] for c in candidates) / len(candidates)
    )
    card = (out / "README.md").read_text()
    assert "parity_test" in card and "| selected |" in card


@pytest.mark.slow
def test_collect_runs_on_a_tiny_dream(tiny_dream: Path, tmp_path: Path) -> None:
    """Dream (shifted logits, its own tokenizer and chat format) through collect.py."""
    out = tmp_path / "dream"
    summary = collect(tiny_dream, out, num_prompts=3, num_candidates=2, prompts_per_shard=3)
    candidates = load_rows(out, "candidates")
    assert len(candidates) == summary["candidates"] == 6
    assert len(load_rows(out, "selected")) == summary["selected"]
    assert (out / "README.md").is_file()
    row = candidates[0]
    assert row["prompt"].startswith("<|im_start|>system\n") and row["prompt"].endswith(
        "<|im_start|>assistant\n"
    )
    assert len(row["response_ids"]) == len(row["step_map"]) == 32
    assert 1 <= row["nfe"] <= 32 and min(row["step_map"]) == 0


def test_resume_after_simulated_crash(
    tiny_model: Path, reference_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "crashy"
    real_write = ShardStore.write_shard
    writes = []

    def crash_on_third_write(self, records, name):
        if len(writes) == 2:
            raise RuntimeError("simulated crash")
        writes.append(real_write(self, records, name))
        return writes[-1]

    monkeypatch.setattr(ShardStore, "write_shard", crash_on_third_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect(tiny_model, out)
    first_shards = [p.name for p in ShardStore(out).shard_files()]
    assert len(first_shards) == 2 and not (out / "selected").exists()

    monkeypatch.setattr(ShardStore, "write_shard", real_write)
    summary = collect(tiny_model, out)
    shards = [p.name for p in ShardStore(out).shard_files()]
    assert set(first_shards) < set(shards) and len(shards) == 6  # finished ones not redone
    assert summary["resumed"] and summary["prompts_collected_this_run"] == 4
    assert comparable(load_rows(out, "candidates")) == comparable(
        load_rows(reference_run, "candidates")
    )
    assert comparable(load_rows(out, "selected")) == comparable(
        load_rows(reference_run, "selected")
    )


@pytest.mark.slow
def test_resume_after_kill_9(tiny_model: Path, reference_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(driver), *flags(tiny_model, out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(ShardStore(out).shard_files()) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(ShardStore(out).shard_files())
    assert 2 <= done_before < 6, process.stderr.read().decode()[-2000:]
    subprocess.run(command, env=env, check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["prompts_collected_this_run"] == 6 - done_before
    assert comparable(load_rows(out, "candidates")) == comparable(
        load_rows(reference_run, "candidates")
    )


@pytest.mark.slow
def test_two_processes_select_the_same_as_one(
    tiny_model: Path, reference_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(driver), *flags(tiny_model, out),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == 2  # two real processes, not one
    ranks = {p.name.split("-")[1] for p in ShardStore(out).shard_files()}
    assert ranks == {"r0", "r1"}
    assert comparable(load_rows(out, "selected")) == comparable(
        load_rows(reference_run, "selected")
    )
    assert comparable(load_rows(out, "candidates")) == comparable(
        load_rows(reference_run, "candidates")
    )


def test_resume_with_other_settings_is_refused(tiny_model: Path, reference_run: Path) -> None:
    with pytest.raises(IncompatibleRunError, match="num_candidates: 3 -> 4"):
        collect(tiny_model, reference_run, num_candidates=4)


def test_resume_notices_an_edited_preset_file(tiny_model: Path, tmp_path: Path) -> None:
    """The same options, but the preset file they name was rewritten (a re-run tune): the
    candidates would come from another decoder, so the resume is refused; a collection made
    before the resolved decoders were recorded still resumes by its options."""
    preset = json.loads((EMBEDDED_MODEL_DIR / PRESET_FILE).read_text())
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "run"
    collect(tiny_model, out, num_prompts=2, preset=path)
    assert collect(tiny_model, out, num_prompts=2, preset=path)["resumed"]
    for decoder in preset["decoders"].values():
        decoder["threshold"] = 0.7
    path.write_text(json.dumps(preset))
    with pytest.raises(IncompatibleRunError, match="resolved_decoders"):
        collect(tiny_model, out, num_prompts=2, preset=path)
    manifest = json.loads((out / "run.json").read_text())
    del manifest["settings"]["resolved_decoders"]
    (out / "run.json").write_text(json.dumps(manifest))
    assert collect(tiny_model, out, num_prompts=2, preset=path)["resumed"]


def test_resume_knows_the_same_model_under_another_spelling(
    tiny_model: Path, tiny_dream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "spelled"
    collect(tiny_model, out, num_prompts=2)
    # The same folder as a relative path (collect.py --model data/tiny-llada, then the default,
    # its absolute path) and through a symlink: the run resumes, nothing is decoded again.
    monkeypatch.chdir(tiny_model.parent)
    (tmp_path / "link").symlink_to(tiny_model, target_is_directory=True)
    for spelling in (Path(tiny_model.name), Path("..") / tiny_model.parent.name / tiny_model.name,
                     tmp_path / "link"):  # fmt: skip
        summary = collect(spelling, out, num_prompts=2)
        assert summary["resumed"] and summary["prompts_collected_this_run"] == 0, spelling
    # Another model is still refused, named by its resolved path.
    change = re.escape(f"the model: {tiny_model} -> {tiny_dream}")
    with pytest.raises(IncompatibleRunError, match=change):
        collect(tiny_dream, out, num_prompts=2)


def test_unknown_key_and_task_are_clear_errors(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--num_candidatez"):
        parse_config(CollectConfig, args=["--num_candidatez", "3"])
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        collect(tiny_model, tmp_path / "x", task="nope")
    with pytest.raises(ConfigError, match="--threshold_jitter"):
        parse_config(CollectConfig, args=["--threshold_jitter", "0.05"])


def test_bad_prompts_error_or_are_skipped(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"question": "Tom has 3 apples. He buys 2 more. How many?", "answer": "3 + 2 = 5\n#### 5"},
        {"question": "   ", "answer": "#### 1"},
        {"question": "Mia has 4 coins. " * 100, "answer": "#### 4"},
        {"question": "Ava has 5 cards. She loses 1. How many?", "answer": "5 - 1 = 4\n#### 4"},
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    # A blank question is refused when the file is read, with its line; a prompt too long
    # for the model once it is tokenised.
    with pytest.raises(ValueError, match=r"train.jsonl:2: missing or empty field.*'question'"):
        collect(tiny_model, tmp_path / "strict", data_path=data)
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[2:]))
    with pytest.raises(InvalidPromptError, match=r"1 invalid prompt.*prompt has \d+ tokens"):
        collect(tiny_model, tmp_path / "strict", data_path=data)
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = collect(tiny_model, tmp_path / "lenient", data_path=data, skip_invalid=True)
    assert summary["invalid_prompts"] == 2 and summary["prompts"] == 2


def test_malformed_line_skipped_and_counted(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "math.jsonl"
    lines = [
        json.dumps({"problem": "What is 1 + 1?", "answer": "2"}),
        "{broken",
        json.dumps({"problem": "What is 2 + 2?"}),
        json.dumps({"problem": "What is 3 + 3?", "solution": "$\\boxed{6}$"}),
    ]
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"math\.jsonl:2: malformed JSON"):
        collect(tiny_model, tmp_path / "strict", task="math", data_path=data, split="test")
    summary = collect(
        tiny_model, tmp_path / "ok", task="math", data_path=data, split="test", skip_invalid=True
    )
    assert summary["prompts"] == 2 and summary["invalid_prompts"] == 2
    assert summary["candidates"] == 6


@pytest.mark.parametrize(
    "name",
    [
        "collect_embedded.yaml",
        "llada_8b_gsm8k.yaml",
        "llada_8b_humaneval.yaml",
        "dream_7b_gsm8k.yaml",
    ],
)
def test_shipped_configs_parse(name: str) -> None:
    config = parse_config(CollectConfig, args=["--config", str(REPO / "configs" / name)])
    decoder = config.base_decoder()
    assert decoder.r2 and decoder.record_trace and config.num_candidates >= 4
    if name == "collect_embedded.yaml":  # the embedded model's own preset, tuned on dev
        from r2sft.decoding.presets import read_preset

        tuned = read_preset(REPO / "data/tiny-llada").values("r2")
        assert config.preset == "model" and decoder.threshold == tuned["threshold"]
        assert decoder.early_exit and decoder.tau_s == tuned["tau_s"]
    else:  # the official values, spelled out
        assert config.preset == "official" and decoder.threshold == 0.9
        assert decoder.tau_s == 0.8 and not decoder.early_exit


def test_push_to_hub_uploads_card_then_selected(
    tiny_model: Path, reference_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    import huggingface_hub

    calls: list[tuple] = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("api", token))

        def whoami(self):  # the token check before any work
            calls.append(("whoami",))
            return {"name": "me"}

        def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, repo_type, private))

        def upload_file(self, path_or_fileobj, path_in_repo, repo_id, repo_type, **kwargs):
            calls.append(("upload", path_in_repo, repo_id, repo_type, path_or_fileobj))

    def fake_push(self, repo_id, **kwargs):
        calls.append(("push", repo_id, len(self), kwargs.get("private")))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_from_the_environment")
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    # A finished run re-run with --push_to_hub re-merges (nothing decoded) and pushes.
    summary = collect(tiny_model, reference_run, push_to_hub="me/trajectories")
    assert summary["prompts_collected_this_run"] == 0
    assert [call[0] for call in calls] == ["api", "whoami", "api", "create_repo", "upload", "push"]
    assert calls[0][1] is None and calls[2][1] is None  # the token: environment, never a flag
    assert calls[3] == ("create_repo", "me/trajectories", "dataset", False)
    upload = calls[4]
    assert upload[1] == "README.md" and b"| selected |" in upload[4]
    assert calls[5] == ("push", "me/trajectories", summary["selected"], False)


def test_push_to_hub_offline_fails_before_any_decoding(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    import r2sft.collect.pipeline
    from r2sft.hub import HubError

    class OfflineApi:
        def whoami(self):
            raise OSError("[Errno -2] Name or service not known")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the Hub was checked")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_from_the_environment")
    monkeypatch.setattr(r2sft.collect.pipeline, "load_model", no_loading)
    with pytest.raises(HubError, match=r"me/d\): cannot reach the Hugging Face Hub"):
        collect(tiny_model, tmp_path, push_to_hub="me/d")
    assert not list(tmp_path.glob("shards/*.parquet"))


def test_unloadable_model_names_the_flag(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus-model"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    with pytest.raises(ValueError, match="cannot load --model .*bogus-model"):
        collect(bogus, tmp_path / "out")


def test_interrupted_shard_write_is_ignored_then_removed(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "out")
    assert store.prepare({"seed": 0}) is False
    partial = store.shard_dir / ".tmp-p00000000-r0-deadbeef.parquet"
    partial.write_bytes(b"PAR1 half a file")  # what kill -9 during a write leaves behind
    assert store.shard_files() == [] and store.finished_prompt_ids() == set()
    assert store.prepare({"seed": 0}) is True
    assert not partial.exists()
