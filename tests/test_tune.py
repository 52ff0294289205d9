"""r2sft.tune: the search steps on hand-built results, and a small run on the embedded model."""

import json
import shutil

import pytest

from r2sft.decoding import DecoderConfig
from r2sft.decoding.presets import PRESET_FILE, read_preset
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.tune import (
    FORWARD_STAGES,
    SEARCHED_FIELDS,
    TuneArgs,
    forward_candidates,
    neighbours,
    pick,
    r2_grid,
    settings_of,
    smallest_window,
    threshold_settings,
    tune,
)


def test_pick_is_the_fewest_forwards_within_the_accuracy_floor():
    results = [
        {"decoder": "r2", "accuracy": 0.50, "mean_nfe": 4.0},  # too inaccurate
        {"decoder": "r2", "accuracy": 0.60, "mean_nfe": 6.0},
        {"decoder": "r2", "accuracy": 0.62, "mean_nfe": 6.0},  # same NFE, more accurate
        {"decoder": "threshold", "accuracy": 0.70, "mean_nfe": 5.0},  # another decoder
    ]
    assert pick(results, "r2", floor=0.59) is results[2]
    assert pick(results, "threshold", floor=0.59) is results[3]
    assert pick(results, "r2", floor=0.9) is None


def test_neighbours_change_one_parameter_within_bounds():
    base = {"threshold": 0.9, "tau_s": 0.3, "tau_t": 0.3, "temporal_k": 1}
    found = neighbours(base)
    for setting in found:
        changed = [k for k in set(setting) | set(base) if setting.get(k) != base.get(k)]
        assert len(changed) == 1, setting
    assert {s["threshold"] for s in found if s["threshold"] != 0.9} == {0.8, 0.95}
    assert {s["temporal_k"] for s in found} == {1, 2}  # K never drops below 1
    assert {s.get("window") for s in found} == {None, 2, 4}


def test_grids_and_settings_round_trip():
    assert all(s["decoder"] == "threshold" and 0 < s["threshold"] < 1 for s in threshold_settings())
    grid = r2_grid()
    assert len(grid) == 12 and all(s["tau_s"] == s["tau_t"] for s in grid)
    reported = {**grid[0], "accuracy": 0.5, "mean_nfe": 3.0, "nfe_ratio": 0.5}
    assert settings_of(reported) == {k: v for k, v in grid[0].items() if k != "decoder"}


def test_forward_stage_candidates_and_the_smallest_window():
    decoder = DecoderConfig(gen_length=64, block_length=16)
    setting = {"decoder": "threshold", "threshold": 0.5}
    alphas = forward_candidates("threshold_alpha", setting, decoder, "dual")
    assert [c["threshold_alpha"] for c in alphas] == [0.1, 0.3, 0.5]
    assert all(c["threshold"] == 0.5 for c in alphas)
    suffix = forward_candidates("suffix", setting, decoder, "dual")  # windows short of the canvas
    assert {(c["suffix_window"], c["suffix_tail"]) for c in suffix} == {
        (16, 0), (16, 1), (32, 0), (32, 1)}  # fmt: skip
    refresh = forward_candidates("cache_refresh", setting, decoder, "dual")
    assert [c["cache_refresh"] for c in refresh] == [4, 8]
    # Without a cache (a model without r2sft's decoding cache, or --cache none) there is
    # nothing to prune or refresh; the alpha stage still runs.
    for stage in ("suffix", "cache_refresh"):
        assert forward_candidates(stage, setting, decoder, "none") == []
    assert len(forward_candidates("threshold_alpha", setting, decoder, "none")) == 3
    fixed = DecoderConfig(gen_length=64, block_length=16, policy="fixed")
    assert forward_candidates("threshold_alpha", setting, fixed, "dual") == []
    with pytest.raises(ValueError, match="forward stage"):
        forward_candidates("speed", setting, decoder, "dual")
    current = {"accuracy": 0.6, "mean_nfe": 4.0}
    results = [
        {"suffix_window": 16, "suffix_tail": 1, "accuracy": 0.5, "mean_nfe": 4.0},  # inaccurate
        {"suffix_window": 32, "suffix_tail": 0, "accuracy": 0.6, "mean_nfe": 4.3},  # +7.5% NFE
        {"suffix_window": 32, "suffix_tail": 1, "accuracy": 0.6, "mean_nfe": 4.1},
        {"suffix_window": 48, "suffix_tail": 0, "accuracy": 0.61, "mean_nfe": 4.0},
    ]
    assert smallest_window(results, current, floor=0.59) is results[2]
    assert smallest_window(results[:2], current, floor=0.59) is current


