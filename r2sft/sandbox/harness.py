"""The code sandbox's first process: isolation, the solution in a separate worker, the tests
here, and the verdict on a pipe only this process holds.

Started by :mod:`r2sft.sandbox.runner` as ``python -I -S -B harness.py VERDICT_FD
MOUNTPOINT`` (inside ``unshare`` when namespaces are available). Standard library only: the
project is not importable inside the sandbox. Written by hand because no pip-installable
library gives a namespace sandbox (bubblewrap, nsjail and firejail are system packages).

The sequence, and why:

1. Read the *setup* frame from stdin (limits, the solution's code, the isolation plan).
2. Become non-dumpable, so no process without ``CAP_SYS_PTRACE`` over this one can read its
   memory or open its descriptors through ``/proc``.
3. In namespace mode, build a minimal root on a tmpfs: read-only bind mounts of ``/usr``,
   ``/etc`` (``shadow`` and friends masked), the library folders and the Python
   installation (exactly the entries of ``sys.path`` and the prefixes, nothing else of
   ``$HOME``), a few device nodes, a fresh ``/proc`` of the sandbox's PID namespace, and a
   size-limited writable tmpfs at ``/tmp``, the work folder. ``pivot_root`` into it and
   detach the host's tree: it no longer exists in this mount namespace.
4. Fork the worker *before* reading anything secret, so its copy of this process's memory
   holds no token and no test. The worker closes every descriptor but its two RPC pipes,
   enters the tree with ``chroot`` (a chrooted process cannot create user namespaces),
   lowers its resource limits, drops to another user (a per-run uid, or an unmapped one in
   a nested user namespace), drops every capability, sets ``no_new_privs``, adds the audit
   hook, and runs the solution as module ``solution`` (never ``__main__``).
5. Read the *job* frame (the tests, the context they need, the names they call, the
   per-run token) and run the tests here. A name the tests call is a proxy that sends the
   arguments to the worker and gets the result back through :func:`encode` /
   :func:`decode`: only plain values (numbers, strings, bytes, lists, tuples, sets,
   dicts, None) cross; anything else stays in the worker as an opaque handle, equal only
   to itself, so an ``__eq__`` that always says True never reaches the tests.
6. Write ``{"token", "passed", "detail", "isolation"}`` to the verdict pipe. The parent
   counts a pass only with the right token on that pipe: exit statuses, stdout and
   anything the worker does cannot make one.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import linecache
import os
import resource
import struct
import sys
import traceback
import types

MAX_DEPTH = 100  # nesting of a value crossing between the worker and the tests
MAX_FRAME = 64 * 2**20  # bytes of one message
_FRAME = struct.Struct("!Q")
_BIG_INT_BITS = 4000  # ints this large cross as hex: str(int) is capped at 4300 digits

# Linux constants (<sys/mount.h>, <sched.h>, <linux/prctl.h>, <linux/capability.h>).
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}  # syscall numbers

# What the minimal root holds besides the Python installation.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
MASKED_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
MASKED_DIRS = ("/etc/ssl/private", "/etc/ssh")
DEVICES = ("null", "zero", "full", "random", "urandom")
SANDBOX_OWN_DIRS = ("/", "/tmp", "/proc", "/dev")  # never bound from the host
TREE = "/r"  # where the tree sits inside the pivoted root (the worker's chroot)


# ---------------------------------------------------------------- values across processes


class RemoteObject:
    """A value of the solution's that is not plain: a handle, equal only to itself."""

    __slots__ = ("ref", "type_name")

    def __init__(self, ref: int, type_name: str) -> None:
        self.ref = ref
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<solution's {self.type_name} object #{self.ref}>"


_CONTAINERS = {list: "l", tuple: "t", set: "s", frozenset: "f"}
_BASES = (bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset)


