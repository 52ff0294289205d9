"""The benches (bench_cache, bench_scale, gpu_check) run end to end at tiny shapes on a CPU;
their parsing, FLOP counting and forward timing are checked on hand-built inputs;
bench/check_gsm8k_answers.py runs on three problems."""

import importlib.util
import json
import sys

import pytest
import torch

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


def test_decode_mode_sets_the_cache_and_any_decoder_field():
    bench = load_bench("bench_cache")
    schedule = {"gen_length": 32, "block_length": 8, "steps": 16}
    plain = bench.decode_mode("dual", schedule)
    assert (plain.cache, plain.cache_refresh, plain.policy, plain.steps) == ("dual", 0, "fixed", 16)
    assert bench.decode_mode("dual:4", schedule).cache_refresh == 4
    custom = bench.decode_mode("prefix+cache_refresh=2+temperature=0.5+early_exit=true", schedule)
    assert (custom.cache, custom.cache_refresh, custom.temperature) == ("prefix", 2, 0.5)
    assert custom.early_exit is True and custom.record_trace is False


@pytest.mark.parametrize(
    ("label", "named"),
    [
        ("dual+suffix_windw=32", "suffix_windw"),  # unknown field, named with the valid ones
        ("dual+threshold=2", "confidence"),  # out of range
        ("dual+temperature=hot", "temperature"),  # wrong type
        ("duel", "'cache' has value 'duel'"),
        ("dual+compile", "FIELD=VALUE"),
        ("dual:x", "dual:x"),
    ],
)
def test_decode_mode_rejects_a_bad_label_naming_it(label, named):
    bench = load_bench("bench_cache")
    with pytest.raises(ValueError, match="decode mode") as error:
        bench.decode_mode(label, {"gen_length": 32, "block_length": 8, "steps": 16})
    assert named in str(error.value)


def test_bench_scale_fails_on_a_bad_mode_before_building_anything(monkeypatch):
    bench = load_bench("bench_scale")
    monkeypatch.setattr(bench, "build_random_model", lambda *a: pytest.fail("model was built"))
    with pytest.raises(ValueError, match="unknown config key 'not_a_field'"):
        bench.main(["--tiny", "--device", "cpu", "--modes", "dual,dual+not_a_field=1"])


def test_forward_shape_counts_the_matrices_of_a_real_block():
    bench = load_bench("bench_scale")
    config = bench.LLaDAConfig(**bench.TINY_SHAPE)
    shape = bench.ForwardShape.of(config)
    model = bench.build_random_model(config, "cpu", torch.float32)
    block = model.model.transformer.blocks[0]
    assert shape.block_linear_params == sum(p.numel() for p in block.parameters() if p.dim() == 2)
    assert shape.head_params == 64 * 512
    # 2 rows x 2 layers x (2 x 10 x 40960 linear + 4 x 10 x 12 x 64 attention) + 2 x 2 x 3 x 32768
    assert shape.forward_flops(2, 10, 12, 3) == 2 * 2 * (819200 + 30720) + 2 * 2 * 3 * 32768


class _Model:
    """Stands in for a model: records calls, has the attributes the sampler reads."""

    supports_decode_cache = True
    config = "the config"

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, kv_cache=None, output_positions=None, attention_mask=None):
        self.seen.append(None if kv_cache is None else kv_cache.mode)
        return "logits"


def test_forward_timer_classifies_times_and_counts_each_call():
    from types import SimpleNamespace

    bench = load_bench("bench_scale")
    shape = bench.ForwardShape(n_layers=1, d_model=2, block_linear_params=10, head_params=100)
    model = _Model()
    timer = bench.ForwardTimer(model, shape, "cpu")
    assert timer.supports_decode_cache and timer.config == "the config"
    ids = torch.zeros((3, 20), dtype=torch.long)
    head = torch.zeros((3, 4), dtype=torch.long)
    assert timer(input_ids=ids, output_positions=head) == "logits"  # no cache: full
    timer(input_ids=ids, kv_cache=SimpleNamespace(mode="fill"), output_positions=head)
    timer(input_ids=ids[:, :4], kv_cache=SimpleNamespace(mode="dual"), output_positions=head)
    assert model.seen == [None, "fill", "dual"]
    summary = timer.summary(seconds=10.0, ceiling_tflops=1e-12)  # 1 FLOP/s
    assert (summary["full_forwards"], summary["cached_forwards"]) == (2, 1)
    full = 3 * (2 * 20 * 10 + 4 * 20 * 20 * 2 + 2 * 4 * 100)
    cached = 3 * (2 * 4 * 10 + 4 * 4 * 20 * 2 + 2 * 4 * 100)  # attends to the 20 filled
    assert summary["tflop"] * 1e12 == pytest.approx(2 * full + cached)
    assert summary["roofline_fraction"] == pytest.approx((2 * full + cached) / 10.0)
    assert 0 < summary["block_opening_share"] <= summary["forward_share"] < 1
    late = bench.ForwardTimer(model, shape, "cpu", deadline=0.0)
    with pytest.raises(bench.DecodeBudgetExceeded):
        late(input_ids=ids)


