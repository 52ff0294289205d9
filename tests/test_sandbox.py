"""The code sandbox: verdicts from the tests, resource limits, isolation and its report.
The attack corpus is in test_sandbox_attacks.py."""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, namedtuple
from pathlib import Path

import pytest

from r2sft.sandbox import runner as sandbox
from r2sft.sandbox.harness import RemoteObject, decode, encode, frame, read_frame
from r2sft.sandbox.runner import (
    CodeCheck,
    SandboxLimits,
    isolation_report,
    run_many,
    run_tests,
)

FAST = SandboxLimits(timeout_s=5.0, memory_mb=512, max_processes=8)


def _run(solution: str, tests: str = "", names: tuple[str, ...] = (), **limits: float) -> object:
    return run_tests(CodeCheck(solution, tests, names), SandboxLimits(**{**vars(FAST), **limits}))


def test_passing_and_failing_solutions(sandbox_mode: str) -> None:
    ok, bad = run_many(
        [
            CodeCheck("def f(x):\n    return x + 1\n", "assert f(1) == 2\nprint('fine')\n", ("f",)),
            CodeCheck("def f(x):\n    return x\n", "assert f(1) == 2\n", ("f",)),
        ],
        FAST,
    )
    assert ok.passed and "fine" in ok.stdout and ok.detail == "every test returned"
    assert not bad.passed and "AssertionError" in bad.stderr and "assert f(1) == 2" in bad.stderr


