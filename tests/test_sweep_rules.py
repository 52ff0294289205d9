"""bench/sweep_rules.py on the embedded model: one setting, a few dev prompts."""

import importlib.util
import sys

import pytest

from r2sft.paths import EMBEDDED_MODEL_DIR, REPO_ROOT


def _load_sweep_module():
    spec = importlib.util.spec_from_file_location("sweep_rules", REPO_ROOT / "bench/sweep_rules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not EMBEDDED_MODEL_DIR.is_dir(), reason="embedded model not built")
def test_sweep_reports_ratios_against_threshold_and_picks_an_eligible_best():
    sweep = _load_sweep_module()
    result = sweep.sweep(
        sweep.SweepArgs(limit=6, taus="0.8,0.3", temporal_ks="2", max_accuracy_drop=1.0)
    )
    baseline = result["threshold"]
    assert result["num_examples"] == 6 and len(result["r2"]) == 2
    for setting in result["r2"]:
        assert setting["tau_s"] == setting["tau_t"] and setting["temporal_k"] == 2
        assert setting["nfe_ratio"] == pytest.approx(setting["mean_nfe"] / baseline["mean_nfe"])
        assert setting["accuracy_delta"] == pytest.approx(
            setting["accuracy"] - baseline["accuracy"]
        )
    # Every setting is eligible with a drop of 1.0: the best is the lowest ratio.
    assert result["best"]["nfe_ratio"] == min(s["nfe_ratio"] for s in result["r2"])


def test_sweep_needs_values_to_sweep():
    sweep = _load_sweep_module()
    with pytest.raises(SystemExit, match="--taus"):
        sweep.sweep(sweep.SweepArgs(taus=""))
