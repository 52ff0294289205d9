"""evaluate(): metrics on a tiny random LLaDA (the CLI also on a tiny Dream); the CLI's defaults,
JSON output and errors."""

import json

import pytest

import r2sft.evaluate as evaluate_module
from r2sft.decoding import decoder_config
from r2sft.evaluate import EvaluateArgs, main
from r2sft.paths import EMBEDDED_BLOCK_LENGTH, EMBEDDED_GEN_LENGTH, EMBEDDED_TASK_DIR
from r2sft.scoring import evaluate
from r2sft.specs import decode_response, load_model
from r2sft.tasks import get_task, task_class

REQUIRED = ["accuracy", "mean_nfe", "tokens_per_forward", "mean_r_s", "mean_r_t",
            "mean_r_total", "num_examples", "wall_seconds", "decoder"]  # fmt: skip
needs_arith = pytest.mark.skipif(
    not (EMBEDDED_TASK_DIR / "test.jsonl").is_file(), reason="arith split files missing"
)


@needs_arith
def test_evaluate_metrics_are_consistent_and_batch_independent(tiny_model):
    loaded = load_model(str(tiny_model))
    task = get_task("arith")
    examples = task.load("test", limit=5)
    decoder = decoder_config("r2", gen_length=32, block_length=16, threshold=0.5)
    metrics = evaluate(loaded, task, examples, decoder, batch_size=2, progress=False)
    assert all(key in metrics for key in REQUIRED)
    per_example = metrics["per_example"]
    assert metrics["num_examples"] == len(per_example) == 5
    assert metrics["accuracy"] == sum(e["correct"] for e in per_example) / 5
    assert metrics["mean_nfe"] == pytest.approx(sum(e["nfe"] for e in per_example) / 5)
    assert metrics["tokens_per_forward"] == pytest.approx(32 / metrics["mean_nfe"])
    assert metrics["mean_r_total"] == pytest.approx(metrics["mean_r_s"] + metrics["mean_r_t"])
    assert metrics["decoder"]["r2"] and metrics["decoder"]["gen_length"] == 32
    json.dumps(metrics)  # JSON-ready
    batches: list[int] = []  # a caller's own progress bar sees every batch
    single = evaluate(loaded, task, examples, decoder, batch_size=1, on_batch=batches.append)
    assert single["per_example"] == per_example and batches == [1] * 5
    fixed = evaluate(loaded, task, examples, decoder_config("fixed", gen_length=32,
                     block_length=16), batch_size=5, progress=False)  # fmt: skip
    assert fixed["mean_nfe"] == 32 and fixed["tokens_per_forward"] == 1.0


def test_decode_response_stops_at_end_of_text_or_end_of_turn(tiny_model):
    loaded = load_model(str(tiny_model))
    tokenizer, spec = loaded.tokenizer, loaded.spec
    ids = tokenizer("#### 12", add_special_tokens=False)["input_ids"]
    assert decode_response(tokenizer, spec, [*ids, spec.eos_token_id, *ids]) == "#### 12"
    if spec.eot_token_id is not None:
        assert decode_response(tokenizer, spec, [*ids, spec.eot_token_id, *ids]) == "#### 12"
    assert decode_response(tokenizer, spec, ids) == "#### 12"


@needs_arith
@pytest.mark.parametrize(
    "model_fixture", ["tiny_model", pytest.param("tiny_dream", marks=pytest.mark.slow)]
)
def test_cli_writes_json_and_prints_table(model_fixture, request, tmp_path, capsys):
    model = request.getfixturevalue(model_fixture)  # a tiny LLaDA, or Dream (shifted logits)
    output = tmp_path / "out.json"
    main(["--model", str(model), "--limit", "3", "--decoder", "threshold",
          "--gen_length", "32", "--block_length", "16", "--batch_size", "2",
          "--threshold", "0.7", "--progress", "false", "--output", str(output)])  # fmt: skip
    written = json.loads(output.read_text())
    assert all(key in written for key in REQUIRED)
    assert written["task"] == "arith" and written["num_examples"] == 3
    assert written["decoder"]["threshold"] == 0.7 and not written["decoder"]["r2"]
    assert 1 <= written["mean_nfe"] <= 32
    assert "mean_nfe" in capsys.readouterr().out


def test_cli_defaults_and_missing_embedded_model(monkeypatch, tmp_path):
    embedded = EvaluateArgs().resolve(task_class("arith"))
    assert (embedded.gen_length, embedded.block_length) == (EMBEDDED_GEN_LENGTH,
                                                           EMBEDDED_BLOCK_LENGTH)  # fmt: skip
    assert embedded.r2 and embedded.policy == "threshold"
    gsm8k = EvaluateArgs(decoder="factor", factor=2.0).resolve(task_class("gsm8k"))
    assert (gsm8k.gen_length, gsm8k.policy, gsm8k.factor) == (256, "factor", 2.0)
    monkeypatch.setattr(evaluate_module, "EMBEDDED_MODEL_DIR", tmp_path / "no-model")
    with pytest.raises(FileNotFoundError, match="embedded default model folder .* does not exist"):
        main(["--limit", "2", "--model", str(tmp_path / "no-model")])
