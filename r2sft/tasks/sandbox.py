"""Run untrusted, model-written Python in a contained subprocess (code-task scoring).

What contains it, and why each layer:

* **Time**: the child runs in its own session (process group); on timeout the whole group
  is SIGKILLed, so grandchildren die with it. ``RLIMIT_CPU`` backs this up.
* **Processes**: when ``unshare`` can create namespaces (root, or unprivileged user
  namespaces), the child runs as PID 1 of a fresh PID namespace: when it dies the kernel
  kills every process inside, whatever it did to escape the process group. ``RLIMIT_NPROC``
  caps forks for non-root users; the kernel never applies that limit to root (uid 0 is
  exempt), so the child's audit hook also caps process creation (``os.fork``,
  ``subprocess``, ``os.system``, ``posix_spawn``) to ``max_processes`` and only from the
  top process. Fork bombs thus stop after a few children instead of exhausting the PID table.
* **Memory**: ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE`` on files, no core dumps.
* **Network**: a new, empty network namespace (``unshare --net``: the kernel has no route
  out, not even loopback is up) when available. Where namespaces are refused (containers
  without user namespaces), an audit hook refuses socket creation instead; that fallback
  stops Python code, not a C extension, which is why the namespace is preferred.
* **Files**: a fresh temporary working directory (also ``TMPDIR``, ``HOME``) removed
  afterwards; an audit hook refuses opening for writing, removing, renaming or creating
  anything outside it.

This guards against the accidents model-written code makes (deleting files, hanging, fork
loops, downloads), not against a determined attacker who can, e.g., load ctypes to skip
audit hooks: for adversarial code use a container or VM. ``isolation_report()`` says which
mechanisms this machine provides.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 16
    max_file_mb: int = 16
    max_output_chars: int = 20_000  # stdout / stderr kept per stream (tail)


@dataclass(frozen=True)
class CodeCheck:
    """What a code task asks the sandbox to judge: a solution and the tests that check it.

    ``solution`` is the model's code with whatever the task adds around it (the prompt's
    imports and helpers); ``tests`` is the task's checking code, run after the solution in
    the same namespace; ``entry_point`` names the function under test when the task has one.
    """

    solution: str
    tests: str
    entry_point: str | None = None


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run. ``passed`` means exit status 0 within the time limit."""

    passed: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float