def test_bench_scale_tiny_decodes_compares_with_llama_and_times_lora_steps_on_cpu():
    bench = load_bench("bench_scale")
    report = bench.main(["--tiny", "--device", "cpu"])
    assert report["shape"]["n_layers"] == 2 and report["device"] == "cpu"
    assert report["ceiling"]["matmul_tflops"] > 0
    rows = {(row["mode"], row["batch_size"]): row for row in report["decode"]}
    assert set(rows) == {(mode, size) for mode in ("none", "dual", "dual:4") for size in (1, 2)}
    for (mode, _), row in rows.items():
        assert row["mean_nfe"] == 16 and row["runs"] == 1 and row["tokens_per_s"] > 0
        assert 0 < row["block_opening_share"] <= row["forward_share"]
        assert row["roofline_fraction"] > 0
        # 4 blocks of 8, 4 forwards each (2 commits per forward): none runs all 16 in
        # full; dual fills once per block; dual:4 refills after 4 commits, every 2nd forward.
        full = {"none": 16, "dual": 4, "dual:4": 8}[mode]
        assert (row["full_forwards"], row["cached_forwards"]) == (full, 16 - full)
    parity = report["forward_parity"]
    assert parity["positions"] == 24 + 32 and parity["head_positions"] == 8
    for table in ("r2sft_full_ms", "llama_full_ms", "llama_step_cached_ms", "full_floor_ms"):
        assert set(parity[table]) == {"1", "2"} and all(v > 0 for v in parity[table].values())
    assert parity["full_ratio_r2sft_vs_llama"]["2"] == pytest.approx(
        parity["r2sft_full_ms"]["2"] / parity["llama_full_ms"]["2"]
    )
    step = report["lora_step"]
    assert step["trainable_parameters"] > 0 and step["loss"] > 0
    assert step["activation_checkpointing"]
    assert step["timed_steps"] == len(step["step_seconds"]) == 3 and step["warmup_steps"] == 2
    assert step["tokens_per_s"] == pytest.approx(2 * 32 / step["seconds"])
    assert 0 < step["fraction_of_ceiling"]
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


def test_bench_scale_stops_a_row_over_its_budget_and_skips_past_the_deadline(capsys):
    bench = load_bench("bench_scale")
    args = ["--tiny", "--device", "cpu", "--parity", "false", "--modes", "none",
            "--batch_sizes", "2", "--repeats", "3"]  # fmt: skip
    report = bench.main([*args, "--row_budget_s", "0.000001"])
    (row,) = report["decode"]
    assert "over the time budget" in row["aborted"]["aborted"] and "tokens_per_s" not in row
    assert "forward_parity" not in report and "lora_step" in report
    assert "decode none B=2 repeat 1" in capsys.readouterr().err  # a progress line per decode
    late = bench.main([*args, "--deadline_s", "0"])
    assert all(late[name] == {"skipped": "deadline reached before this section"}
               for name in ("ceiling", "decode", "lora_step"))  # fmt: skip


