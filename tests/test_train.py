"""train.py / r2sft.training: collator, trainer loss, LoRA, tracking, resume, export.

A tiny random LLaDA (2 layers, d_model 32) and a hand-made collected data set in the
format of docs/architecture.md stand in for the embedded model and collect.py's output.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from r2sft.modeling import DreamModel, LLaDAConfig, LLaDAModelLM
from r2sft.specs import encode_prompt
from r2sft.training import TrainConfig, TrajectoryCollator, load_trajectories
from r2sft.training.data import MissingDataError
from r2sft.training.export import model_card, push_to_hub

GEN_LENGTH = 32
BLOCK_LENGTH = 8
NUM_ROWS = 12


def make_tiny_model(folder: Path) -> Path:
    """A random tiny LLaDA with the embedded tokenizer, saved as a model folder."""
    from r2sft.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(vocab_size=300, num_problems=60)
    config = LLaDAConfig(
        d_model=32,
        n_heads=2,
        n_kv_heads=2,
        n_layers=2,
        mlp_hidden_size=64,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=512,
        rope_theta=10000.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        init_device="cpu",
    )
    torch.manual_seed(0)
    model = LLaDAModelLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_collected_data(folder: Path, model_dir: Path, num_rows: int = NUM_ROWS) -> Path:
    """collect.py's output layout: ``folder/selected`` with the trajectory columns."""
    from transformers import AutoTokenizer

    from r2sft.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = get_task("arith")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for example in task.load("train", limit=num_rows):
        prompt_ids = encode_prompt(tokenizer, task.user_message(example))
        answer = tokenizer(example.meta["solution"], add_special_tokens=False)["input_ids"]
        answer = (answer + [tokenizer.eos_token_id] * GEN_LENGTH)[:GEN_LENGTH]
        # Semi-AR trajectory: block b commits its tokens at steps 3b .. 3b+2, random order.
        in_block = torch.randint(0, 3, (GEN_LENGTH,), generator=generator)
        step_map = (torch.arange(GEN_LENGTH) // BLOCK_LENGTH * 3 + in_block).tolist()
        rows.append(
            {
                "prompt_id": example.id,
                "prompt": "",
                "prompt_ids": prompt_ids,
                "response": "",
                "response_ids": answer,
                "step_map": step_map,
                "rule_map": [0] * GEN_LENGTH,
                "nfe": max(step_map) + 1,
                "r_s": 1.0,
                "r_t": 2.0,
                "r_total": 3.0,
                "correct": True,
                "seed": 0,
                "decoder": json.dumps({"gen_length": GEN_LENGTH, "block_length": BLOCK_LENGTH}),
                "reference": example.reference,
            }
        )
    Dataset.from_list(rows).save_to_disk(str(folder / "selected"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    model_dir = make_tiny_model(root / "model")
    data_dir = make_collected_data(root / "collect", model_dir)
    return {"model": model_dir, "data": data_dir, "root": root}


@pytest.fixture(scope="module")
def dream(tiny_dream: Path, tmp_path_factory) -> dict[str, Path]:
    """The tiny Dream of conftest.py and a collected data set in its tokens."""
    root = tmp_path_factory.mktemp("dream")
    return {"model": tiny_dream, "data": make_collected_data(root / "collect", tiny_dream)}


def tiny_config(tiny: dict[str, Path], output_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        model=str(tiny["model"]),
        data_dir=str(tiny["data"]),
        output_dir=str(output_dir),
        max_steps=4,
        save_steps=2,
        logging_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        eval_limit=0,
        report_to="none",
    )
    values.update(overrides)
    return TrainConfig(**values)


# ----------------------------------------------------------------------------- data


def test_collator_builds_right_padded_canvas_with_masks_and_step_map():
    rows = [
        {"prompt_ids": [7, 8], "response_ids": [9, 0, 0], "step_map": [1, 0, 2]},
        {"prompt_ids": [7, 8, 6, 5], "response_ids": [1, 2, 0], "step_map": [0, 0, 1]},
    ]
    rows[0]["sample_index"], rows[1]["sample_index"] = 4, 9
    batch = TrajectoryCollator(pad_token_id=3, eos_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[7, 8, 9, 0, 0, 3, 3], [7, 8, 6, 5, 1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7]
    assert batch["answer_mask"].tolist() == [[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]]
    assert batch["step_map"].tolist() == [[-1, -1, 1, 0, 2, -1, -1], [-1, -1, -1, -1, 0, 0, 1]]
    assert torch.equal(batch["loss_mask"], batch["answer_mask"])
    assert batch["sample_index"].tolist() == [4, 9]
    # Without EOS-fill supervision the first EOS stays a target, the rest of the fill not.
    batch = TrajectoryCollator(pad_token_id=3, eos_token_id=0, supervise_eos_fill=False)(rows)
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1]]
    padded = TrajectoryCollator(pad_token_id=3, eos_token_id=0, pad_to_multiple_of=4)(rows)
    assert padded["input_ids"].shape == (2, 8)


def test_missing_data_error_prints_the_collect_command(tmp_path):
    with pytest.raises(MissingDataError, match="collect.py --output_dir"):
        load_trajectories(tmp_path / "nowhere")


def test_missing_column_is_named(tmp_path):
    Dataset.from_list([{"prompt_ids": [1], "response_ids": [2]}]).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="step_map"):
        load_trajectories(tmp_path / "d")


def test_load_trajectories_adds_a_stable_sample_index(tiny):
    dataset = load_trajectories(tiny["data"], max_samples=5)
    assert dataset["sample_index"] == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- LoRA


def test_lora_target_that_matches_nothing_is_an_error(tiny, tmp_path):
    from r2sft.training.run import build_model

    config = tiny_config(tiny, tmp_path, lora=True, lora_target_modules="q_proj,o_proj")
    with pytest.raises(ValueError, match="o_proj"):
        build_model(config)
    loaded = build_model(tiny_config(tiny, tmp_path, lora=True))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("transformer.ff_out" in n and "blocks" not in n for n in trainable)


# ----------------------------------------------------------------------------- trainer


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("objective", ["llada", "trajectory", "certainty_forcing"])
def test_each_objective_trains_and_writes_checkpoints(tiny, tmp_path, objective):
    from r2sft.training import train

    result = train(tiny_config(tiny, tmp_path, objective=objective, max_steps=2, save_steps=1))
    history = result["trainer"].state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert (tmp_path / "checkpoint-1").is_dir() and (tmp_path / "checkpoint-2").is_dir()
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_gradient_accumulation_gives_the_same_update_as_one_big_batch(tiny, tmp_path):
    """batch 4 x accumulation 2 == batch 8 x 1: the loss is normalised per optimizer step."""
    from r2sft.training import train

    # Plain SGD: the weight change is the gradient itself (Adam would amplify float noise of
    # near-zero gradients; canvases of the two runs are padded to different widths).
    common = dict(max_steps=1, save_steps=1, objective="llada", learning_rate=1.0, optim="sgd")
    big = train(tiny_config(tiny, tmp_path / "big", per_device_train_batch_size=8, **common))
    accum = train(
        tiny_config(
            tiny,
            tmp_path / "acc",
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            **common,
        )
    )
    loss_big = [e["loss"] for e in big["trainer"].state.log_history if "loss" in e]
    loss_acc = [e["loss"] for e in accum["trainer"].state.log_history if "loss" in e]
    assert loss_acc[0] == pytest.approx(loss_big[0], rel=1e-4)
    w_big, w_acc = _final_weights(tmp_path / "big/final"), _final_weights(tmp_path / "acc/final")
    for name in w_big:
        assert torch.allclose(w_big[name], w_acc[name], atol=1e-5), name


def test_resume_from_checkpoint_continues_exactly(tiny, tmp_path):
    from r2sft.training import train

    straight = tmp_path / "straight"
    train(tiny_config(tiny, straight, objective="trajectory"))
    # A second run that only has checkpoint-2 of the first, resumed from it.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    train(tiny_config(tiny, resumed, objective="trajectory", resume_from_checkpoint="latest"))
    a, b = _final_weights(straight / "final"), _final_weights(resumed / "final")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    state_a = json.loads((straight / "checkpoint-4/trainer_state.json").read_text())
    state_b = json.loads((resumed / "checkpoint-4/trainer_state.json").read_text())
    loss_a = [e["loss"] for e in state_a["log_history"] if "loss" in e and e["step"] > 2]
    loss_b = [e["loss"] for e in state_b["log_history"] if "loss" in e and e["step"] > 2]
    assert loss_a == loss_b and len(loss_a) == 2


def test_resume_without_checkpoint_is_a_clear_error(tiny, tmp_path):
    from r2sft.training import train

    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tiny, tmp_path, resume_from_checkpoint="latest"))