def test_python_installed_under_tmp_is_bound_inside_the_work_folder(
    sandbox_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout or venv under /tmp (CI clones there) is bound read-only inside the
    # sandbox's own /tmp: the namespace setup used to fail on it and fall back.
    with tempfile.TemporaryDirectory(dir="/tmp") as installed:
        os.chmod(installed, 0o755)  # as a venv is: readable by the sandbox's own uid
        (Path(installed) / "marker.py").write_text("VALUE = 7\n")
        dirs = sandbox._python_dirs()
        monkeypatch.setattr(sandbox, "_python_dirs", lambda: [*dirs, installed])
        solution = (
            "def read(path):\n    return open(path).read()\n"
            "def write(path):\n    open(path, 'w').write('x')\n    return open(path).read()\n"
        )
        tests = (
            f"assert read({installed + '/marker.py'!r}) == 'VALUE = 7\\n'\n"
            "assert write('work-file') == 'x'\n"  # the work folder stays writable
        )
        result = _run(solution, tests, ("read", "write"))
    assert result.passed, result.detail + result.stderr


def test_context_runs_with_the_tests_not_with_the_solution() -> None:
    # HumanEval/38-style: the tests call a prompt helper; the model's copy of it (here
    # broken on purpose) does not replace the prompt's.
    context = "def encode(s):\n    return s[::-1]\n\ndef decode(s):\n    '''doc'''\n"
    solution = "def encode(s):\n    return 'x'\n\ndef decode(s):\n    return s[::-1]\n"
    tests = "assert decode(encode('abc')) == 'abc'\n"
    result = run_tests(CodeCheck(solution, tests, ("decode",), context), FAST)
    assert result.passed, result.stderr


def test_solution_is_a_module_not_main_and_sees_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    solution = "import os\ndef probe():\n    return [__name__, sorted(os.environ)]\n"
    tests = "print(probe())\nassert probe()[0] == 'solution'\n"
    result = _run(solution, tests, ("probe",))
    assert result.passed, result.stderr
    assert "hf_secret_value" not in result.stdout and "HF_TOKEN" not in result.stdout
    assert "'HOME', 'LANG', 'PATH', 'TMPDIR'" in result.stdout


def test_values_cross_as_plain_data_and_objects_as_handles() -> None:
    # MBPP/601-style: the tests build the solution's objects and hand them back.
    solution = (
        "import collections\n"
        "class Pair:\n"
        "    def __init__(self, a, b):\n"
        "        self.a, self.b = a, b\n"
        "def longest(pairs):\n"
        "    return max(p.b - p.a for p in pairs)\n"
        "def counts(s):\n"
        "    return collections.Counter(s)\n"
        "def mixed():\n"
        "    return {(1, 2): {3, 4}, 'b': b'x', 'c': 1 + 2j, 'n': None, 'big': 7 ** 5000}\n"
    )
    tests = (
        "assert longest([Pair(1, 5), Pair(2, 3)]) == 4\n"
        "assert counts('aab') == {'a': 2, 'b': 1}\n"
        "assert mixed() == {(1, 2): {3, 4}, 'b': b'x', 'c': 1 + 2j, 'n': None, 'big': 7 ** 5000}\n"
        "assert Pair(1, 2) != Pair(1, 2)\n"  # handles are equal only to themselves
    )
    result = _run(solution, tests, ("Pair", "longest", "counts", "mixed"))
    assert result.passed, result.stderr


def test_exceptions_of_the_solution_reach_the_tests() -> None:
    solution = (
        "class Oops(Exception):\n    pass\n"
        "def strict(x):\n"
        "    if x < 0:\n        raise ValueError('negative')\n"
        "    raise Oops('mine')\n"
    )
    tests = (
        "try:\n    strict(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\n"
        "else:\n    raise AssertionError('no error')\n"
        "try:\n    strict(1)\nexcept Exception as e:\n    assert 'Oops: mine' in str(e)\n"
        "try:\n    undefined_name(1)\nexcept NameError:\n    pass\n"
    )
    result = _run(solution, tests, ("strict", "undefined_name"))
    assert result.passed, result.stderr


def test_a_crash_fails_even_when_the_tests_swallow_errors() -> None:
    solution = "import os\ndef f(x):\n    os._exit(0)\n"
    tests = "try:\n    f(1)\nexcept BaseException:\n    pass\n"
    result = _run(solution, tests, ("f",))
    assert not result.passed and "process ended" in result.detail


def test_value_codec_round_trip_and_refusals() -> None:
    Point = namedtuple("Point", "x y")
    values = [
        None, True, 0, -3, 2**5000, 1.5, math.inf, "é", b"\x00\xff", bytearray(b"ab"), 1 - 2j,
        [1, (2, 3)], {1, 2}, frozenset({"a"}), {"k": [None], (1, 2): {3: 4.0}},
    ]  # fmt: skip
    for value in values:
        assert decode(encode(value)) == value and type(decode(encode(value))) is type(value)
    assert math.isnan(decode(encode(math.nan)))
    # Subclasses become their plain base; other objects are handles or refused.
    assert type(decode(encode(Point(1, 2)))) is tuple and decode(encode(Counter("aa"))) == {"a": 2}

    class Sneaky(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    assert decode(encode(Sneaky(0))) != 5
    with pytest.raises(TypeError, match="plain values only"):
        encode(object())
    kept = encode(object(), keep=lambda value: (7, type(value).__name__))
    assert kept == ["r", 7, "object"] and isinstance(decode(kept), RemoteObject)
    deep: list = ["l"]
    for _ in range(200):
        deep = ["l", deep]
    for malformed in (["?"], ["d", 1], ["b", 1], [], {"a": 1}, ["s", ["l"]], deep):
        with pytest.raises((ValueError, TypeError)):
            decode(malformed)


def test_frames_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "frames"
    path.write_bytes(frame({"a": [1, "x"]}) + frame(None) + b"\x00")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_frame(fd) == {"a": [1, "x"]} and read_frame(fd) is None
        assert read_frame(fd) is None  # a truncated header is the end
    finally:
        os.close(fd)


def test_infinite_loop_is_killed_at_timeout(sandbox_mode: str) -> None:
    start = time.monotonic()
    result = _run("while True:\n    pass\n", timeout_s=1.0)
    assert not result.passed
    assert result.timed_out or "ended" in result.detail  # RLIMIT_CPU may win the race
    assert time.monotonic() - start < 10


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A string in the command line of every process of this test's sandboxes (other
    sandboxes may run on the machine at the same time)."""
    marker = f"r2sft-test-{uuid.uuid4().hex[:12]}"
    named = functools.partial(tempfile.TemporaryDirectory, suffix=marker)
    monkeypatch.setattr(sandbox.tempfile, "TemporaryDirectory", named)
    return marker


def _live_processes(marker: str) -> list[str]:
    """PIDs of live processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
                if marker.encode() in cmdline and "State:\tZ" not in status:  # zombies: dead
                    found.append(entry.name)
            except OSError:
                continue
    return found


def _none_left(marker: str) -> list[str]:
    deadline = time.monotonic() + 3  # SIGKILLed processes may take a moment to vanish
    while _live_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _live_processes(marker)


def test_fork_bomb_is_contained_and_leaves_no_process(sandbox_mode: str, marker: str) -> None:
    code = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except Exception:\n"
        "        time.sleep(0.01)\n"
    )
    start = time.monotonic()
    result = _run(code, timeout_s=2.0, max_processes=4)
    assert not result.passed
    assert time.monotonic() - start < 15
    assert _none_left(marker) == []


def test_no_process_survives_timeout(sandbox_mode: str, marker: str) -> None:
    # A background child that outlives its parent must still be killed with the sandbox.
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30) # {marker}'])\n"
        "time.sleep(30)\n"
    )
    result = _run(code, timeout_s=1.0)
    assert result.timed_out
    assert _none_left(marker) == []


