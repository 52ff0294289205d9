"""Run untrusted, model-written code against its tests in a sandbox (code-task scoring).

A run is one ``python -I -S -B harness.py`` process (see
:mod:`r2sft.sandbox.harness` for the sequence). The verdict comes from the tests,
not from an exit status: the harness runs the solution in a separate, unprivileged worker
process, runs the tests itself, calling the solution's functions through a pipe that only
carries plain values, and writes a per-run random token to a pipe only it holds when every
test returned. So ``sys.exit(0)``, ``os._exit(0)``, exit hooks, threads, trace hooks,
``__main__`` blocks and objects whose ``__eq__`` always says True all score FAIL.

Isolation, strongest first, as this machine allows (:func:`isolation_report` says what is
in force; a weaker setup is logged once as a warning and recorded in the collect summary):

* **Namespaces** (``unshare`` from util-linux; as root, or in a user namespace with
  ``--map-root-user``): new mount, PID, network, IPC and UTS namespaces. The harness
  pivots into a minimal read-only root (``/usr``, ``/etc`` with ``shadow`` masked, the
  Python installation), a private ``/proc`` of the sandbox's PID namespace and a
  size-limited tmpfs ``/tmp`` as the only writable folder. The host's tree, its ``/proc``
  (other processes' environments) and ``$HOME`` are not there at all; there is no network
  interface to reach out through; when the harness (PID 1) ends, the kernel kills every
  process the solution started.
* **User**: the worker drops to a per-run uid (as root) or to an unmapped uid in a nested
  user namespace, with no capabilities and ``no_new_privs``.
* **Resources**: ``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, no core
  files, a wall-clock timeout that SIGKILLs the process group.
* **Audit hooks** (an extra layer, and the only file/network guard without namespaces):
  writes outside the work folder, process creation past ``max_processes`` and, without a
  network namespace, sockets and signals to other processes are refused. Python code only:
  ctypes or a shell bypasses them, which is why namespaces are preferred.

Without namespaces (no ``unshare``, or a kernel/container that refuses them) the sandbox
still judges by the tests, but the solution sees the host's files and ``/proc`` with its
user's rights: use a container or VM for adversarial code there. See docs/sandbox.md.

Written by hand: the reference harnesses (human-eval, evalplus, lm-eval) run the tests in
the solution's own process and judge by its exit status, which any ``sys.exit(0)`` forges,
and the namespace sandboxes (bubblewrap, nsjail) are system packages, while this project
installs with pip only; ``unshare`` (util-linux) is on every Linux.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from r2sft.sandbox.harness import frame

# The harness runs as a script (stdlib only: r2sft is not importable inside the sandbox).
HARNESS = Path(__file__).with_name("harness.py")
_UID_BASE = 0x7F000000  # per-run uids: far above any real account's
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 16
    max_file_mb: int = 16
    work_mb: int = 64  # size of the writable work folder (a tmpfs, with namespaces)
    max_output_chars: int = 20_000  # stdout / stderr kept per stream (tail)


@dataclass(frozen=True)
class CodeCheck:
    """What a code task asks the sandbox to judge.

    Attributes:
        solution: the model's code with whatever the task adds around it (the prompt's
            imports and helpers); runs in the worker as module ``solution``.
        tests: the task's checking code; runs in the harness, after ``context``.
        entry_points: the names ``tests`` calls that the solution defines; in the tests
            they call the solution's functions in the worker.
        context: trusted code the tests need (the prompt's helpers, MBPP's setup code).
    """

    solution: str
    tests: str
    entry_points: tuple[str, ...] = ()
    context: str = ""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run. ``passed``: the harness reported, with this run's token, that
    every test returned. ``detail`` says why not (or "every test returned")."""

    passed: bool
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    detail: str = ""


@dataclass(frozen=True)
class Isolation:
    """How runs are isolated on this machine, as established by a probe run."""

    prefix: tuple[str, ...]  # the unshare command, () without namespaces
    plan: str  # how the worker drops privileges (see harness.plan_user)
    established: dict[str, str]  # what the harness set up; every run must match it
    refused: tuple[str, ...] = field(default=())  # why stronger setups were not used

    @property
    def namespaces(self) -> bool:
        return bool(self.prefix)