# ----------------------------------------------------------------------------- export


def test_lora_export_round_trip(tiny, tmp_path):
    """final/ holds the merged model (loads with load_model), adapter/ beside it, a card."""
    from peft import PeftModel

    from r2sft.specs import load_model
    from r2sft.training import train

    train(tiny_config(tiny, tmp_path, lora=True, max_steps=2, save_steps=2, learning_rate=1e-2))
    final = tmp_path / "final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    assert (final / "README.md").read_text().startswith("---")
    merged = load_model(str(final))
    base = load_model(str(tiny["model"]))
    adapted = PeftModel.from_pretrained(base.model, str(final / "adapter")).eval()
    ids = torch.randint(6, 200, (2, 20))
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        got = merged.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert merged.spec == base.spec
    # The adapter moved the model away from the base.
    with torch.no_grad():
        assert not torch.allclose(got, load_model(str(tiny["model"])).model(input_ids=ids).logits)


def test_final_carries_the_base_model_decoder_preset(tiny, tmp_path):
    """The base model's r2sft_decoding.json travels into final/ and the card states it."""
    from r2sft.decoding.presets import PRESET_FILE, DecoderPreset, read_preset, write_preset
    from r2sft.training import train

    base = tmp_path / "base"
    shutil.copytree(tiny["model"], base)
    preset = DecoderPreset(
        "p", {"r2": {"tau_s": 0.4, "early_exit": True}}, {"task": "arith", "split": "dev"}
    )
    write_preset(base, preset)
    train(tiny_config(tiny, tmp_path / "run", model=str(base), max_steps=1, save_steps=1))
    final = tmp_path / "run" / "final"
    assert read_preset(final / PRESET_FILE).decoders == preset.decoders
    card = (final / "README.md").read_text()
    assert f"`{PRESET_FILE}` holds the decoder settings" in card and '"tau_s": 0.4' in card
    # Without a preset the card says the model decodes with the official values.
    train(tiny_config(tiny, tmp_path / "plain", max_steps=1, save_steps=1))
    assert not (tmp_path / "plain" / "final" / PRESET_FILE).exists()
    assert "official R² values" in (tmp_path / "plain" / "final" / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_train_runs_on_a_tiny_dream(dream, tmp_path, lora):
    """Dream (shifted logits, Qwen2 module names) through train.py: loss, a tracked checkpoint,
    a final model that loads back as r2sft's Dream with its tokenizer."""
    from r2sft.specs import load_model
    from r2sft.training import train
    from r2sft.training.tracking import read_metrics

    config = tiny_config(
        dream, tmp_path, lora=lora, max_steps=2, save_steps=2, objective="trajectory",
        eval_limit=2, per_device_eval_batch_size=2, gen_length=GEN_LENGTH,
        block_length=BLOCK_LENGTH,
    )  # fmt: skip
    result = train(config)
    losses = [e["loss"] for e in result["trainer"].state.log_history if "loss" in e]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 2]
    assert (tmp_path / "checkpoint-2" / "r2sft_metrics.json").is_file()
    assert (tmp_path / "final" / "adapter" / "adapter_config.json").is_file() == lora
    final = load_model(str(tmp_path / "final"))
    base = load_model(str(dream["model"]))
    assert type(final.model) is DreamModel and final.spec == base.spec
    moved = [
        name
        for name, weight in _final_weights(tmp_path / "final").items()
        if not torch.equal(weight, base.model.state_dict()[name])
    ]
    assert moved
    if lora:  # only the adapted projections of the layers change, never lm_head
        assert all(".self_attn." in name or ".mlp." in name for name in moved)


