"""Every attack of issue #13 against the code sandbox: each wrong solution scores FAIL,
whatever it does to the process, and none leaves anything outside its work folder or reads a
secret of the parent (the corpus is in ``sandbox_attacks.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sandbox_attacks import ADD_ONE_TESTS, CORRECT, ESCAPES, FALSE_PASSES, Attack, Scene, render

from r2sft.sandbox import CodeCheck, SandboxLimits, run_tests

pytestmark = pytest.mark.slow  # dozens of sandboxes per isolation mode

LIMITS = SandboxLimits(timeout_s=8.0, memory_mb=512)


def _attack(attack: Attack, tmp_path: Path) -> tuple[bool, list[str], str]:
    """Run ``attack``: (passed, what it left outside, the sandbox's detail)."""
    scene = Scene(tmp_path)
    try:
        solution = render(attack, scene.places)
        result = run_tests(CodeCheck(solution, attack.tests, (attack.entry_point,)), LIMITS)
        if "daemon" in attack.name:
            time.sleep(2.5)  # it would write 1.5 s after the run
        return result.passed, scene.violations(result.stdout, result.stderr), result.detail
    finally:
        scene.close()


def test_a_correct_solution_passes(sandbox_mode: str) -> None:
    result = run_tests(CodeCheck(CORRECT, ADD_ONE_TESTS, ("add_one",)), LIMITS)
    assert result.passed, (result.detail, result.stderr)


@pytest.mark.parametrize("attack", FALSE_PASSES, ids=lambda attack: attack.name)
def test_false_pass_attempts_fail(attack: Attack, sandbox_mode: str, tmp_path: Path) -> None:
    passed, violations, detail = _attack(attack, tmp_path)
    assert not passed, f"{attack.name} scored PASS ({detail})"
    if sandbox_mode != "no-namespaces":
        assert violations == []


@pytest.mark.parametrize("attack", ESCAPES, ids=lambda attack: attack.name)
def test_escapes_are_contained(attack: Attack, sandbox_mode: str, tmp_path: Path) -> None:
    if sandbox_mode == "no-namespaces":
        pytest.skip("without namespaces only Python-level hooks guard the host (docs/sandbox.md)")
    passed, violations, detail = _attack(attack, tmp_path)
    assert not passed, f"{attack.name} scored PASS ({detail})"
    assert violations == [], f"{attack.name} escaped: {violations}"