def namespace_prefixes() -> list[tuple[str, ...]]:
    """The ``unshare`` commands to try, strongest first ([] without unshare)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    flags = ("--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child")
    in_user_namespace = (unshare, "--user", "--map-root-user", *flags)
    return [(unshare, *flags), in_user_namespace] if os.geteuid() == 0 else [in_user_namespace]


_PROBE = CodeCheck("def probe(x):\n    return [x, 1.5]", "assert probe(1) == [1, 1.5]", ("probe",))


def probe(prefix: tuple[str, ...]) -> Isolation | str:
    """Run a trivial check with ``prefix`` (() for no namespaces): the isolation it gets,
    or why it failed."""
    attempt = Isolation(prefix, plan="", established={})
    result, verdict = _execute(_PROBE, SandboxLimits(timeout_s=60), attempt, strict=False)
    if not result.passed:
        return result.detail or result.stderr[-500:] or "no verdict"
    return Isolation(prefix, verdict["plan"], verdict["isolation"])


@functools.lru_cache(maxsize=1)
def current_isolation() -> Isolation:
    """The strongest isolation this machine gives (probed once per process); warns once
    when it is weaker than the full namespace setup."""
    refused = []
    for prefix in [*namespace_prefixes(), ()]:
        found = probe(prefix)
        if isinstance(found, Isolation):
            break
        refused.append(f"{' '.join(prefix) or 'no namespaces'}: {found}")
    else:
        raise RuntimeError("the code sandbox cannot run on this machine:\n" + "\n".join(refused))
    isolation = Isolation(found.prefix, found.plan, found.established, tuple(refused))
    weak = weaknesses(isolation)
    if weak:
        logger.warning(
            "The code sandbox runs with weaker isolation on this machine: %s. Model-written "
            "code can then read what your user can read; use a container or VM for untrusted "
            "models. See docs/sandbox.md.",
            "; ".join(weak),
        )
    return isolation


def weaknesses(isolation: Isolation) -> list[str]:
    """How ``isolation`` falls short of the full setup (empty when it does not)."""
    found = []
    if not isolation.namespaces:
        found.append("no namespaces (" + ("; ".join(isolation.refused) or "no unshare") + ")")
    else:
        if not isolation.established.get("filesystem", "").startswith(_FULL_ROOT):
            found.append(f"filesystem: {isolation.established.get('filesystem')}")
        if not isolation.established.get("proc", "").startswith("private"):
            found.append(f"proc: {isolation.established.get('proc')}")
    if isolation.plan == "caps":
        found.append("the solution runs with the parent's uid")
    return found


_FULL_ROOT = "read-only minimal root (pivot_root"


def isolation_report(isolation: Isolation | None = None) -> dict[str, str]:
    """What contains the code on this machine (for logs and the collect summary)."""
    iso = isolation or current_isolation()
    if iso.namespaces:
        how = "as root" if "--user" not in iso.prefix else "in a user namespace"
        namespaces = f"mount, PID, network, IPC, UTS (unshare {how})"
    else:
        namespaces = "none: " + ("; ".join(iso.refused) or "unshare is not installed")
    files = (
        "the host's file system with the user's rights; an audit hook refuses writes "
        "outside the work folder (Python code only: ctypes and shells bypass it)"
    )
    return {
        "verdict": (
            "the tests' own: they run in the harness process, call the solution in a separate "
            "worker through a pipe carrying plain values only, and a per-run token on a pipe "
            "only the harness holds reports that every test returned"
        ),
        "namespaces": namespaces,
        "filesystem": iso.established.get("filesystem", files),
        "proc": iso.established.get(
            "proc", "the host's /proc (other processes of the same user are visible)"
        ),
        "user": iso.established.get("user", "unknown"),
        "tests": iso.established.get("tests", "run by the harness as the parent's user"),
        "network": (
            "empty network namespace"
            if iso.namespaces
            else "audit hook refuses sockets (Python code only)"
        ),
        "processes": (
            "PID namespace (all die with the run), RLIMIT_NPROC, audit-hook spawn cap"
            if iso.namespaces
            else "process-group kill, RLIMIT_NPROC, audit-hook spawn cap"
        ),
        "memory": "RLIMIT_AS, RLIMIT_FSIZE" + (", tmpfs work folder" if iso.namespaces else ""),
        "environment": "minimal: PATH, HOME, TMPDIR, LANG; nothing of the parent's",
    }


def _processes_of_user(uid: int) -> int:
    """How many processes ``uid`` runs now: RLIMIT_NPROC counts them all, not just ours."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


@functools.lru_cache(maxsize=1)
def _site_packages() -> list[str]:
    """This interpreter's site-packages folders (the harness starts without ``site``)."""
    return [path for path in site.getsitepackages() if os.path.isdir(path)]


def _python_dirs() -> list[str]:
    """This interpreter's (virtual) environment: what ``python`` spawned in the sandbox
    needs besides the base installation."""
    return [sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable)]


def _tail(path: Path, limit: int) -> str:
    data = path.read_bytes() if path.exists() else b""
    return data[-limit:].decode("utf-8", errors="replace")