def test_model_card_has_before_after_table():
    config = TrainConfig(model="base/model", objective="certainty_forcing", train_block_length=32)
    records = [
        {"step": 0, "loss": None, "accuracy": 0.5, "mean_nfe": 20.0, "mean_r_total": 9.0,
         "tokens_per_forward": 3.2, "num_prompts": 8},
        {"step": 40, "loss": 1.5, "accuracy": 0.55, "mean_nfe": 11.0, "mean_r_total": 4.0,
         "tokens_per_forward": 5.8, "num_prompts": 8},
    ]  # fmt: skip
    card = model_card(config, {"num_trajectories": 12, "gen_length": 32}, records)
    assert "base_model: base/model" in card
    assert "| mean_nfe | 20 | 11 |" in card
    assert "| accuracy | 0.5 | 0.55 |" in card
    assert "certainty forcing" in card


def test_push_to_hub_needs_a_token_and_never_prints_it(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        push_to_hub(tmp_path, "me/model")

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))
            return f"https://hub/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))

    secret = "hf_secret_value_123"
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_to_hub(tmp_path, "me/model", private=True)
    assert url == "https://hub/me/model"
    assert calls[0] == (
        "create",
        "me/model",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert calls[1][1]["folder_path"] == str(tmp_path)
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert all(secret not in repr(call) for call in calls)


# ----------------------------------------------------------------------------- tracking


def test_a_bad_tracking_decoder_is_named_before_the_model_loads(tiny, tmp_path, monkeypatch):
    """The tracking decoder is resolved from the data's canvas before the (long) model load:
    a block that does not divide the canvas is an error first, with nothing written."""
    import r2sft.training.run
    from r2sft.training import train

    def no_build(config):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(r2sft.training.run, "build_model", no_build)
    config = tiny_config(tiny, tmp_path / "run", eval_limit=4, block_length=12)
    with pytest.raises(ValueError, match="block_length 12"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_every_save_is_tracked_and_resume_keeps_the_curves(tiny, tmp_path):
    """Step 0 and each checkpoint decode the held-out prompts; a resumed run appends."""
    pytest.importorskip("r2sft.evaluate")
    from r2sft.training import train
    from r2sft.training.tracking import read_metrics

    config = tiny_config(
        tiny, tmp_path, eval_limit=4, per_device_eval_batch_size=4, report_to="tensorboard",
        gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH, logging_steps=3,
    )  # fmt: skip
    train(config)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[0]["loss"] is None and records[1]["loss"] > 0
    # Saves log the loss even off the logging grid (steps 1, 3): each checkpoint's own loss.
    history = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    logged = {e["step"]: e["loss"] for e in history["log_history"] if "loss" in e}
    assert sorted(logged) == [1, 2, 3, 4]
    assert [records[1]["loss"], records[2]["loss"]] == [logged[2], logged[4]]
    for step in (2, 4):
        saved = json.loads((tmp_path / f"checkpoint-{step}" / "r2sft_metrics.json").read_text())
        for key in ("loss", "accuracy", "mean_nfe", "mean_r_total", "tokens_per_forward"):
            assert isinstance(saved[key], float | int), key
        assert 1 <= saved["mean_nfe"] <= GEN_LENGTH and 0 <= saved["accuracy"] <= 1
        assert saved == records[[r["step"] for r in records].index(step)]
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    assert list((tmp_path / "runs").glob("*/events.out.tfevents.*"))
    assert "| mean_nfe |" in (tmp_path / "final" / "README.md").read_text()

    # Resume from checkpoint-2 in the same folder (dropping the later checkpoints, which is
    # what --overwrite_output_dir allows): steps after 2 are re-tracked, not doubled.
    again = dataclasses.replace(
        config, resume_from_checkpoint=str(tmp_path / "checkpoint-2"), overwrite_output_dir=True
    )
    train(again)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 2, 4]


class _Killed(Exception):
    """Stands in for kill -9 right after a checkpoint's save."""


def test_a_kill_right_after_a_save_loses_no_tracking_and_adds_no_step(tiny, tmp_path, monkeypatch):
    """Killed after checkpoint-4 (the last) was saved but before it was tracked and exported:
    the resumed run tracks checkpoint-4 from its own weights, trains no step past max_steps
    (the Trainer alone would take step 5 here: 4 steps are not a whole number of epochs) and
    exports those weights."""
    from r2sft.training import train
    from r2sft.training.tracking import CheckpointTracker, read_metrics

    config = tiny_config(
        tiny, tmp_path / "run", eval_limit=4, per_device_eval_batch_size=4,
        gen_length=GEN_LENGTH, block_length=BLOCK_LENGTH,
    )  # fmt: skip
    reference = train(dataclasses.replace(config, output_dir=str(tmp_path / "straight")))

    track = CheckpointTracker.track

    def killed_at_step_4(self, state, checkpoint_dir):
        if checkpoint_dir is not None and checkpoint_dir.name == "checkpoint-4":
            raise _Killed
        return track(self, state, checkpoint_dir)

    monkeypatch.setattr(CheckpointTracker, "track", killed_at_step_4)
    with pytest.raises(_Killed):
        train(config)
    monkeypatch.setattr(CheckpointTracker, "track", track)
    run = tmp_path / "run"
    assert [r["step"] for r in read_metrics(run)] == [0, 2]
    assert not (run / "checkpoint-4" / "r2sft_metrics.json").exists()

    train(dataclasses.replace(config, resume_from_checkpoint="latest"))
    keys = ("step", "loss", "accuracy", "mean_nfe", "mean_r_total")
    expected = [{k: r[k] for k in keys} for r in reference["records"]]
    assert [{k: r[k] for k in keys} for r in read_metrics(run)] == expected
    assert json.loads((run / "checkpoint-4" / "r2sft_metrics.json").read_text())["step"] == 4
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    final, saved = _final_weights(run / "final"), _final_weights(run / "checkpoint-4")
    assert all(torch.equal(final[name], saved[name]) for name in saved)


# ----------------------------------------------------------------------------- configs


def test_shipped_configs_parse_and_the_embedded_one_spells_out_the_defaults():
    from r2sft.config import parse_config

    repo = Path(__file__).resolve().parent.parent
    embedded = parse_config(
        TrainConfig, args=["--config", str(repo / "configs/train_embedded.yaml")]
    )
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        got, default = getattr(embedded, field.name), getattr(defaults, field.name)
        if field.name in ("model", "data_dir", "output_dir"):  # relative in the YAML
            assert Path(default) == repo / got, field.name
        else:
            assert got == default, field.name
    for name in ("llada_8b_gsm8k_train.yaml", "dream_7b_gsm8k_train.yaml"):
        big = parse_config(TrainConfig, args=["--config", str(repo / "configs" / name)])
        assert big.lora and big.bf16 and big.gradient_checkpointing and big.task == "gsm8k"


def test_dream_configs_carry_the_official_dream_r2_settings():
    from r2sft.collect import CollectConfig
    from r2sft.config import parse_config
    from r2sft.tasks import task_class

    official = dict(
        gen_length=256, block_length=32, policy="threshold", threshold=0.9, r2=True, window=3,
        tau_s=0.8, u_max=1, token_cluster_mode="confidence", temporal_k=3, tau_t=0.8,
        temporal_agg="last",
    )  # fmt: skip
    repo = Path(__file__).resolve().parent.parent
    collect = parse_config(
        CollectConfig, args=["--config", str(repo / "configs/dream_7b_gsm8k.yaml")]
    )
    train = parse_config(
        TrainConfig, args=["--config", str(repo / "configs/dream_7b_gsm8k_train.yaml")]
    )
    assert collect.model == train.model == "Dream-org/Dream-v0-Instruct-7B"
    assert train.data_dir == collect.output_dir
    for decoder in (collect.base_decoder(), train.resolve(task_class(train.task))):
        assert {key: getattr(decoder, key) for key in official} == official
