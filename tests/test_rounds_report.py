"""r2sft.report (before / after on one split) and r2sft.rounds (iterative self-training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import r2sft.rounds as rounds
from r2sft.decoding.presets import DecoderPreset, write_preset
from r2sft.report import LEVERS, ReportArgs, report
from r2sft.rounds import RoundsConfig, run_rounds


def test_report_compares_the_same_decoders_on_both_models(tiny_model: Path, tmp_path: Path):
    finetuned = tmp_path / "finetuned"
    shutil.copytree(tiny_model, finetuned)
    write_preset(finetuned, DecoderPreset("p", {"threshold": {"threshold": 0.0}}))
    args = ReportArgs(base=str(tiny_model), finetuned=str(finetuned), limit=4, levers=True,
                      output=str(tmp_path / "out" / "report.json"),
                      commands=["collect.py ...", "train.py ..."])  # fmt: skip
    result = report(args)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for role in ("base", "finetuned"):
        assert set(saved[role]) == {"threshold", "r2"}
        assert {"accuracy", "mean_nfe"} <= set(saved[role]["r2"])
    # r2 is the same model with the same (official) values: the same decodes.
    assert saved["finetuned_vs_base"]["r2"] == {"mean_nfe_ratio": 1.0, "accuracy_delta": 0.0}
    # The fine-tuned folder's own preset sets its threshold decoder: 0.0 commits a whole
    # block per forward, the base's official 0.9 one token or so on a random model.
    assert saved["finetuned"]["threshold"]["decoder"]["threshold"] == 0.0
    assert saved["finetuned_vs_base"]["threshold"]["mean_nfe_ratio"] < 1.0
    assert set(saved["levers"]["base"]) == {f"{d}/{lever}" for d in ("threshold", "r2")
                                            for lever in LEVERS}  # fmt: skip
    official = saved["levers_finetuned_vs_base"]["threshold/official"]
    assert official["mean_nfe_ratio"] == 1.0  # the official values ignore the presets
    assert saved["commands"] == ["collect.py ...", "train.py ..."]


def test_report_checks_its_options_before_decoding(tmp_path: Path):
    with pytest.raises(ValueError, match="--decoders needs"):
        ReportArgs(decoders=" , ")
    with pytest.raises(ValueError, match="--decoder 'greedy' is unknown"):
        ReportArgs(decoders="threshold,greedy")


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch):
    """Stages that write what the real ones would, and scripted held-out accuracies."""
    calls: list[list[str]] = []
    accuracy = {"base": 0.6}

    def run(command: list[str]) -> None:
        calls.append(command)
        out = Path(command[command.index("--output_dir") + 1])
        if command[-1].endswith("collect.py") or "collect.py" in " ".join(command):
            out.mkdir(parents=True, exist_ok=True)
            summary = {"candidate_accuracy": 0.5, "selected": 3}
            (out / "summary.json").write_text(json.dumps(summary))
        else:
            (out / "final").mkdir(parents=True, exist_ok=True)
            (out / "final" / "config.json").write_text("{}")
            (out / "final" / "README.md").write_text("card")

    def evaluate(config, model, path):
        name = "base" if "round-" not in model else Path(model).parent.parent.name
        value = {"accuracy": accuracy.get(name, 0.6), "mean_nfe": 5.0, "mean_r_total": 1.0}
        result = {"model": model, "threshold": value, "r2": value}
        path.write_text(json.dumps(result))
        return result

    monkeypatch.setattr(rounds, "_run", run)
    monkeypatch.setattr(rounds, "evaluate_round", evaluate)
    return calls, accuracy


def test_rounds_chain_models_and_resume_at_stage_level(tmp_path: Path, fake_stages):
    calls, _ = fake_stages
    config = RoundsConfig(num_rounds=2, output_dir=str(tmp_path))
    state = run_rounds(config)
    assert [r["round"] for r in state["rounds"]] == [0, 1, 2]
    assert len(calls) == 4  # collect, train per round
    # Round 2 collects and trains from round 1's final model.
    round_two = calls[2]
    assert round_two[round_two.index("--model") + 1] == str(tmp_path / "round-1/train/final")
    assert state["model"] == str(tmp_path / "round-2/train/final")
    assert state["stopped"] == "finished 2 rounds"
    assert (tmp_path / "rounds.png").stat().st_size > 0
    # Re-running skips every completed stage.
    calls.clear()
    assert run_rounds(config)["rounds"] == json.loads(json.dumps(state["rounds"]))
    assert calls == []


def test_rounds_stop_when_accuracy_falls_below_the_margin(tmp_path: Path, fake_stages):
    _, accuracy = fake_stages
    accuracy["round-2"] = 0.5  # 0.1 below the base: beyond the 0.02 margin
    state = run_rounds(RoundsConfig(num_rounds=3, output_dir=str(tmp_path)))
    assert [r["round"] for r in state["rounds"]] == [0, 1, 2]
    assert "round 2" in state["stopped"]
    assert state["model"] == str(tmp_path / "round-1/train/final")  # the last good round


def test_rounds_file_says_in_progress_until_the_last_round(
    tmp_path: Path, fake_stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = rounds._run

    def crash_in_round_two(command: list[str]) -> None:
        if "round-2" in " ".join(command):
            raise RuntimeError("killed")
        real_run(command)

    monkeypatch.setattr(rounds, "_run", crash_in_round_two)
    with pytest.raises(RuntimeError, match="killed"):
        run_rounds(RoundsConfig(num_rounds=2, output_dir=str(tmp_path)))
    saved = json.loads((tmp_path / "rounds.json").read_text())
    assert saved["stopped"] == "in progress: 1 of 2 rounds done"
    assert saved["model"] == str(tmp_path / "round-1/train/final")


def test_rounds_collect_fresh_prompts_each_round(tmp_path: Path, fake_stages) -> None:
    calls, _ = fake_stages
    for r in (1, 2):
        (tmp_path / "data" / f"round-{r}").mkdir(parents=True)
    template = str(tmp_path / "data" / "round-{round}")
    run_rounds(RoundsConfig(num_rounds=2, output_dir=str(tmp_path / "run"),
                            collect_data_path=template))  # fmt: skip
    collects = [c for c in calls if "collect.py" in " ".join(c)]
    assert [c[c.index("--data_path") + 1] for c in collects] == [
        str(tmp_path / "data" / "round-1"),
        str(tmp_path / "data" / "round-2"),
    ]
    # Checked before any work: a missing round folder, or no '{round}' in the path.
    with pytest.raises(FileNotFoundError, match=r"round-3 missing; write each round's"):
        RoundsConfig(num_rounds=3, collect_data_path=template)
    with pytest.raises(ValueError, match=r"has no '\{round\}'"):
        RoundsConfig(collect_data_path=str(tmp_path / "data"))


def test_rounds_check_their_options(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="--collect_config"):
        RoundsConfig(collect_config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="--num_rounds"):
        RoundsConfig(num_rounds=0)
    with pytest.raises(ValueError, match="--max_accuracy_drop 2"):
        RoundsConfig(max_accuracy_drop=2)


def test_round_evaluation_decodes_with_the_chosen_preset(tmp_path: Path, monkeypatch):
    seen = {}

    def measure(model, task, examples, settings, *args, **kwargs):
        seen.update(settings)
        return {name: {"accuracy": 0.5} for name in settings}

    monkeypatch.setattr(rounds, "measure_model", measure)
    config = RoundsConfig(eval_preset="official", eval_early_exit=True, eval_limit=2,
                          output_dir=str(tmp_path))  # fmt: skip
    result = rounds.evaluate_round(config, "some/model", tmp_path / "eval.json")
    assert set(result) == {"model", "threshold", "r2"}
    assert all(s.preset == "official" and s.early_exit for s in seen.values())
    assert json.loads((tmp_path / "eval.json").read_text()) == result


def test_report_resolves_every_setting_before_the_model_loads(monkeypatch):
    import r2sft.report
    from r2sft.decoding import DecoderArgs
    from r2sft.paths import EMBEDDED_MODEL_DIR
    from r2sft.tasks import get_task

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(r2sft.report, "load_model", no_load)
    settings = {"ok": DecoderArgs(), "bad": DecoderArgs(gen_length=64, block_length=48)}
    with pytest.raises(ValueError, match="block_length 48"):
        r2sft.report.measure_model(str(EMBEDDED_MODEL_DIR), get_task("arith"), [], settings)
