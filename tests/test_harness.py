"""The lm-evaluation-harness model: request handling on a tiny random LLaDA, and an offline
lm-eval run on the embedded model that must agree with ``r2sft.evaluate``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval.api.instance import Instance

from r2sft.config import ConfigError
from r2sft.harness import (
    R2SFTLM,
    LikelihoodNotSupportedError,
    cost_lines,
    cut_at_stop_strings,
    harness_args,
    results_file,
    write_cost_report,
)
from r2sft.paths import EMBEDDED_MODEL_DIR, EMBEDDED_TASK_DIR, REPO_ROOT
from r2sft.scoring import decode_rows
from r2sft.specs import decode_response, render_prompt

SMALL = {"gen_length": 16, "block_length": 16, "threshold": 0.5, "device": "cpu"}
GREEDY = {"until": [], "do_sample": False}


def _request(context: str, gen_kwargs: dict, doc_id: int = 0, task: str = "t",
             repeats: int = 1) -> Instance:  # fmt: skip
    return Instance("generate_until", {}, (context, gen_kwargs), doc_id, (task, doc_id, repeats))


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> R2SFTLM:
    return R2SFTLM(pretrained=str(tiny_model), batch_size=8, **SMALL)


def _prompts(model: R2SFTLM) -> list[str]:
    questions = [
        "Mia has 3 apples.",
        "Tom has 12 marbles. He finds 7 more. How many now?",
        "Ava has 5 cards. She gives away 2 of them. She buys 4 more. How many?",
    ]
    return [model.apply_chat_template([{"role": "user", "content": q}]) for q in questions]


def test_cut_at_stop_strings_takes_the_earliest_stop():
    assert cut_at_stop_strings("a b\n\nc Question: d", ["Question:", "\n\n"]) == "a b"
    assert cut_at_stop_strings("abc", ["", "x"]) == "abc"
    assert cut_at_stop_strings("abc", []) == "abc"


def test_model_args_are_checked_against_the_decoder_options():
    args = harness_args({"decoder": "threshold", "gen_length": 64, "tau_t": 0.7, "r2": True})
    decoder = args.resolve()
    assert (decoder.policy, decoder.gen_length, decoder.tau_t, decoder.r2) == (
        "threshold", 64, 0.7, True)  # fmt: skip
    with pytest.raises(ConfigError, match="'gen_lenght'.*Did you mean 'gen_length'"):
        harness_args({"gen_lenght": 64})
    with pytest.raises(ConfigError, match="'threshold' has value 'high'"):
        harness_args({"threshold": "high"})
    with pytest.raises(ValueError, match="confidence"):
        harness_args({"threshold": 1.5})
    with pytest.raises(ValueError, match="batch_size=auto is not supported"):
        harness_args({"batch_size": "auto"})
    # lm-eval parses `token_cluster_mode=none` into None: that can only mean the word.
    assert harness_args({"token_cluster_mode": None}).resolve().token_cluster_mode == "none"
    # ... and `suffix_window=none`: no pruning, over a preset that prunes.
    assert harness_args({"suffix_window": None}).decoder_overrides() == {"suffix_window": None}


def test_model_args_win_over_lm_evals_cli_defaults(tiny_model):
    built = R2SFTLM.create_from_arg_obj(
        {"pretrained": str(tiny_model), "batch_size": 4}, {"batch_size": 1, "device": "cpu"}
    )
    assert built.args.batch_size == 4 and built.args.device == "cpu"
    parsed = R2SFTLM.create_from_arg_string(
        f"pretrained={tiny_model},batch_size=3,decoder=fixed,gen_length=16,block_length=16",
        {"batch_size": 1},
    )
    assert parsed.args.batch_size == 3 and parsed.decoder.policy == "fixed"


def test_a_decoder_that_fails_resolution_is_named_before_the_model_loads(tiny_model, monkeypatch):
    import r2sft.harness

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(r2sft.harness, "load_model", no_load)
    with pytest.raises(ValueError, match="block_length 48"):
        R2SFTLM.create_from_arg_obj({"pretrained": str(tiny_model), "gen_length": 64,
                                     "block_length": 48}, {"device": "cpu"})  # fmt: skip


def test_the_models_decoder_preset_applies_under_given_options(tiny_model, tmp_path):
    from r2sft.decoding.presets import PRESET_FILE, DecoderPreset

    folder = tmp_path / "tuned"
    shutil.copytree(tiny_model, folder)
    preset = DecoderPreset("test", decoders={"r2": {"threshold": 0.7, "tau_t": 0.6}})
    (folder / PRESET_FILE).write_text(preset.to_json())
    tuned = R2SFTLM(pretrained=str(folder), device="cpu", tau_t=0.5)
    assert (tuned.decoder.threshold, tuned.decoder.tau_t) == (0.7, 0.5)
    official = R2SFTLM(pretrained=str(folder), device="cpu", preset="official")
    assert official.decoder.threshold == 0.9


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="pass --device cpu"):
        R2SFTLM(pretrained=str(tiny_model), device="cuda:0")


def test_several_processes_are_refused(tiny_model, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="runs in one process"):
        R2SFTLM(pretrained=str(tiny_model))


def test_generate_until_batches_prompts_of_different_lengths(model, tiny_model):
    prompts = _prompts(model)
    assert len({len(model.tokenizer(p)["input_ids"]) for p in prompts}) == 3
    start = len(model.request_costs)
    batched = model.generate_until(
        [_request(p, GREEDY, doc_id=i) for i, p in enumerate(prompts)], disable_tqdm=True
    )
    one_by_one = R2SFTLM(pretrained=str(tiny_model), batch_size=1, **SMALL)
    single = one_by_one.generate_until([_request(p, GREEDY, i) for i, p in enumerate(prompts)],
                                       disable_tqdm=True)  # fmt: skip
    assert batched == single
    loaded = model.loaded
    ids = [loaded.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = decode_rows(loaded.model, loaded.spec, loaded.tokenizer, ids, model.decoder,
                       seeds=[0, 1, 2], batch_size=1)  # fmt: skip
    assert batched == [row["response"] for row in rows]
    costs = model.request_costs[start:]
    assert [c["nfe"] for c in costs] == [row["nfe"] for row in rows]
    assert [c["tokens_per_forward"] for c in costs] == [16 / row["nfe"] for row in rows]
    assert [c["r_total"] for c in costs] == [row["r_total"] for row in rows]


def test_until_and_max_gen_toks_shorten_the_answer(model):
    prompt = _prompts(model)[1]
    (full,) = model.generate_until([_request(prompt, GREEDY)], disable_tqdm=True)
    assert len(full) > 2, "the random model should write something"
    stop = full[1:3]
    (cut,) = model.generate_until([_request(prompt, {**GREEDY, "until": [stop]})],
                                  disable_tqdm=True)  # fmt: skip
    assert cut == full[: full.index(stop)]
    (capped,) = model.generate_until([_request(prompt, {**GREEDY, "max_gen_toks": 2})],
                                     disable_tqdm=True)  # fmt: skip
    canvas = model.loaded.spec
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    rows = decode_rows(model.loaded.model, canvas, model.tokenizer, [ids], model.decoder,
                       seeds=[0], batch_size=1)  # fmt: skip
    assert capped == decode_response(model.tokenizer, canvas, rows[0]["response_ids"][:2])


def test_budget_beyond_the_canvas_and_foreign_kwargs_are_reported(tiny_model, caplog):
    fresh = R2SFTLM(pretrained=str(tiny_model), **SMALL)
    request = _request(_prompts(fresh)[0], {**GREEDY, "max_gen_toks": 100, "top_p": 0.9})
    with caplog.at_level("WARNING", logger="r2sft.harness"):
        fresh.generate_until([request, request], disable_tqdm=True)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("top_p=0.9 has no meaning" in m for m in messages) == 1  # once, not per request
    assert sum("Pass gen_length=100" in m for m in messages) == 1


def test_sampling_requests_and_repeats(model, tiny_model):
    prompt = _prompts(model)[0]
    start = len(model.request_costs)
    repeated = _request(prompt, {"until": [], "do_sample": True, "temperature": 0.7}, doc_id=5,
                        repeats=2)  # fmt: skip
    # lm-eval sends one Instance `repeats` times; each repeat gets its own seed.
    model.generate_until([repeated, repeated, _request(prompt, GREEDY, doc_id=6)],
                         disable_tqdm=True)  # fmt: skip
    costs = model.request_costs[start:]
    assert [(c["seed"], c["temperature"]) for c in costs] == [(10, 0.7), (11, 0.7), (6, 0.0)]
    explicit = R2SFTLM(pretrained=str(tiny_model), temperature=0.0, **SMALL)
    explicit.generate_until([repeated], disable_tqdm=True)
    assert explicit.request_costs[0]["temperature"] == 0.0  # --model_args win


def test_likelihood_requests_are_refused_naming_the_task(model):
    request = Instance("loglikelihood", {}, ("ctx", " cont"), 0, ("arc_easy", 0, 1))
    with pytest.raises(LikelihoodNotSupportedError, match="arc_easy.*no exact likelihood"):
        model.loglikelihood([request])
    with pytest.raises(LikelihoodNotSupportedError, match="perplexity tasks"):
        model.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("t",), 0,
                                              ("wikitext", 0, 1))])  # fmt: skip


def test_chat_template_follows_lm_evals_flow(model):
    question = "Mia has 3 apples."
    messages = [{"role": "user", "content": question}]
    assert model.apply_chat_template(messages) == render_prompt(model.tokenizer, question)
    prefixed = model.apply_chat_template(
        [*messages, {"role": "assistant", "content": "Mia has"}], add_generation_prompt=False
    )
    assert prefixed.endswith("Mia has")  # lm-eval's gen_prefix is continued, not closed
    assert model.chat_template(True) == model.tokenizer.chat_template
    assert model.chat_template(False) is None
    with pytest.raises(ValueError, match="without a name"):
        model.chat_template("tool_use")


def test_prompt_beyond_the_models_positions_is_an_error(model):
    long_prompt = " ".join(["apples"] * 600)
    with pytest.raises(ValueError, match="document 3: the prompt has .* 512 positions"):
        model.generate_until([_request(long_prompt, GREEDY, doc_id=3)], disable_tqdm=True)


def test_cost_report_goes_beside_lm_evals_results(model, tmp_path):
    model.generate_until([_request(p, GREEDY, i, task="a") for i, p in enumerate(_prompts(model))],
                         disable_tqdm=True)  # fmt: skip
    report = model.cost_report()
    assert model.get_model_info() == {"r2sft": report}
    costs = report["tasks"]["a"]
    assert costs["num_examples"] == sum(c["task"] == "a" for c in model.request_costs)
    assert report["decoder"]["gen_length"] == 16
    (line,) = [line for line in cost_lines(report) if "| a:" in line]
    assert f"mean NFE {costs['mean_nfe']:.2f}" in line and "tokens/forward" in line
    results = tmp_path / "model" / "results_2026-01-01T00-00-00.5.json"
    results.parent.mkdir()
    results.write_text("{}")
    assert results_file(str(tmp_path), since=0) == results
    assert results_file(str(tmp_path), since=results.stat().st_mtime + 10) is None
    written = json.loads(write_cost_report(model.costs, results).read_text())
    assert written["tasks"] == json.loads(json.dumps(report["tasks"]))
    assert len(written["requests"]) == len(model.request_costs)
    assert (results.parent / "r2sft_costs_2026-01-01T00-00-00.5.json").is_file()
    named = tmp_path / "run_2026-01-01T00-00-00.5.json"
    named.write_text("{}")
    assert results_file(str(tmp_path / "run.json"), since=0) == named


# The labelled responses of test_gsm8k (issue #25), through the r2sft-scorer filter and the
# exact_match metric of r2sft_arith.yaml: the filter must give r2sft's verdict.
FINAL_ANSWERS = json.loads((Path(__file__).parent / "fixtures" / "final_answers.json").read_text())


def _arith_task_yaml() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(  # noqa: S506 - SafeLoader with one extra tag
        (REPO_ROOT / "r2sft" / "lm_eval_tasks" / "r2sft_arith.yaml").read_text(), Loader=Loader
    )


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        pytest.param(case["response"], reference, verdict, id=f"{case['pattern']}: {reference}")
        for case in FINAL_ANSWERS
        for reference, verdict in case["verdicts"].items()
    ],
)
def test_r2sft_scorer_filter_scores_the_final_answer(response, reference, correct):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    from r2sft.lm_eval_tasks.utils import r2sft_answers

    solution = f"1 + 1 = 2\n#### {reference}"
    ((answer,),) = r2sft_answers([[response]], [{"answer": solution}])
    assert (answer == reference) is correct
    (metric,) = _arith_task_yaml()["metric_list"]
    options = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}
    score = exact_match_hf_evaluate(predictions=[answer], references=[solution], **options)
    assert score["exact_match"] == float(correct)


@pytest.mark.slow
@pytest.mark.skipif(
    not (EMBEDDED_MODEL_DIR / "config.json").is_file()
    or not (EMBEDDED_TASK_DIR / "test.jsonl").is_file(),
    reason="the embedded model or the arith split files are missing",
)
def test_lm_eval_run_equals_r2sft_evaluate(tmp_path):
    """lm-eval's command line (r2sft registered) on the embedded model and the project's
    arith task scores, per problem and in total, what `r2sft.evaluate` scores, at the same
    NFE."""
    from r2sft.decoding import DecoderArgs
    from r2sft.scoring import evaluate
    from r2sft.specs import load_model
    from r2sft.tasks import get_task

    limit = 40
    command = [
        sys.executable, "-m", "r2sft.harness", "--model", "r2sft",
        "--model_args", f"pretrained={EMBEDDED_MODEL_DIR},decoder=r2,gen_length=64,"
        "block_length=16,batch_size=16",
        "--device", "cpu", "--include_path", str(REPO_ROOT / "r2sft" / "lm_eval_tasks"),
        "--tasks", "r2sft_arith", "--apply_chat_template", "--limit", str(limit),
        "--output_path", str(tmp_path), "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "r2sft cost | r2sft_arith: 40 requests, mean NFE" in run.stdout
    (results,) = tmp_path.glob("*/results_*.json")
    scores = json.loads(results.read_text())["results"]["r2sft_arith"]
    (costs_file,) = results.parent.glob("r2sft_costs_*.json")
    costs = json.loads(costs_file.read_text())
    assert json.loads(results.read_text())["config"]["r2sft"]["tasks"] == costs["tasks"]
    (samples_file,) = results.parent.glob("samples_r2sft_arith_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    scored = [s for s in samples if s["filter"] == "r2sft-scorer"]
    scored.sort(key=lambda s: s["doc_id"])

    task = get_task("arith")
    decoder = DecoderArgs(decoder="r2").resolve(task, model=str(EMBEDDED_MODEL_DIR))
    assert decoder.to_dict() == costs["decoder"]
    reference = evaluate(load_model(str(EMBEDDED_MODEL_DIR)), task, task.load("test", limit),
                         decoder, batch_size=16, progress=False)  # fmt: skip
    per_example = reference["per_example"]
    assert [s["resps"][0][0] for s in scored] == [e["response"] for e in per_example]
    assert [bool(s["exact_match"]) for s in scored] == [e["correct"] for e in per_example]
    assert scores["exact_match,r2sft-scorer"] == reference["accuracy"]
    nfe = {c["doc_id"]: c["nfe"] for c in costs["requests"]}
    assert [nfe[i] for i in range(limit)] == [e["nfe"] for e in per_example]
    summary = costs["tasks"]["r2sft_arith"]
    assert summary["mean_nfe"] == reference["mean_nfe"]
    assert summary["tokens_per_forward"] == reference["tokens_per_forward"]
    assert summary["mean_r_total"] == pytest.approx(reference["mean_r_total"])