def _exchange(
    process: subprocess.Popen, payload: bytes, verdict_fd: int, deadline: float
) -> bytes | None:
    """Feed ``payload`` to the harness and collect what it writes on the verdict pipe until
    it closes it (before the sandbox is torn down, which takes a while with namespaces);
    None when ``deadline`` passes first."""
    assert process.stdin is not None
    stdin = process.stdin.fileno()
    os.set_blocking(stdin, False)
    poller = select.poll()  # not select.select: descriptors may exceed FD_SETSIZE
    poller.register(verdict_fd, select.POLLIN)
    poller.register(stdin, select.POLLOUT)
    pending, chunks = memoryview(payload), []
    try:
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                if fd == verdict_fd:
                    chunk = os.read(verdict_fd, 1 << 16)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    continue
                try:
                    pending = pending[os.write(stdin, pending) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the harness ended early; its verdict says why
                    pending = pending[:0]
                if not pending:
                    poller.unregister(stdin)
                    process.stdin.close()
        return None
    finally:
        process.stdin.close()


def _parse_verdict(data: bytes | None) -> dict:
    try:
        verdict = json.loads(data or b"")
    except ValueError:
        return {}
    return verdict if isinstance(verdict, dict) else {}


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (the run's own uid, without a PID namespace), as that
    uid: the harness could not, having been killed at the timeout."""
    kill_all = "import os, signal; os.kill(-1, signal.SIGKILL)"
    command = [sys.executable, "-I", "-S", "-c", kill_all]
    subprocess.run(command, user=uid, group=uid, extra_groups=[], check=False, timeout=30)


def _execute(
    check: CodeCheck, limits: SandboxLimits, isolation: Isolation, strict: bool = True
) -> tuple[SandboxResult, dict]:
    """One sandboxed run; ``strict`` makes the harness refuse to run the solution unless it
    sets up exactly ``isolation.established``."""
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(
        prefix="r2sft-sandbox-", ignore_cleanup_errors=True
    ) as scratch:
        scratch_path = Path(scratch)
        mountpoint, work = scratch_path / "root", scratch_path / "work"
        mountpoint.mkdir()
        work.mkdir()  # the work folder without namespaces
        scratch_path.chmod(0o711)  # a per-run uid must reach it (without listing it)
        home = "/tmp" if isolation.namespaces else str(work)
        env = {"PATH": _PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
        verdict_read, verdict_write = os.pipe()
        command = [*isolation.prefix, sys.executable, "-I", "-S", "-B", str(HARNESS)]
        command += [str(verdict_write), str(mountpoint)]
        stdout_path, stderr_path = scratch_path / "stdout.txt", scratch_path / "stderr.txt"
        start = time.monotonic()
        try:
            with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
                try:
                    process = subprocess.Popen(
                        command,
                        cwd=scratch,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=stdout,
                        stderr=stderr,
                        pass_fds=(verdict_write,),
                        start_new_session=True,  # own process group: killpg reaches all
                    )
                finally:
                    os.close(verdict_write)
            uid = _UID_BASE + process.pid % (1 << 22)  # unique among live runs
            harness_uid = uid + (1 << 22)  # the tests' own, as unique
            same_user = isolation.plan in ("caps", "")
            setup = {
                "namespaces": isolation.namespaces,
                "site_packages": _site_packages(),
                "python_dirs": _python_dirs(),
                "solution": check.solution,
                "uid": uid,
                "harness_uid": harness_uid,
                "work": str(work),
                "expect": isolation.established if strict else None,
                "expect_plan": isolation.plan if strict else None,
                "limits": {
                    "memory_bytes": limits.memory_mb * 2**20,
                    "file_bytes": limits.max_file_mb * 2**20,
                    "cpu_seconds": max(1, int(limits.timeout_s) + 1),
                    "processes": limits.max_processes,
                    "nproc": (
                        _processes_of_user(os.getuid()) + limits.max_processes
                        if same_user
                        else limits.max_processes
                    ),
                    "work_mb": limits.work_mb,
                },
            }
            job = {
                "token": token,
                "tests": check.tests,
                "context": check.context,
                "entry_points": list(check.entry_points),
            }
            payload = frame(setup) + frame(job)
            try:
                received = _exchange(process, payload, verdict_read, start + limits.timeout_s)
            finally:
                try:  # the whole group, even after a verdict: nothing of the run may linger
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            os.close(verdict_read)
        timed_out = received is None
        if isolation.namespaces:
            # The kernel kills what is left with the PID namespace; tearing the namespaces
            # down takes milliseconds that the verdict need not wait for.
            threading.Thread(target=process.wait, daemon=True).start()
        else:
            process.wait()
            if timed_out and isolation.plan == "uid":
                _kill_uid(uid)
        duration = time.monotonic() - start
        verdict = _parse_verdict(received)
        passed = not timed_out and verdict.get("token") == token and verdict.get("passed") is True
        detail = "timed out" if timed_out else str(verdict.get("detail") or "no verdict")
        result = SandboxResult(
            passed=passed,
            timed_out=timed_out,
            stdout=_tail(stdout_path, limits.max_output_chars),
            stderr=_tail(stderr_path, limits.max_output_chars),
            duration_s=duration,
            detail=detail,
        )
        return result, verdict


def run_tests(check: CodeCheck, limits: SandboxLimits | None = None) -> SandboxResult:
    """Judge ``check`` in one sandbox: passed iff every test returned."""
    return _execute(check, limits or SandboxLimits(), current_isolation())[0]


def run_many(
    checks: list[CodeCheck],
    limits: SandboxLimits | None = None,
    max_workers: int | None = None,
) -> list[SandboxResult]:
    """Run many checks, each in its own sandbox, ``max_workers`` at a time (order kept).

    Threads suffice: each sandbox is a separate process and the thread only waits on it.
    """
    if not checks:
        return []
    current_isolation()  # probe once, before the threads start
    workers = max_workers or max(1, min(len(checks), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda check: run_tests(check, limits), checks))