def encode(value: object, keep: object = None, depth: int = 0) -> object:
    """``value`` as JSON-ready data. Containers become ``[tag, *items]``; a subclass of a
    plain type becomes that type (a namedtuple a tuple, a numpy float a float); anything
    else goes to ``keep(value) -> (ref, type name)`` (the worker's handle table), or is a
    TypeError when ``keep`` is None (the tests may only send plain values)."""
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is float:
        return value
    if kind is int:
        return value if value.bit_length() < _BIG_INT_BITS else ["i", format(value, "x")]
    if depth >= MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
    if kind in _CONTAINERS:
        return [_CONTAINERS[kind], *(encode(item, keep, depth + 1) for item in value)]
    if kind is dict:
        pairs: list[object] = ["d"]
        for key, item in value.items():
            pairs += [encode(key, keep, depth + 1), encode(item, keep, depth + 1)]
        return pairs
    if kind is bytes or kind is bytearray:
        return ["b" if kind is bytes else "y", value.decode("latin-1")]
    if kind is complex:
        return ["c", value.real, value.imag]
    if kind is RemoteObject:
        return ["r", value.ref, value.type_name]
    for base in _BASES:
        if isinstance(value, base):
            plain = base(value)
            if type(plain) is base:
                return encode(plain, keep, depth)
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        plain = value.item()  # a numpy scalar
        if type(plain) in _BASES:
            return encode(plain, keep, depth)
    if keep is None:
        raise TypeError(f"cannot send a {kind.__name__} to the solution (plain values only)")
    ref, type_name = keep(value)
    return ["r", ref, type_name]


def decode(data: object, resolve: object = None, depth: int = 0) -> object:
    """The inverse of :func:`encode`, strict: anything malformed is a ValueError. Handles
    become ``resolve(ref, type_name)`` (the worker's objects), or :class:`RemoteObject`."""
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is not list or not data or type(data[0]) is not str or depth >= MAX_DEPTH:
        raise ValueError("malformed value")
    tag, items = data[0], data[1:]
    if tag in ("l", "t", "s", "f"):
        values = [decode(item, resolve, depth + 1) for item in items]
        return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](values)
    if tag == "d" and len(items) % 2 == 0:
        values = [decode(item, resolve, depth + 1) for item in items]
        return dict(zip(values[::2], values[1::2], strict=True))
    if tag in ("b", "y") and len(items) == 1 and type(items[0]) is str:
        raw = items[0].encode("latin-1")
        return raw if tag == "b" else bytearray(raw)
    if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
        return complex(items[0], items[1])
    if tag == "i" and len(items) == 1 and type(items[0]) is str:
        return int(items[0], 16)
    if tag == "r" and len(items) == 2 and type(items[0]) is int and type(items[1]) is str:
        return resolve(*items) if resolve is not None else RemoteObject(*items)
    raise ValueError(f"malformed value tagged {tag!r}")


# ---------------------------------------------------------------- framing


def read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``, or None at end of file (os.read: no read-ahead buffer,
    so nothing past this frame is pulled into memory)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> object:
    """The next JSON message on ``fd`` (None at end of file)."""
    header = read_exact(fd, _FRAME.size)
    if header is None:
        return None
    (size,) = _FRAME.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"message of {size} bytes (limit {MAX_FRAME})")
    body = read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


def frame(message: object) -> bytes:
    """``message`` as JSON behind its length."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes (limit {MAX_FRAME})")
    return _FRAME.pack(len(body)) + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- system calls

_libc = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encode_path = lambda p: None if p is None else os.fsencode(p)  # noqa: E731
    result = libc().mount(
        encode_path(source), encode_path(target), encode_path(fstype), flags, data.encode() or None
    )
    _check(result, f"mount {source or fstype} on {target}")


def prctl(option: int, value: int) -> None:
    _check(libc().prctl(option, value, 0, 0, 0), f"prctl({option})")


def drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP), so no exec can regain one."""
    for cap in range(64):
        if libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows, or not allowed


def drop_capabilities() -> None:
    """The bounding set where still allowed, then the effective, permitted and inheritable
    sets."""
    drop_bounding_set()

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    header = Header(_LINUX_CAPABILITY_VERSION_3, 0)
    _check(libc().capset(ctypes.byref(header), (Data * 2)()), "capset")


# ---------------------------------------------------------------- the minimal root


def _bind(source: str, target: str, devices: bool = False) -> None:
    """Bind ``source`` on ``target`` read-only (no set-uid; device files only if
    ``devices``: a read-only mount still lets one write *to* a device, not change it)."""
    mount(source, target, None, MS_BIND)
    # A remount must repeat the flags the source mount has (locked in a user namespace).
    flag_map = {os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME}
    flag_map.update({os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME})
    kept = os.statvfs(source).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (0 if devices else MS_NODEV)
    flags |= sum(ms for st, ms in flag_map.items() if kept & st)
    if kept & os.ST_NODEV:
        flags |= MS_NODEV
    mount(None, target, None, flags)


