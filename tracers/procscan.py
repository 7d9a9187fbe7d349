"""Tasks and their kernel state read from ``/proc`` alone (root only: kernel stacks need it).

The tracepoint plan sees a writeback wait begin at its tracepoint; a task that went to sleep
before tracing started (a server that stopped answering an hour ago) is found here instead
(:func:`blocked_in`). ``fusewb stuck`` builds its snapshot from the same readers: every task in
the given states with its kernel stack (:func:`scan_tasks`), the syscall it sleeps in
(:func:`task_syscall`, arguments decoded by :data:`FILE_SYSCALLS`), the file behind a descriptor
without touching it (:func:`fd_file`: ``readlink`` and ``fdinfo``, never ``stat``, which would
ask a stalled FUSE server for its attributes), file mappings (:func:`file_maps`), the holders of
``/dev/fuse`` (:func:`dev_fuse_holders`), and how long a task has been off the CPU
(:class:`SleepClock`).

How long a task has slept: ``/proc/PID/task/TID/sched`` gives ``se.exec_start``, the time (ms,
the CPU's ``rq_clock_task``) at which the task last ran; it stays put while the task sleeps.
That clock is per CPU (the CPUs of this machine differ by hundreds of ms) and leaves out IRQ and
steal time, so :class:`SleepClock` reads "now" on the task's own CPU (``stat`` field 39) by moving
this thread there and reading its own ``exec_start``. The result is the length of the current
sleep (a task woken and put back to sleep, e.g. by a waitqueue shared with other folios, starts
again), short by the IRQ and steal time of that CPU meanwhile. Kernels without
``/proc/PID/sched`` (``CONFIG_SCHED_DEBUG`` off, before 6.15) give no duration.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["blocked_in", "TaskStack", "scan_tasks", "threads_of", "read_frames", "task_syscall", "FILE_SYSCALLS",
           "syscall_name", "FdFile", "fd_file", "FileMap", "file_maps", "dev_fuse_holders",
           "SleepClock"]

PROC = Path("/proc")
FUSE_DEVICE = (10, 229)  # major, minor of /dev/fuse (misc device)


def _frames(stack_text: str) -> list[str]:
    """``[<0>] folio_wait_bit+0xd6/0x220`` lines -> function names, innermost first."""
    out = []
    for line in stack_text.splitlines():
        name = line.split("] ", 1)[-1].split("+", 1)[0].strip()
        if name:
            out.append(name)
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None  # the task exited, or no permission


def read_frames(tgid: int, tid: int) -> list[str] | None:
    """The kernel stack of a thread, innermost first; None if it cannot be read."""
    text = _read(f"/proc/{tgid}/task/{tid}/stack")
    return None if text is None else _frames(text)


def blocked_in(function: str, proc: Path = PROC) -> list[dict]:
    """Every task in uninterruptible sleep (D) whose kernel stack holds ``function``:
    ``{pid, tgid, comm, frames}`` (pid = thread id)."""
    return [{"pid": t.tid, "tgid": t.tgid, "comm": t.comm, "frames": t.frames}
            for t in scan_tasks({"D"}, lambda t: function in t.frames, proc)]


@dataclass
class TaskStack:
    """One thread: ids, name, scheduler state letter, last CPU, kernel stack (innermost first),
    and whether it is a kernel thread (no user-space syscall to read)."""

    tgid: int
    tid: int
    comm: str
    state: str
    cpu: int
    frames: list[str]
    kernel_thread: bool = False


PF_KTHREAD = 0x00200000


def _stat(tgid: int, tid: int, proc: Path = PROC) -> tuple[str, str, int, bool] | None:
    """``(comm, state, cpu, kernel thread)`` from ``/proc/TGID/task/TID/stat``."""
    text = _read(f"{proc}/{tgid}/task/{tid}/stat")
    if text is None:
        return None
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    try:
        return (head.partition("(")[2], fields[0], int(fields[36]),
                bool(int(fields[6]) & PF_KTHREAD))
    except (IndexError, ValueError):
        return None


def _numeric(folder: str) -> list[int]:
    try:
        return [int(name) for name in os.listdir(folder) if name.isdigit()]
    except OSError:
        return []


def threads_of(tgid: int, proc: Path = PROC) -> list[int]:
    """Thread ids of process ``tgid`` (empty if it is gone)."""
    return _numeric(f"{proc}/{tgid}/task")


def scan_tasks(states: Iterable[str] | None, keep: Callable[[TaskStack], bool] | None = None,
               proc: Path = PROC, tgids: Iterable[int] | None = None) -> Iterator[TaskStack]:
    """Every thread (of ``tgids``, default all) whose state letter is in ``states`` (None: any),
    with its kernel stack, for which ``keep`` holds. Only those threads' stacks are read."""
    wanted = None if states is None else frozenset(states)
    for tgid in (_numeric(str(proc)) if tgids is None else tgids):
        for tid in threads_of(tgid, proc):
            stat = _stat(tgid, tid, proc)
            if stat is None or (wanted is not None and stat[1] not in wanted):
                continue
            stack = _read(f"{proc}/{tgid}/task/{tid}/stack")
            if stack is None:
                continue
            task = TaskStack(tgid, tid, stat[0], stat[1], stat[2], _frames(stack), stat[3])
            if keep is None or keep(task):
                yield task


