"""r2sft.threads: the OpenMP settings of a CPU run, and the shared-CPU bench's plumbing."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.threads import (
    SMALL_MODEL_THREADS,
    WAIT_POLICY,
    count_parameters,
    cpu_thread_env,
    main,
)


def test_count_parameters_reads_the_safetensors_headers(tiny_model):
    with safe_open(str(tiny_model / "model.safetensors"), framework="pt") as weights:
        expected = sum(weights.get_tensor(name).numel() for name in weights.keys())
    assert count_parameters(tiny_model) == expected
    assert count_parameters("org/dllm") is None  # a Hub id: not read
    assert count_parameters(tiny_model.parent) is None  # a folder without weights


def test_a_small_model_gets_few_threads_and_a_passive_wait(tiny_model):
    assert cpu_thread_env(tiny_model, environ={}, cores=16) == {
        "OMP_NUM_THREADS": str(SMALL_MODEL_THREADS),
        "OMP_WAIT_POLICY": WAIT_POLICY,
    }
    assert cpu_thread_env(tiny_model, environ={}, cores=1)["OMP_NUM_THREADS"] == "1"
    # A model of unknown size (a Hub id, no model) is given every core.
    assert cpu_thread_env("org/dllm", environ={}, cores=16)["OMP_NUM_THREADS"] == "16"
    assert cpu_thread_env(None, environ={}, cores=16)["OMP_NUM_THREADS"] == "16"


def test_the_users_settings_are_kept(tiny_model):
    mine = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert cpu_thread_env(tiny_model, environ=mine, cores=16) == mine
    # A spin count of the user's own: no wait policy is added over it.
    assert cpu_thread_env(tiny_model, environ={"GOMP_SPINCOUNT": "5"}, cores=2) == {
        "OMP_NUM_THREADS": "2"
    }


@pytest.mark.skipif(not EMBEDDED_MODEL_DIR.is_dir(), reason="embedded model not built")
def test_main_prints_shell_exports_for_the_embedded_model(monkeypatch, capsys):
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    line = main(["--model", str(EMBEDDED_MODEL_DIR)])
    assert capsys.readouterr().out.strip() == line
    assert line.startswith("export OMP_NUM_THREADS=") and "OMP_WAIT_POLICY=PASSIVE" in line


def test_bench_settings_and_summary(tiny_model):
    import os

    from test_benches import load_bench

    bench = load_bench("bench_shared_cpu")
    cores = str(os.cpu_count())
    assert bench.setting_env("before", str(tiny_model)) == ("before", {"OMP_NUM_THREADS": cores})
    assert bench.setting_env("after", str(tiny_model)) == (
        "after", cpu_thread_env(tiny_model, environ={})
    )  # fmt: skip
    assert bench.setting_env("t1:OMP_NUM_THREADS=1,GOMP_SPINCOUNT=0", "m") == (
        "t1", {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "0"}
    )  # fmt: skip
    with pytest.raises(ValueError, match="NAME:VAR=VALUE"):
        bench.setting_env("t1:CUDA_VISIBLE_DEVICES=0", "m")
    runs = [
        {"setting": "a", "load": load, "round": r, "steps_per_s": speed, "decode_s": seconds}
        for r, (load, speed, seconds) in enumerate(
            [("idle", 10.0, 1.0), ("loaded", 4.0, 3.0), ("idle", 8.0, 2.0), ("loaded", 6.0, 2.0)]
        )
    ]
    for run in runs:
        run["round"] //= 2
    summary = bench.summarize(runs, ["a"])["a"]
    assert summary["steps_per_s"] == {"idle": 9.0, "loaded": 5.0, "loaded_over_idle": 5.0 / 9.0}
    assert summary["decode_s"]["loaded_over_idle"] == 2.5 / 1.5
    assert summary["rounds_loaded_over_idle_steps_per_s"] == [0.4, 0.75]