@pytest.mark.slow  # about a minute: six interpreters start (evaluate, collect, train...)
def test_gpu_check_tiny_runs_every_section_on_cpu_into_one_json(tmp_path, monkeypatch):
    gpu_check = load_bench("gpu_check")
    monkeypatch.setattr(gpu_check, "deepspeed_installed", lambda: False)  # its run: the GPU's
    output = tmp_path / "gpu_check.json"
    gpu_check.main(["--tiny", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["gpu_check"]["sections"] == {
        "versions": "ok", "ceilings": "ok", "bench_scale": "ok", "embedded_cuda_vs_cpu": "ok",
        "startup": "ok", "lora_train_bf16": "ok", "deepspeed_zero2": "skipped",
    }  # fmt: skip
    assert report["deepspeed_zero2"]["note"] == "not installed (pip install deepspeed)"
    assert report["versions"]["packages"]["torch"] == torch.__version__
    ceilings = report["ceilings"]
    assert ceilings["matmul_tflops"] > 0 and ceilings["copy_gbps_read_plus_write"] > 0
    scale = report["bench_scale"]
    assert scale["failed_parts"] == [] and scale["lora_step"]["timed_steps"] == 3
    assert {row["batch_size"] for row in scale["decode"]} == {1, 2}
    assert set(scale["forward_parity"]["full_ratio_r2sft_vs_llama"]) == {"1", "2"}
    compared = report["embedded_cuda_vs_cpu"]
    for name in ("evaluate", "collect", "train"):
        assert compared[name]["cuda"] == {"skipped": "--tiny runs on the CPU only"}
        assert compared[name]["cpu"]["returncode"] == 0
    assert 0 <= compared["evaluate"]["cpu"]["accuracy"] <= 1
    assert compared["collect"]["cpu"]["candidates"] == 4 * 4
    assert len(compared["train"]["cpu"]["losses"]) == 2
    timeline = report["startup"]["collect"]
    launcher, collect = timeline["imports_per_process"]  # accelerate launch, then collect.py
    assert "accelerate" in launcher["packages_s"] and "r2sft" in collect["packages_s"]
    assert 0 < timeline["collect_started_s"] < timeline["summary_printed_s"] < timeline["exit_s"]
    trained = report["lora_train_bf16"]
    assert trained["returncode"] == 0 and trained["bf16"] is False and trained["final_exported"]
    assert trained["trainer_steps_per_s"] > 0 and not trained["nccl_destroy_warning"]


def test_gpu_check_skips_past_its_deadline_and_names_missing_packages(tmp_path, monkeypatch):
    gpu_check = load_bench("gpu_check")
    output = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--tiny", "--deadline_s", "0", "--output", str(output)])
    assert set(report["gpu_check"]["sections"].values()) == {"skipped"}
    assert report["bench_scale"]["note"] == "the global deadline was reached first"
    written = json.loads(output.read_text())
    assert written["gpu_check"]["sections"] == report["gpu_check"]["sections"]
    with pytest.raises(ValueError, match="unknown \\['bench'\\]"):
        gpu_check.main(["--tiny", "--sections", "bench"])
    with pytest.raises(ValueError, match="decode mode 'dual\\+nope=1'"):
        gpu_check.main(["--tiny", "--modes", "dual,dual+nope=1"])
    monkeypatch.setitem(gpu_check.SECTIONS, "startup",
                        (gpu_check.startup, ("no-such-package-r2sft",)))  # fmt: skip
    needing = gpu_check.main(["--tiny", "--sections", "startup"])
    assert needing["startup"]["status"] == "error"
    assert needing["startup"]["error"] == ("ModuleNotFoundError: startup needs no-such-package-"
                                           "r2sft, not installed here (pip install no-such-"
                                           "package-r2sft)")  # fmt: skip
    monkeypatch.setitem(gpu_check.PACKAGES, "no-such-package-r2sft", "the test")
    check = gpu_check.Check(gpu_check.GpuCheckArgs(tiny=True))
    check.work.rmdir()  # made for the run's outputs, unused here
    versions = gpu_check.versions(check, 1.0)
    assert versions["packages"]["no-such-package-r2sft"] is None
    assert versions["missing"] == {"no-such-package-r2sft": "not installed: the test needs it "
                                   "(pip install no-such-package-r2sft)"}  # fmt: skip


def test_import_times_split_per_interpreter():
    gpu_check = load_bench("gpu_check")
    header = "import time: self [us] | cumulative | imported package"
    lines = [
        header, "import time:       100 |       2000 | torch",
        "import time:        50 |        500 |   torch._C", "some other output",
        header, "import time:        10 |       3000 | r2sft", "import time: 5 | 1000 |   torch",
        "import time:        10 |        400 | json",
    ]  # fmt: skip
    first, second = gpu_check.import_times(lines)
    assert first == {"total_s": pytest.approx(0.002), "packages_s": {"torch": 0.002}}
    assert second == {"total_s": pytest.approx(0.0034),
                      "packages_s": {"r2sft": 0.003, "torch": 0.001}}  # fmt: skip


def test_bench_streaming_plain_rows_are_unpruned_whatever_the_preset(tmp_path):
    """A preset carrying a window (as r2sft.tune writes one) must not prune the plain and
    alpha rows the pruned ones are compared with; a tiny run reports every setting."""
    bench = load_bench("bench_streaming")
    from r2sft.decoding.presets import PRESET_FILE
    from r2sft.paths import EMBEDDED_MODEL_DIR

    preset = json.loads((EMBEDDED_MODEL_DIR / PRESET_FILE).read_text())
    for decoder in preset["decoders"].values():
        decoder.update(suffix_window=16, suffix_tail=0)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(preset))
    args = bench.BenchStreamingArgs(preset=str(path), decoders="threshold", gen_lengths="64",
                                    caches="none", suffix_windows="32", limit=4, repeats=1,
                                    output=str(tmp_path / "out.json"))  # fmt: skip
    settings = args.settings(args.make_task())
    assert {label: d.suffix_window for label, d in settings.items()} == {
        "threshold gen64 none plain": None, "threshold gen64 none alpha": None,
        "threshold gen64 none prune W32 T1": 32, "threshold gen64 none prune+alpha W32 T1": 32,
    }  # fmt: skip
    report = bench.run(args)
    assert set(report["settings"]) == set(settings) and report["num_examples"] == 4
    assert json.loads((tmp_path / "out.json").read_text()) == report