# syscall name -> (argument index, "fd" or "addr"): where its file is named. x86_64 numbers and
# the asm-generic ones (arm64, riscv64); close is listed without an argument: its descriptor is
# gone from the table before it flushes, and the number may already be reused.
FILE_SYSCALLS: dict[str, tuple[int, str] | None] = {
    "read": (0, "fd"), "write": (0, "fd"), "pread64": (0, "fd"), "pwrite64": (0, "fd"),
    "readv": (0, "fd"), "writev": (0, "fd"), "preadv": (0, "fd"), "pwritev": (0, "fd"),
    "preadv2": (0, "fd"), "pwritev2": (0, "fd"), "fsync": (0, "fd"), "fdatasync": (0, "fd"),
    "ftruncate": (0, "fd"), "sync_file_range": (0, "fd"), "fallocate": (0, "fd"),
    "syncfs": (0, "fd"), "fstat": (0, "fd"), "getdents64": (0, "fd"), "lseek": (0, "fd"),
    "fadvise64": (0, "fd"), "copy_file_range": (2, "fd"), "mmap": (4, "fd"),
    "msync": (0, "addr"), "munmap": (0, "addr"), "close": None, "exit_group": None,
    "exit": None, "sync": None, "openat": None, "newfstatat": None, "statx": None,
}
_NUMBERS = {
    "x86_64": {
        0: "read", 1: "write", 17: "pread64", 18: "pwrite64", 19: "readv", 20: "writev",
        295: "preadv", 296: "pwritev", 327: "preadv2", 328: "pwritev2", 74: "fsync",
        75: "fdatasync", 77: "ftruncate", 277: "sync_file_range", 285: "fallocate",
        306: "syncfs", 5: "fstat", 217: "getdents64", 8: "lseek", 221: "fadvise64",
        326: "copy_file_range", 9: "mmap", 26: "msync", 11: "munmap", 3: "close",
        231: "exit_group", 60: "exit", 162: "sync", 257: "openat", 262: "newfstatat",
        332: "statx",
    },
    "generic": {
        63: "read", 64: "write", 67: "pread64", 68: "pwrite64", 65: "readv", 66: "writev",
        69: "preadv", 70: "pwritev", 286: "preadv2", 287: "pwritev2", 82: "fsync",
        83: "fdatasync", 46: "ftruncate", 84: "sync_file_range", 47: "fallocate",
        267: "syncfs", 80: "fstat", 61: "getdents64", 62: "lseek", 223: "fadvise64",
        285: "copy_file_range", 222: "mmap", 227: "msync", 215: "munmap", 57: "close",
        94: "exit_group", 93: "exit", 81: "sync", 56: "openat", 79: "newfstatat",
        291: "statx",
    },
}


def syscall_name(number: int, machine: str | None = None) -> str | None:
    """The name of syscall ``number`` on this machine if :data:`FILE_SYSCALLS` knows it."""
    machine = machine or os.uname().machine
    table = _NUMBERS["x86_64"] if machine == "x86_64" else (
        _NUMBERS["generic"] if machine in ("aarch64", "riscv64") else {})
    return table.get(number)


def task_syscall(tgid: int, tid: int) -> tuple[int, list[int]] | None:
    """``(number, arguments)`` of the syscall a sleeping thread is in; number -1 when it sleeps
    outside a syscall (a page fault); None when it runs or cannot be read."""
    text = _read(f"/proc/{tgid}/task/{tid}/syscall")
    if not text or text.startswith("running"):
        return None
    fields = text.split()
    try:
        return int(fields[0]), [int(x, 16) for x in fields[1:7]]
    except ValueError:
        return None