def _place(host_path: str, tree: str) -> str | None:
    """Create ``host_path``'s stand-in under ``tree``: the same symlink, or an empty
    directory / file to mount on (returned)."""
    target = tree + host_path
    if os.path.islink(host_path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(host_path), target)
        return None
    if os.path.isdir(host_path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    return target


_parent_python: list[str] = []  # the parent's venv and site-packages (from the setup)


def python_paths() -> list[str]:
    """The folders this interpreter reads: its prefixes, every existing sys.path entry, and
    the parent's venv (whose ``bin/python`` and ``pyvenv.cfg`` a spawned Python needs)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(entry for entry in sys.path if entry and os.path.isabs(entry))
    paths.update(_parent_python)
    return [path for path in paths if os.path.exists(path)]


def build_root(mountpoint: str, work_mb: int) -> dict[str, str]:
    """Build the minimal root at ``mountpoint`` and pivot into it (see the module docs).
    Returns what is in force, for the isolation report."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    mount("r2sft-root", mountpoint, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    tree = mountpoint + TREE
    os.mkdir(tree)
    # The work folder first: a Python installed under /tmp (a checkout or venv there) is then
    # bound inside it, read-only, instead of being hidden by it.
    os.makedirs(tree + "/tmp")
    mount("r2sft-work", tree + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={work_mb}m,mode=1777")
    # Shortest first, so a path inside an already bound one is skipped (already there).
    candidates = sorted({*(d for d in SYSTEM_DIRS if os.path.lexists(d)), *python_paths()})
    bound: list[str] = []
    for path in sorted(candidates, key=len):
        if any(path == done or path.startswith(done.rstrip("/") + "/") for done in bound):
            continue
        if path in SANDBOX_OWN_DIRS or path.startswith(("/proc/", "/dev/")):
            continue  # the sandbox's own: a sys.path entry "/" or "/tmp" must not expose the host
        target = _place(path, tree)
        if target is not None:
            _bind(path, target)
        bound.append(path)
    empty = mountpoint + "/empty"
    open(empty, "w").close()
    os.chmod(empty, 0)
    for path in MASKED_FILES:
        if os.path.isfile(tree + path):
            _bind(empty, tree + path)
    for path in MASKED_DIRS:
        if os.path.isdir(tree + path):
            mount("r2sft-mask", tree + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0")
    os.makedirs(tree + "/dev")
    for name in DEVICES:
        open(f"{tree}/dev/{name}", "w").close()
        _bind(f"/dev/{name}", f"{tree}/dev/{name}", devices=True)
    for name, link in (("fd", "/proc/self/fd"), ("shm", "/tmp")):
        os.symlink(link, f"{tree}/dev/{name}")
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", f"{tree}/dev/{name}")
    os.makedirs(tree + "/proc")
    proc = "none: the kernel refused a new /proc (the host's is hidden)"
    for options in ("hidepid=invisible", "hidepid=2", ""):
        try:
            mount("proc", tree + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
        except OSError:
            continue
        proc = f"private /proc of the sandbox's PID namespace ({options or 'no hidepid'})"
        break
    number = _PIVOT_ROOT.get(os.uname().machine)
    os.chdir(mountpoint)
    root = "read-only minimal root (pivot_root; the host's tree is detached)"
    try:
        if number is None:
            raise OSError(f"no pivot_root syscall number for {os.uname().machine}")
        _check(libc().syscall(number, b".", b"."), "pivot_root")
        _check(libc().umount2(b".", MNT_DETACH), "umount old root")
    except OSError as error:
        root = f"read-only minimal root entered by chroot only ({error})"
        os.chroot(".")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return {
        "filesystem": f"{root}; a size-limited writable tmpfs /tmp is the work folder",
        "proc": proc,
    }


# ---------------------------------------------------------------- the worker


def _uid_mapped(uid: int) -> bool:
    try:
        with open("/proc/self/uid_map") as handle:
            for line in handle:
                inside, _, count = (int(x) for x in line.split())
                if inside <= uid < inside + count:
                    return True
    except OSError:
        pass
    return False


def _open_to_others(path: str) -> bool:
    """Whether another user can read folder ``path`` (listed, as imports do) and every
    folder above it is searchable."""
    path = os.path.realpath(path)
    needed = 0o005
    while True:
        if os.stat(path).st_mode & needed != needed:
            return False
        if path == os.path.dirname(path):
            return True
        path, needed = os.path.dirname(path), 0o001


def plan_user(setup: dict) -> str:
    """How the worker leaves this process's privileges: 'uid' (root: another uid),
    'userns' (a nested user namespace: an unmapped uid), or 'caps' (same uid, no
    capabilities). Without namespaces another uid needs to read the Python installation
    where it is (pyenv under /root is not)."""
    if os.geteuid() == 0 and _uid_mapped(setup["uid"]):
        if setup["namespaces"] or all(_open_to_others(p) for p in python_paths()):
            return "uid"
    if setup["namespaces"]:
        return "userns"
    return "caps"


def describe_user(plan: str, setup: dict) -> str:
    return {
        "uid": "a uid/gid of its own per run, no supplementary groups, no capabilities",
        "userns": "an unmapped uid in a nested user namespace, no capabilities",
        "caps": f"the parent's uid ({os.getuid()}), no capabilities",
    }[plan]


def install_audit_hook(
    work: str, max_children: int, block_sockets: bool, block_signals: bool
) -> None:
    """The Python-level layer: refuse writes outside ``work``, process creation past
    ``max_children`` (and from any process but this one), and optionally sockets and
    signals to processes outside the sandbox's process group. ctypes or a shell bypass it;
    the namespaces do not depend on it."""
    # Bound now: the solution may replace the os module's functions.
    realpath, fsdecode, getpid, getpgid = os.path.realpath, os.fsdecode, os.getpid, os.getpgid
    top = getpid()
    children = [0]
    spawn = (
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "subprocess.Popen",
        "os.exec",
        "pty.spawn",
    )
    paths = (
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.rename",
        "os.chmod",
        "os.chown",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "shutil.copytree",
    )

    def inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor
        path = fsdecode(path)
        if path == "/dev/null":
            return True
        real = realpath(path)  # relative paths: against the current folder
        return real == work or real.startswith(work + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing outside the work folder: {path}")
        elif event in paths:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the work folder")
        elif event.startswith(spawn):
            if getpid() != top:
                raise PermissionError("sandbox: child processes may not create processes")
            children[0] += 1
            if children[0] > max_children:
                raise PermissionError("sandbox: process limit reached")
        elif block_sockets and event in ("socket.__new__", "socket.connect", "socket.bind"):
            raise PermissionError("sandbox: network access is disabled")
        elif block_signals and event in ("os.kill", "os.killpg") and not own(event, args[0]):
            raise PermissionError("sandbox: signals outside the sandbox's processes")

    def own(event, target):
        # Whether a signal to ``target`` stays in the sandbox's process group.
        if event == "os.kill" and target > 0:
            try:
                return getpgid(target) == getpgid(0)
            except OSError:
                return True  # no such process: the signal itself fails
        group = target if event == "os.killpg" else -target
        return target == 0 or group == getpgid(0)

    sys.addaudithook(hook)


def _enter_worker(setup: dict, plan: str, keep: tuple[int, int]) -> None:
    """Everything between fork and the solution's first line (see the module docs)."""
    low, high = sorted(keep)
    os.close(0)
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 20)  # the verdict pipe, the payload, everything inherited
    if plan == "userns":  # before chroot: a chrooted process cannot create user namespaces
        _check(libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    if setup["namespaces"]:
        os.chroot(TREE)
        os.chdir("/tmp")
    else:
        os.chdir(setup["work"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    limits = setup["limits"]
    nproc = limits["nproc"] if plan == "caps" else limits["processes"] + 1
    for limit, value in (
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"]),
        (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, nproc),
    ):
        resource.setrlimit(limit, (value, value))
    if plan == "uid":
        uid = setup["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        drop_bounding_set()  # needs CAP_SETPCAP, which setresuid is about to drop
        os.setresuid(uid, uid, uid)
    if plan != "caps" or os.geteuid() == 0:
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # the run may end with a SIGKILL
    fallback = not setup["namespaces"]
    install_audit_hook(os.path.realpath(os.getcwd()), limits["processes"], fallback, fallback)


def run_worker(setup: dict, plan: str, requests: int, replies: int) -> None:
    """The worker: enter the sandbox, load the solution, answer calls until end of file."""
    try:
        _enter_worker(setup, plan, (requests, replies))
    except BaseException:
        traceback.print_exc()
        os._exit(70)
    send = lambda message: write_all(replies, frame(message))  # noqa: E731
    module = types.ModuleType("solution")
    module.__file__ = os.path.join(os.getcwd(), "solution.py")
    sys.modules["solution"] = module
    try:
        with open(module.__file__, "w") as handle:  # for tracebacks (linecache)
            handle.write(setup["solution"])
        exec(compile(setup["solution"], module.__file__, "exec"), module.__dict__)
    except BaseException as error:  # SystemExit too: leaving early is failing to load
        traceback.print_exc()
        send(["load_error", f"{type(error).__name__}: {error}"])
        os._exit(1)
    send(["ready"])
    objects: dict[int, object] = {}

    def keep(value: object) -> tuple[int, str]:
        objects[id(value)] = value
        return id(value), type(value).__name__

    def resolve(ref: int, type_name: str) -> object:
        if ref not in objects:
            raise ValueError(f"no {type_name} object #{ref} in the solution")
        return objects[ref]

    while True:
        request = read_frame(requests)
        if request is None:
            os._exit(0)
        target, args, kwargs = request
        try:
            if isinstance(target, str):
                if target not in module.__dict__:
                    raise NameError(f"name {target!r} is not defined by the solution")
                function = module.__dict__[target]
            else:
                function = resolve(*target)
            result = function(*decode(args, resolve), **decode(kwargs, resolve))
            reply = ["ok", encode(result, keep)]
        except BaseException as error:
            try:
                reply = ["raise", type(error).__name__, str(error)[:2000]]
            except BaseException:
                reply = ["raise", "Exception", "unprintable exception"]
            traceback.print_exc()
        send(reply)


# ---------------------------------------------------------------- the tests


class SolutionCrashed(BaseException):
    """The worker died or broke the protocol: the run fails whatever the tests catch."""


class SolutionError(Exception):
    """An exception of the solution's own type (its name and message kept)."""


class Channel:
    """The tests' end of the RPC pipes."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests, self.replies = requests, replies
        self.crashed: str | None = None

    def receive(self) -> list:
        try:
            reply = read_frame(self.replies)
        except (OSError, ValueError) as error:
            reply = None
            self.crashed = f"protocol error: {error}"
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], str):
            self.crashed = self.crashed or "the solution's process ended"
            raise SolutionCrashed(self.crashed)
        return reply

    def call(self, target: object, args: tuple, kwargs: dict) -> object:
        if self.crashed:
            raise SolutionCrashed(self.crashed)
        message = [target, encode(list(args)), encode(dict(kwargs))]
        try:
            write_all(self.requests, frame(message))
        except OSError as error:
            self.crashed = f"the solution's process ended ({error})"
            raise SolutionCrashed(self.crashed) from None
        reply = self.receive()
        if reply[0] == "ok" and len(reply) == 2:
            try:
                return decode(reply[1])
            except (ValueError, TypeError, RecursionError) as error:
                self.crashed = f"malformed result: {error}"
                raise SolutionCrashed(self.crashed) from None
        if reply[0] == "raise" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
            name, message = reply[1], reply[2]
            if name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
                self.crashed = f"the solution raised {name}"
                raise SolutionCrashed(self.crashed)
            error_type = getattr(builtins, name, None)
            if isinstance(error_type, type) and issubclass(error_type, Exception):
                try:
                    error = error_type(message)
                except Exception:
                    error = SolutionError(f"{name}: {message}")
            else:
                error = SolutionError(f"{name}: {message}")
            raise error
        self.crashed = f"malformed reply {reply[0]!r}"
        raise SolutionCrashed(self.crashed)


class SolutionFunction:
    """What the tests call: a name (or handle) of the solution's, called in the worker."""

    def __init__(self, channel: Channel, target: object, name: str) -> None:
        self._channel, self._target, self.__name__ = channel, target, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._channel.call(self._target, args, kwargs)

    def __repr__(self) -> str:
        return f"<solution's {self.__name__}>"


def run_job(job: dict, channel: Channel) -> tuple[bool, str]:
    """Wait for the solution to load, then run the tests against it."""
    try:
        ready = channel.receive()
    except SolutionCrashed:
        return False, "the solution's process ended before the solution loaded"
    if ready[0] != "ready":
        return False, f"the solution did not load: {ready[1:] if len(ready) > 1 else ready}"
    namespace: dict[str, object] = {"__name__": "__tests__", "__builtins__": builtins}
    for name in ("<context>", "<tests>"):  # source lines in the failure's traceback
        text = job[name.strip("<>")]
        linecache.cache[name] = (len(text), None, text.splitlines(True), name)
    try:
        exec(compile(job["context"], "<context>", "exec"), namespace)
        for name in job["entry_points"]:
            namespace[name] = SolutionFunction(channel, name, name)
        exec(compile(job["tests"], "<tests>", "exec"), namespace)
    except BaseException as error:
        traceback.print_exc()
        return False, f"{type(error).__name__}: {error}"[:2000]
    if channel.crashed:
        return False, channel.crashed
    return True, "every test returned"


# ---------------------------------------------------------------- main


def main() -> None:
    verdict_fd, mountpoint = int(sys.argv[1]), sys.argv[2]
    setup = read_frame(0)
    # Started with -S (site's .pth processing costs more than the rest of a run): the
    # parent's site-packages folders, without their .pth files.
    sys.path.extend(path for path in setup["site_packages"] if path not in sys.path)
    _parent_python.extend(setup["python_dirs"])
    report: dict[str, str] = {}
    verdict = {"token": "", "passed": False, "detail": "", "isolation": report, "plan": None}
    worker = plan = None
    try:
        prctl(PR_SET_DUMPABLE, 0)
        plan = setup["expect_plan"] or plan_user(setup)
        verdict["plan"] = plan
        if setup["namespaces"]:
            report.update(build_root(mountpoint, setup["limits"]["work_mb"]))
        else:
            prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the solution come back to us
            if plan == "uid":
                os.chown(setup["work"], setup["uid"], setup["uid"])
        report["user"] = describe_user(plan, setup)
        if setup["namespaces"]:
            report["tests"] = (
                "run by the harness under a second per-run uid, no capabilities"
                if plan == "uid"
                else "run by the harness as the namespace's root, no capabilities"
            )
        if setup["expect"] is not None and report != setup["expect"]:
            raise RuntimeError(f"isolation differs from the probe's: {report} != {setup['expect']}")
        to_worker, from_worker = os.pipe(), os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        worker = os.fork()
        if worker == 0:
            run_worker(setup, plan, to_worker[0], from_worker[1])
            os._exit(0)
        os.close(to_worker[0])
        os.close(from_worker[1])
        job = read_frame(0)  # only now: the worker's copy of this memory holds none of it
        os.close(0)
        verdict["token"] = job["token"]
        if setup["namespaces"]:
            os.chroot(TREE)  # the tests import from the same tree the worker sees
            os.chdir("/")
            drop_harness_privileges(plan, setup["harness_uid"])
        passed, detail = run_job(job, Channel(to_worker[1], from_worker[0]))
        verdict.update(passed=passed, detail=detail)
    except BaseException as error:
        traceback.print_exc()
        verdict["detail"] = f"sandbox setup failed: {type(error).__name__}: {error}"
    if worker and not setup["namespaces"]:
        _end_worker(worker, plan, setup["uid"])  # before the verdict: the parent then kills us
    sys.stdout.flush()
    sys.stderr.flush()
    write_all(verdict_fd, json.dumps(verdict).encode())
    os.close(verdict_fd)
    os._exit(0)


def drop_harness_privileges(plan: str, uid: int) -> None:
    """With namespaces, once the tree is entered and the worker started, the harness needs
    no privilege: the tests run without root, so even a flaw in reading the worker's
    replies would not hand out the sandbox's root."""
    if plan == "uid":
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        drop_bounding_set()
        os.setresuid(uid, uid, uid)
    drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 0)  # a uid change resets it


def _children() -> list[int]:
    """This process's children (orphans included: it is their subreaper)."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == me:
                found.append(int(name))
    return found


def _end_worker(worker: int, plan: str, uid: int) -> None:
    """Without a PID namespace, kill what the worker left: every descendant (orphans come
    to this process, the subreaper, daemons that left the process group included) and, with
    a uid of its own, every process of that uid."""
    try:
        os.kill(worker, 9)
    except OSError:
        pass
    if plan == "uid":
        killer = os.fork()
        if killer == 0:
            try:
                os.setresuid(uid, uid, uid)
                os.kill(-1, 9)
            finally:
                os._exit(0)
        os.waitpid(killer, 0)
    for _ in range(100):  # a forking process may add children while they are killed
        children = _children()
        if not children:
            break
        for child in children:
            try:
                os.kill(child, 9)
                os.waitpid(child, 0)
            except OSError:
                pass


if __name__ == "__main__":
    main()