@pytest.mark.skipif(not EMBEDDED_MODEL_DIR.is_dir(), reason="embedded model not built")
def test_tune_writes_report_plot_and_a_valid_preset(tmp_path, monkeypatch):
    import r2sft.tune

    # A small search: one threshold, one R² grid point, then the refinement around it.
    monkeypatch.setattr(r2sft.tune, "THRESHOLDS", (0.7,))
    monkeypatch.setattr(r2sft.tune, "R2_TAUS", (0.5,))
    monkeypatch.setattr(r2sft.tune, "R2_KS", (2,))
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL_DIR, model, ignore=shutil.ignore_patterns(PRESET_FILE))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = TuneArgs(model=str(model), limit=8, budget=8 * 14, write=True,
                    write_to=str(elsewhere), output=str(tmp_path / "tune"),
                    progress=False)  # fmt: skip
    report = tune(args)
    saved = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert (tmp_path / "tune" / "pareto.png").stat().st_size > 1000
    assert saved["settings_decoded"] == report["settings_decoded"] == 14  # the budget
    assert saved["reference"]["mean_nfe"] >= saved["baseline"]["mean_nfe"]  # early exit
    assert saved["reference"]["accuracy"] == saved["baseline"]["accuracy"]
    assert saved["fixed"]["mean_nfe"] == 64  # one token per forward on the 64 canvas
    floor = saved["baseline"]["accuracy"] - args.max_accuracy_drop
    for name in ("threshold", "r2"):
        chosen = saved["picks"][name]
        assert chosen["accuracy"] >= floor - 1e-9
        same = [r for r in saved["r2_settings"] + saved["threshold_curve"] if r["decoder"] == name]
        assert chosen["mean_nfe"] == min(r["mean_nfe"] for r in same if r["accuracy"] >= floor)
    targets = [tmp_path / "tune", model, elsewhere]  # the output folder, --write, --write_to
    assert report["written"] == [str(folder / PRESET_FILE) for folder in targets]
    shipped = [(folder / PRESET_FILE).read_text() for folder in targets]
    assert shipped[0] == shipped[1] == shipped[2]
    preset = read_preset(model / PRESET_FILE)
    assert preset.decoders["r2"]["r2"] and preset.decoders["r2"]["early_exit"]
    assert preset.decoders["r2"]["gen_length"] == 64 and preset.tuned["split"] == "dev"


@pytest.mark.skipif(not EMBEDDED_MODEL_DIR.is_dir(), reason="embedded model not built")
def test_tune_searches_the_forward_options_and_writes_them(tmp_path, monkeypatch):
    import r2sft.tune

    for name, values in {"THRESHOLDS": (0.7,), "R2_TAUS": (0.5,), "R2_KS": (2,),
                         "ALPHAS": (0.3,), "WINDOW_BLOCKS": (2,), "TAILS": (1,),
                         "REFRESH_SHARES": (0.5,)}.items():  # fmt: skip
        monkeypatch.setattr(r2sft.tune, name, values)
    monkeypatch.setattr(r2sft.tune, "neighbours", lambda setting: [])  # no refinement
    args = TuneArgs(limit=8, output=str(tmp_path / "tune"), progress=False)
    report = tune(args)
    for name in ("threshold", "r2"):
        ours = [s for s in report["settings"] if s["decoder"] == name]
        assert any(s.get("threshold_alpha") == 0.3 for s in ours)
        assert any((s.get("suffix_window"), s.get("suffix_tail")) == (32, 1) for s in ours)
        assert any(s.get("cache_refresh") == 8 for s in ours)
        chosen = report["picks"][name]
        assert chosen["accuracy"] >= report["baseline"]["accuracy"] - args.max_accuracy_drop
        written = report["preset"]["decoders"][name]
        for field in ("threshold_alpha", "suffix_window", "suffix_tail", "cache_refresh"):
            assert written[field] == chosen.get(field, written[field])


def test_write_refuses_to_change_the_shipped_preset_and_names_write_to(tmp_path):
    """``--write`` on the embedded model would rewrite a file of the checkout: refused at
    parse time, naming the output folder's copy and the explicit --write_to."""
    with pytest.raises(ValueError) as error:
        TuneArgs(write=True, output=str(tmp_path / "tune"))
    message = str(error.value)
    assert "the preset this checkout ships" in message
    assert "--write_to " in message and "tiny-llada" in message
    assert f"{tmp_path / 'tune'}/{PRESET_FILE}" in message
    with pytest.raises(ValueError, match="--write_to .*no such folder"):
        TuneArgs(write_to=str(tmp_path / "missing"))


def test_bad_budget_and_decoder_options_fail_before_any_work(tmp_path, monkeypatch):
    """A budget that cannot cover the reference settings, or a decoder option that fails
    resolution, is named before the model loads and before the output folder exists."""
    import r2sft.tune

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(r2sft.tune, "load_model", no_load)
    output = tmp_path / "tune"
    with pytest.raises(ValueError, match="--budget 0 must be >= 1"):
        TuneArgs(budget=0, output=str(output))
    with pytest.raises(ValueError, match=r"--budget 3 .* give --budget >= 6"):
        tune(TuneArgs(limit=2, budget=3, output=str(output), progress=False))
    with pytest.raises(ValueError, match="block_length 48"):
        tune(TuneArgs(limit=2, block_length=48, output=str(output), progress=False))
    assert not output.exists()


def test_the_refused_options_are_exactly_those_the_search_sets():
    """SEARCHED_FIELDS is a list kept by hand: it must follow the search steps."""
    decoder = DecoderConfig(gen_length=64, block_length=16)
    base = r2_grid()[0]
    settings = [*threshold_settings(), *r2_grid(), *neighbours(base)]
    settings += [c for stage in FORWARD_STAGES
                 for c in forward_candidates(stage, base, decoder, "dual")]  # fmt: skip
    searched = {key for setting in settings for key in setting} - {"decoder"}
    assert searched | {"early_exit"} == SEARCHED_FIELDS


def test_options_the_search_sets_itself_are_refused_not_overridden():
    with pytest.raises(ValueError, match=r"--threshold, --threshold_alpha: r2sft.tune sets these"):
        TuneArgs(threshold=0.8, threshold_alpha=0.3)
    with pytest.raises(ValueError, match="--early_exit: r2sft.tune sets this"):
        TuneArgs(early_exit=False)
    with pytest.raises(ValueError, match="--preset official: r2sft.tune starts from the official"):
        TuneArgs(preset="official")
    assert TuneArgs(gen_length=128, cache="prefix").decoder_overrides() == {
        "gen_length": 128, "cache": "prefix"}  # fmt: skip