@dataclass(frozen=True)
class FdFile:
    """The file behind a descriptor: path (``readlink``), mount ID and inode (``fdinfo``)."""

    fd: int
    path: str
    mnt_id: int | None
    ino: int | None


def fd_file(tgid: int, fd: int) -> FdFile | None:
    """The file behind ``fd`` of ``tgid``, read without touching the file (no ``stat``)."""
    try:
        path = os.readlink(f"/proc/{tgid}/fd/{fd}")
    except OSError:
        return None
    info: dict[str, int] = {}
    for line in (_read(f"/proc/{tgid}/fdinfo/{fd}") or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("mnt_id", "ino"):
            info[key] = int(value.strip())
    return FdFile(fd, path, info.get("mnt_id"), info.get("ino"))


@dataclass(frozen=True)
class FileMap:
    """A file mapping of a process (``/proc/PID/maps``)."""

    start: int
    end: int
    perms: str
    major: int
    minor: int
    ino: int
    path: str


def file_maps(tgid: int) -> list[FileMap]:
    """The file-backed mappings of ``tgid`` (no anonymous ones)."""
    out = []
    for line in (_read(f"/proc/{tgid}/maps") or "").splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == "0":
            continue
        start, _, end = fields[0].partition("-")
        major, _, minor = fields[3].partition(":")
        out.append(FileMap(int(start, 16), int(end, 16), fields[1], int(major, 16),
                           int(minor, 16), int(fields[4]), fields[5]))
    return out


def _is_fuse_device(link: str, fd_path: str) -> bool:
    if not link.endswith("/fuse") or not link.startswith("/"):
        return False
    if link != "/dev/fuse" and "/dev/" not in link:
        return False  # never stat a file that may live on a FUSE mount
    try:
        st = os.stat(fd_path)
    except OSError:
        return False
    return (os.major(st.st_rdev), os.minor(st.st_rdev)) == FUSE_DEVICE


def dev_fuse_holders(proc: Path = PROC) -> dict[int, list[int]]:
    """Processes holding ``/dev/fuse`` open: ``{tgid: [fd, ...]}``."""
    holders: dict[int, list[int]] = {}
    for tgid in _numeric(str(proc)):
        folder = f"{proc}/{tgid}/fd"
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"{folder}/{name}")
            except OSError:
                continue
            if link.endswith("/fuse") and _is_fuse_device(link, f"{folder}/{name}"):
                holders.setdefault(tgid, []).append(int(name))
    return holders


def _exec_start_ms(path: str) -> float | None:
    for line in (_read(path) or "").splitlines():
        if line.startswith("se.exec_start"):
            try:
                return float(line.partition(":")[2])
            except ValueError:
                return None
    return None


class SleepClock:
    """How long threads have been off the CPU, from ``se.exec_start`` (see the module text)."""

    SOURCE = ("/proc/PID/task/TID/sched se.exec_start against the same CPU's clock: the "
              "current sleep only, short by that CPU's IRQ and steal time")

    def __init__(self) -> None:
        self._last_ran: dict[tuple[int, int], tuple[int, float]] = {}

    def note(self, tgid: int, tid: int, cpu: int) -> None:
        """Remember when a sleeping thread last ran (read it while it still sleeps)."""
        started = _exec_start_ms(f"/proc/{tgid}/task/{tid}/sched")
        if started is not None:
            self._last_ran[(tgid, tid)] = (cpu, started)

    def _now(self, cpus: set[int]) -> dict[int, float]:
        """Each CPU's clock: this thread's ``exec_start`` right after it moved there."""
        before = os.sched_getaffinity(0)
        now: dict[int, float] = {}
        try:
            for cpu in sorted(cpus):
                try:
                    os.sched_setaffinity(0, {cpu})
                except OSError:
                    continue  # not allowed on that CPU (cpuset): no duration for its tasks
                os.sched_yield()
                value = _exec_start_ms("/proc/thread-self/sched")
                if value is not None:
                    now[cpu] = value
        finally:
            os.sched_setaffinity(0, before)
        return now

    def asleep_seconds(self) -> dict[tuple[int, int], float]:
        """``{(tgid, tid): seconds}`` for every noted thread whose CPU clock could be read."""
        now = self._now({cpu for cpu, _ in self._last_ran.values()})
        return {key: round(max(0.0, now[cpu] - started) / 1000.0, 3)
                for key, (cpu, started) in self._last_ran.items() if cpu in now}