def test_a_daemon_dies_with_the_run(sandbox_mode: str, marker: str) -> None:
    # It leaves the process group (setsid), so killing the group would miss it.
    solution = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(30)\n"
        "def f():\n"
        "    return 1\n"
    )
    assert _run(solution, "assert f() == 1\n", ("f",)).passed
    assert _none_left(marker) == []


def test_writes_stay_in_the_work_folder(sandbox_mode: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    target = outside / "escaped.txt"
    result = _run(f"open({str(target)!r}, 'w').write('escaped')\n")
    assert not result.passed and not target.exists()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    assert not _run(f"import os\nos.remove({str(victim)!r})\n").passed
    assert victim.read_text() == "keep me"
    inside = _run(
        "open('scratch.txt', 'w').write('ok')\n"
        "def read():\n    return open('scratch.txt').read()\n",
        "assert read() == 'ok'\n",
        ("read",),
    )
    assert inside.passed, inside.stderr


def test_network_attempt_fails(sandbox_mode: str) -> None:
    code = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')"
    result = _run(code)
    assert not result.passed and "connected" not in result.stdout
    expected = "PermissionError" if sandbox_mode == "no-namespaces" else "OSError"
    assert expected in result.stderr or "Errno" in result.stderr, result.stderr


def test_memory_limit(sandbox_mode: str) -> None:
    result = _run("x = bytearray(2 * 1024**3)\n", memory_mb=256)
    assert not result.passed and "MemoryError" in result.stderr


def test_isolation_report_states_what_is_in_force(sandbox_mode: str) -> None:
    report = isolation_report(sandbox.current_isolation())
    assert set(report) == {
        "verdict", "namespaces", "filesystem", "proc", "user", "tests", "network",
        "processes", "memory", "environment",
    }  # fmt: skip
    if sandbox_mode == "no-namespaces":
        assert report["namespaces"].startswith("none") and "host" in report["filesystem"]
    else:
        assert report["filesystem"].startswith("read-only minimal root (pivot_root")
        assert report["proc"].startswith("private /proc") and "PID" in report["namespaces"]
        assert "no capabilities" in report["user"] and "parent's uid" not in report["user"]
        assert "no capabilities" in report["tests"]


def test_weaker_isolation_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "namespace_prefixes", lambda: [])
    sandbox.current_isolation.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="r2sft.sandbox.runner"):
            first = sandbox.current_isolation()
            assert sandbox.current_isolation() is first
            check = CodeCheck("def f():\n    return 1\n", "assert f() == 1", ("f",))
            assert run_tests(check).passed
        warnings = [r for r in caplog.records if "weaker isolation" in r.getMessage()]
        assert len(warnings) == 1 and "no namespaces" in warnings[0].getMessage()
        assert isolation_report()["namespaces"].startswith("none")
    finally:
        sandbox.current_isolation.cache_clear()


def test_a_run_refuses_isolation_other_than_the_probed_one(sandbox_mode: str) -> None:
    probed = sandbox.current_isolation()
    claimed = sandbox.Isolation(probed.prefix, probed.plan, {**probed.established, "x": "y"})
    check = CodeCheck("def f():\n    return 1\n", "assert f() == 1\n", ("f",))
    result, _ = sandbox._execute(check, FAST, claimed)
    assert not result.passed and "isolation differs" in result.detail


def test_signals_reach_the_sandbox_only(sandbox_mode: str) -> None:
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        solution = (
            "import os, signal, subprocess, sys\n"
            "def run():\n"
            "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "    child.kill()\n"  # its own child: allowed
            "    child.wait()\n"
            f"    for pid in ({outsider.pid}, -1):\n"
            "        try:\n"
            "            os.kill(pid, signal.SIGKILL)\n"
            "        except OSError:\n"
            "            pass\n"
            "    return child.returncode\n"
        )
        result = _run(solution, "assert run() == -9\n", ("run",))
        assert result.passed, result.stderr
        assert outsider.poll() is None  # the process outside the sandbox lives on
    finally:
        outsider.kill()
        outsider.wait()


def test_installed_packages_import_and_the_tests_run_unprivileged(sandbox_mode: str) -> None:
    # site-packages come from the parent (the harness starts without site); with namespaces
    # the harness itself drops every capability before it runs the tests.
    solution = "import yaml\ndef load(text):\n    return yaml.safe_load(text)\n"
    tests = "assert load('a: [1, 2]') == {'a': [1, 2]}\n"
    if sandbox_mode != "no-namespaces":
        tests += (
            "status = open('/proc/self/status').read()\n"
            "assert status.split('CapEff:')[1].split()[0] == '0000000000000000', status\n"
        )
    result = _run(solution, tests, ("load",))
    assert result.passed, result.stderr
