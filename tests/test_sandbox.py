"""The code sandbox contains loops, fork bombs, stray writes and network access."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from r2sft.tasks import sandbox
from r2sft.tasks.sandbox import (
    CodeCheck,
    SandboxLimits,
    isolation_report,
    run_many,
    run_python,
)

FAST = SandboxLimits(timeout_s=3.0, memory_mb=512, max_processes=8)


@pytest.fixture(params=["namespaces", "fallback"])
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with kernel namespaces (when this machine allows them) and without."""
    if request.param == "fallback":
        monkeypatch.setattr(sandbox, "_namespace_prefix", lambda: ())
    elif not sandbox._namespace_prefix():
        pytest.skip("unshare cannot create namespaces here; the fallback run covers this")
    return request.param


def test_passing_and_failing_solutions() -> None:
    ok, bad = run_many(
        [
            CodeCheck("def f(x):\n    return x + 1\n", "assert f(1) == 2\nprint('fine')\n"),
            CodeCheck("def f(x):\n    return x\n", "assert f(1) == 2\n"),
        ],
        FAST,
    )
    assert ok.passed and ok.returncode == 0 and "fine" in ok.stdout
    assert not bad.passed and bad.returncode != 0 and "AssertionError" in bad.stderr


def test_infinite_loop_is_killed_at_timeout(isolation: str) -> None:
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0))
    assert not result.passed
    assert result.timed_out or result.returncode != 0  # RLIMIT_CPU may win the race
    assert time.monotonic() - start < 10


def _sandbox_processes() -> list[str]:
    """PIDs whose command line runs a sandbox bootstrap (none may outlive its run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
                if b"r2sft-sandbox-" in cmdline or b"time.sleep(30)" in cmdline:
                    if "State:\tZ" not in status:  # zombies are dead, awaiting their reaper
                        found.append(entry.name)
            except OSError:
                continue
    return found


def test_fork_bomb_is_contained_and_leaves_no_process(isolation: str) -> None:
    code = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except Exception:\n"
        "        time.sleep(0.01)\n"
    )
    start = time.monotonic()
    result = run_python(code, SandboxLimits(timeout_s=2.0, max_processes=4))
    assert not result.passed
    assert time.monotonic() - start < 15
    deadline = time.monotonic() + 3
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == []


def test_no_process_survives_timeout(isolation: str) -> None:
    # A background child that outlives its parent must still be killed with the sandbox.
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    result = run_python(code, SandboxLimits(timeout_s=1.0))
    assert result.timed_out
    deadline = time.monotonic() + 3  # SIGKILLed processes may take a moment to vanish
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == []


def test_write_outside_working_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    code = f"open({str(target)!r}, 'w').write('escaped')\n"
    result = run_python(code, FAST)
    assert not result.passed
    assert "PermissionError" in result.stderr
    assert not target.exists()
    # Deleting outside is refused too, and writing inside the working directory is fine.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    assert not run_python(f"import os\nos.remove({str(victim)!r})\n", FAST).passed
    assert victim.read_text() == "keep me"
    inside = run_python("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\n")
    assert inside.passed and inside.stdout.strip() == "ok"


def test_network_attempt_fails(isolation: str) -> None:
    code = (
        "import socket\n"
        "s = socket.create_connection(('1.1.1.1', 80), timeout=2)\n"
        "print('connected')\n"
    )
    result = run_python(code, FAST)
    assert not result.passed
    assert "connected" not in result.stdout
    expected = "PermissionError" if isolation == "fallback" else "OSError"  # unreachable network
    assert expected in result.stderr or "Errno" in result.stderr, result.stderr
    assert set(isolation_report()) == {"network", "processes", "files", "memory"}


def test_memory_limit() -> None:
    result = run_python("x = bytearray(2 * 1024**3)\n", SandboxLimits(memory_mb=256))
    assert not result.passed and "MemoryError" in result.stderr