# Runs inside the child before the solution: limits first (so the solution cannot lift them),
# then the audit hook, then the solution as __main__. Arguments come through environment
# variables because ``python -I`` ignores PYTHON* variables, not ours.
_BOOTSTRAP = textwrap.dedent(
    """
    import os, resource, runpy, sys

    def _env_int(name):
        return int(os.environ[name])

    _mem = _env_int("R2SFT_SANDBOX_MEMORY_BYTES")
    resource.setrlimit(resource.RLIMIT_AS, (_mem, _mem))
    _fsize = _env_int("R2SFT_SANDBOX_FILE_BYTES")
    resource.setrlimit(resource.RLIMIT_FSIZE, (_fsize, _fsize))
    _cpu = _env_int("R2SFT_SANDBOX_CPU_SECONDS")
    resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _nproc = _env_int("R2SFT_SANDBOX_NPROC")
    resource.setrlimit(resource.RLIMIT_NPROC, (_nproc, _nproc))

    _root = os.path.realpath(os.getcwd())
    _top_pid = os.getpid()
    _max_children = _env_int("R2SFT_SANDBOX_MAX_CHILDREN")
    _block_sockets = os.environ["R2SFT_SANDBOX_BLOCK_SOCKETS"] == "1"
    _children = [0]
    _ALLOWED_WRITE = ("/dev/null",)
    _SPAWN_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system",
                     "subprocess.Popen", "os.exec", "pty.spawn")
    _PATH_EVENTS = ("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown",
                    "os.symlink", "os.link", "os.truncate", "os.utime", "shutil.rmtree",
                    "shutil.move", "shutil.copyfile", "shutil.copytree")

    def _inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor
        path = os.fsdecode(path)
        if path in _ALLOWED_WRITE:
            return True
        real = os.path.realpath(os.path.join(_root, path))
        return real == _root or real.startswith(_root + os.sep)

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writes and path is not None and not _inside(path):
                raise PermissionError(f"sandbox: writing outside the working directory: {path}")
        elif event in _PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the working directory")
        elif event.startswith(_SPAWN_EVENTS):
            if os.getpid() != _top_pid:
                raise PermissionError("sandbox: child processes may not create processes")
            _children[0] += 1
            if _children[0] > _max_children:
                raise PermissionError("sandbox: process limit reached")
        elif _block_sockets and event in ("socket.__new__", "socket.connect", "socket.bind"):
            raise PermissionError("sandbox: network access is disabled")

    sys.addaudithook(_hook)
    del _hook
    sys.argv = [sys.argv[1]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


@functools.lru_cache(maxsize=1)
def _namespace_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that gives a new PID + network namespace, or () if refused."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    base = (unshare, "--net", "--pid", "--fork", "--kill-child")
    # Root can create namespaces directly; others need an unprivileged user namespace.
    for prefix in (base, (*base[:1], "--user", "--map-root-user", *base[1:])):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def isolation_report() -> dict[str, str]:
    """Which containment mechanisms are in force on this machine (for logs and cards)."""
    namespaces = bool(_namespace_prefix())
    return {
        "network": "network namespace (unshare --net)" if namespaces else "audit hook on sockets",
        "processes": (
            "PID namespace + RLIMIT_NPROC + audit-hook spawn cap"
            if namespaces
            else "process group kill + RLIMIT_NPROC + audit-hook spawn cap"
        ),
        "files": "temporary working directory + audit hook on writes outside it",
        "memory": "RLIMIT_AS",
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


def _tail(path: Path, limit: int) -> str:
    data = path.read_bytes() if path.exists() else b""
    return data[-limit:].decode("utf-8", errors="replace")


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Execute ``code`` as a Python script in the sandbox and report how it ended.

    Args:
        code: the full program (solution plus its tests); a failing assert exits non-zero.
        limits: time, memory, process and output limits; defaults when None.
    """
    limits = limits or SandboxLimits()
    namespace = _namespace_prefix()
    with tempfile.TemporaryDirectory(prefix="r2sft-sandbox-") as scratch:
        scratch_path = Path(scratch)
        workdir = scratch_path / "work"  # the child's whole world; logs stay outside it
        workdir.mkdir()
        (scratch_path / "bootstrap.py").write_text(_BOOTSTRAP)
        (workdir / "solution.py").write_text(code)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "R2SFT_SANDBOX_MEMORY_BYTES": str(limits.memory_mb * 2**20),
            "R2SFT_SANDBOX_FILE_BYTES": str(limits.max_file_mb * 2**20),
            "R2SFT_SANDBOX_CPU_SECONDS": str(max(1, int(limits.timeout_s) + 1)),
            "R2SFT_SANDBOX_NPROC": str(_processes_of_user(os.getuid()) + limits.max_processes),
            "R2SFT_SANDBOX_MAX_CHILDREN": str(limits.max_processes),
            "R2SFT_SANDBOX_BLOCK_SOCKETS": "0" if namespace else "1",
        }
        command = [*namespace, sys.executable, "-I", "-B", str(scratch_path / "bootstrap.py")]
        command.append(str(workdir / "solution.py"))
        stdout_path, stderr_path = scratch_path / "stdout.txt", scratch_path / "stderr.txt"
        start = time.monotonic()
        timed_out = False
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # own process group: killpg reaches every descendant
            )
            try:
                returncode: int | None = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            finally:
                # Kill the group even after a normal exit: background children may linger.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                process.wait()
        duration = time.monotonic() - start
        return SandboxResult(
            passed=(not timed_out and returncode == 0),
            returncode=returncode,
            timed_out=timed_out,
            stdout=_tail(stdout_path, limits.max_output_chars),
            stderr=_tail(stderr_path, limits.max_output_chars),
            duration_s=duration,
        )


def run_many(
    programs: list[CodeCheck],
    limits: SandboxLimits | None = None,
    max_workers: int | None = None,
) -> list[SandboxResult]:
    """Run many programs, each in its own sandbox, ``max_workers`` at a time (order kept).

    Threads suffice: each sandbox is a separate process and the thread only waits on it.
    """
    if not programs:
        return []
    workers = max_workers or max(1, min(len(programs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda program: run_tests(program, limits), programs))


def run_tests(program: CodeCheck, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``program``'s solution, then its tests, in one sandbox."""
    return run_python(f"{program.solution}\n\n{program.tests}\n", limits)
