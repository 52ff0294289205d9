"""train.py under 2 processes on CPU: DDP and ZeRO-2 match one process; ZeRO-3 LoRA export.

Both runs see the same 8 samples per optimizer step (2 x 4 vs 1 x 8) and the same hashed
masking noise, so with plain SGD the losses and the trained weights must agree to float
precision: the loss normalisation does not depend on the process count. Settings follow
../shared/stack-notes.md (gloo, one thread per process, never --cpu with DeepSpeed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import make_collected_data, make_tiny_model

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_dist")
    model_dir = make_tiny_model(root / "model")
    return {"model": model_dir, "data": make_collected_data(root / "collect", model_dir, 16)}


def run_train(
    tiny, output_dir: Path, launch: list[str], batch: int, extra_env=None, extra_args=()
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launch, "train.py",
        "--model", str(tiny["model"]), "--data_dir", str(tiny["data"]),
        "--output_dir", str(output_dir), "--max_steps", "2", "--save_steps", "2",
        "--logging_steps", "1", "--per_device_train_batch_size", str(batch),
        "--eval_limit", "0", "--report_to", "none", "--optim", "sgd",
        "--learning_rate", "1.0", "--objective", "trajectory", *extra_args,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def assert_same_run(reference: Path, other: Path) -> None:
    assert losses(other) == pytest.approx(losses(reference), rel=1e-5)
    assert len(losses(other)) == 2
    a = load_file(str(reference / "final" / "model.safetensors"))
    b = load_file(str(other / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


@pytest.fixture(scope="module")
def single(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run_train(tiny, out, ["--num_processes", "1"], batch=8)
    return out


def test_ddp_two_processes_match_one_process(tiny, single, tmp_path):
    run_train(
        tiny,
        tmp_path,
        ["--multi_gpu", "--num_processes", "2"],
        batch=4,
        extra_env={"ACCELERATE_USE_CPU": "1"},  # real gloo DDP (stack-notes)
    )
    assert_same_run(single, tmp_path)


def test_deepspeed_zero2_two_processes_match_one_process(tiny, single, tmp_path):
    pytest.importorskip("deepspeed")
    config = REPO / "launch" / "accelerate" / "zero2.yaml"
    run_train(tiny, tmp_path, ["--config_file", str(config), "--num_processes", "2"], batch=4)
    assert_same_run(single, tmp_path)


def test_deepspeed_zero3_lora_exports_the_merged_model(tiny, tmp_path):
    """ZeRO-3 shards every weight; final/ must still be the whole merged model."""
    pytest.importorskip("deepspeed")
    from peft import PeftModel

    from r2sft.specs import load_model

    config = REPO / "launch" / "accelerate" / "zero3.yaml"
    run_train(
        tiny,
        tmp_path,
        ["--config_file", str(config), "--num_processes", "2"],
        batch=4,
        extra_args=[
            "--lora",
            "true",
            "--objective",
            "certainty_forcing",
            "--learning_rate",
            "0.05",
        ],
    )
    merged = load_model(str(tmp_path / "final"))
    base = load_model(str(tiny["model"]))
    adapted = PeftModel.from_pretrained(base.model, str(tmp_path / "final" / "adapter")).eval()
    ids = torch.randint(6, 200, (2, 16))
    with torch.no_grad():
        got, expected = merged.model(input_ids=ids).logits, adapted(input_ids=ids).logits
        untouched = load_model(str(tiny["model"])).model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, untouched, atol=1e-4)
