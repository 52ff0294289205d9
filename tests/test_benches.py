"""bench/bench_cache.py and bench/bench_scale.py run end to end at tiny shapes on a CPU;
bench/check_gsm8k_answers.py on three problems."""

import importlib.util
import json
import sys

import pytest

from r2sft.paths import REPO_ROOT


def load_bench(name: str):
    bench = str(REPO_ROOT / "bench")
    if bench not in sys.path:  # bench_scale imports its sibling bench_cache, as when run
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_bench_cache_reports_every_mode_and_batch_size(tmp_path):
    bench = load_bench("bench_cache")
    output = tmp_path / "cache.json"
    report = bench.main([
        "--d_model", "64", "--n_layers", "2", "--vocab_size", "256", "--prompt_length", "20",
        "--gen_length", "32", "--block_length", "8", "--steps", "16", "--batch_sizes", "1,3",
        "--repeats", "2", "--cache", "none,prefix,dual,dual:2", "--output", str(output),
    ])  # fmt: skip
    assert output.is_file()
    assert set(report) >= {"shape", "results", "speedup_prefix_vs_none", "speedup_dual_vs_none",
                           "token_agreement_dual_vs_none"}  # fmt: skip
    rows = {(row["cache"], row["batch_size"]) for row in report["results"]}
    modes = ("none", "prefix", "dual", "dual:2")
    assert rows == {(mode, size) for mode in modes for size in (1, 3)}
    for row in report["results"]:
        assert set(row) >= {"cache", "batch_size", "tokens_per_s", "forwards_per_s", "mean_nfe"}
        assert row["mean_nfe"] == 16  # the scripted schedule: 4 forwards per block of 8
        assert row["tokens_per_s"] > 0
    none16 = next(r for r in report["results"] if r["cache"] == "none" and r["batch_size"] == 3)
    dual16 = next(r for r in report["results"] if r["cache"] == "dual" and r["batch_size"] == 3)
    assert report["speedup_dual_vs_none"] == pytest.approx(
        dual16["tokens_per_s"] / none16["tokens_per_s"]
    )
    assert 0.0 <= report["token_agreement_dual_vs_none"] <= 1.0


def test_bench_scale_tiny_decodes_and_takes_a_lora_step_on_cpu():
    bench = load_bench("bench_scale")
    report = bench.main(["--tiny", "--device", "cpu"])
    assert report["shape"]["n_layers"] == 2 and report["device"] == "cpu"
    modes = {(row["cache"], row["batch_size"]) for row in report["decode"]}
    assert modes == {(mode, size) for mode in ("none", "dual") for size in (1, 2)}
    assert all(row["mean_nfe"] == 8 for row in report["decode"])
    step = report["lora_step"]
    assert step["trainable_parameters"] > 0 and step["loss"] > 0
    assert step["activation_checkpointing"]
    assert step["peak_memory_gib"] is None  # measured on GPUs only


def test_check_gsm8k_answers_passes_final_answers_and_fails_withdrawn_ones(tmp_path):
    rows = [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
        {"question": "A car costs $1,200 and tax is $300. Total?", "answer": "#### 1,500"},
        {"question": "Half of 10?", "answer": "10/2=<<10/2=5>>5\n#### 5"},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = load_bench("check_gsm8k_answers").main(["--data", str(tmp_path)])
    for shape, result in report.items():
        expected = 0 if shape.endswith("_control") else result["total"]
        assert result["passed"] == expected, (shape, result)
    assert report["space_thousands"]["total"] == 1  # only 1500 has thousands to separate
