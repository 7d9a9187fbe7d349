"""``fusewb stuck``: what waits on FUSE right now, read from ``/proc`` alone (no BPF, any kernel).

A task is listed when it sleeps uninterruptibly (``D``) with a FUSE function in its kernel stack
(``fuse_*``, ``request_wait_answer``: writeback waits under ``fuse_fsync``/``fuse_flush``, the
temp-page era's waits inside FUSE, page locks in FUSE paths, a request waiting for its answer),
or sleeps interruptibly in ``request_wait_answer`` (the first, signal-interruptible phase of a
request), or sleeps in a writeback wait or on a page lock without FUSE frames (sync, migration,
reclaim) while its file is on a FUSE mount, or, when its file cannot be known, while some FUSE
connection has requests waiting (``evidence`` says which). Its ``path`` comes from the analysis'
own rules (:func:`fusewb.analysis.paths.matching_frame`).

Where the mount comes from (``mount_source``): ``fd``, the descriptor of the syscall it sleeps in
(``/proc/PID/task/TID/syscall``, then ``fdinfo`` ``mnt_id``; the file is never ``stat``-ed, which
would ask a stalled server); ``maps``, the mapping holding a ``msync``/``munmap`` address; ``maps
(only FUSE mapping)``, the one FUSE mount among the process's mappings (page faults); ``the only
connection with waiting requests`` (``close``, whose descriptor is gone before it flushes, and
``exit``). Otherwise the mount is unknown (null).

Per connection (``/sys/fs/fuse/connections/N``; fusectl is mounted on a private folder for the
read when it is not mounted, and unmounted again): the ``waiting`` count, its mounts, and the
server: ``/proc`` does not tie a ``/dev/fuse`` descriptor to its connection, so a holder of
``/dev/fuse`` is matched by the mountpoint in its command line, else by the fs subtype
(``fuse.sshfs``) against its name, else as the only holder (``match`` says which). A server thread
asleep in ``D`` on writeback, reclaim, migration or FUSE is flagged ``SERVER_SELF_WAIT``.

The snapshot starts with its ``verdict`` (:func:`verdict`): per connection with tasks or
requests waiting, the likely cause from its server's threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from fusewb.command import Command
from fusewb.contract.frames import (
    DEV_READ_FRAMES,
    LOCK_FRAMES,
    PAGE_LOCK_FRAMES,
    REQUEST_FRAMES,
    TEMP_PAGE_FRAMES,
    WRITEBACK_FRAMES,
)

__all__ = ["stuck", "snapshot", "verdict", "wait_kind", "render_text", "FUSE_SYSCTL"]

FUSE_SYSCTL = Path("/proc/sys/fs/fuse")
# What a stack waits on is checked in this order (wait_kind): the frame sets of contract/frames.py.
SELF_WAIT_PATHS = ("reclaim", "migration")
INFERRED = "the only connection with waiting requests"


def wait_kind(frames: list[str]) -> str | None:
    """What a kernel stack waits on: ``request`` (the server's answer or a request slot),
    ``writeback``, ``page_lock``, ``lock`` (a FUSE inode's lock), ``fuse`` (other FUSE code),
    or None when it holds neither a wait nor a FUSE frame."""
    from fusewb.analysis.paths import is_fuse_frame, normalize_frame  # noqa: PLC0415

    keys = {normalize_frame(f) for f in frames}
    fuse = any(is_fuse_frame(f) for f in frames)
    if keys & REQUEST_FRAMES:
        return "request"
    if keys & WRITEBACK_FRAMES:
        return "writeback"
    if keys & PAGE_LOCK_FRAMES:
        return "page_lock"
    if fuse and keys & LOCK_FRAMES:
        return "lock"
    if keys & TEMP_PAGE_FRAMES:
        return "writeback"
    return "fuse" if fuse else None


def _require_proc(filesystems_file: Path = Path("/proc/filesystems")) -> None:
    """Refuse (one line, exit 2) without root, /proc or FUSE in this kernel."""
    from fusewb.contract.errors import FusewbError  # noqa: PLC0415

    if os.geteuid() != 0:
        raise FusewbError("fusewb stuck reads kernel stacks (/proc/PID/task/TID/stack), which "
                          "only root may read", "run it as root: sudo fusewb stuck")
    try:
        filesystems = filesystems_file.read_text()
    except OSError:
        raise FusewbError("/proc is not mounted", "mount -t proc proc /proc") from None
    if not any(line.split()[-1:] == ["fuse"] for line in filesystems.splitlines()):
        raise FusewbError("this kernel has no FUSE (no 'fuse' in /proc/filesystems), so nothing "
                          "can wait on it", "modprobe fuse if you expected FUSE mounts")


@contextmanager
def _fusectl() -> Iterator[Path | None]:
    """The fusectl folder: the usual one when mounted, else a private mount of it (removed on
    exit); None when fusectl cannot be mounted."""
    from fusewb.tracers.mounts import FUSECTL, fusectl_mounted  # noqa: PLC0415

    if fusectl_mounted():
        yield FUSECTL
        return
    folder = tempfile.mkdtemp(prefix="fusewb-fusectl-")
    try:
        done = subprocess.run(["mount", "-t", "fusectl", "none", folder], capture_output=True,
                              timeout=5, check=False)
        if done.returncode != 0:
            yield None
            return
        try:
            yield Path(folder)
        finally:
            subprocess.run(["umount", folder], capture_output=True, timeout=5, check=False)
    finally:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _read_connections(folder: Path | None) -> dict[int, int | None]:
    """``{connection: waiting}`` from fusectl (empty when it is not available)."""
    out: dict[int, int | None] = {}
    if folder is None:
        return out
    try:
        names = [n for n in os.listdir(folder) if n.isdigit()]
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = int((folder / name / "waiting").read_text())
        except (OSError, ValueError):
            out[int(name)] = None
    return out


class _Mounts:
    """FUSE mounts by mount ID and by device, from this and other mount namespaces."""

    def __init__(self) -> None:
        from fusewb.tracers.mounts import fuse_mounts_by_id  # noqa: PLC0415

        self._by_id = fuse_mounts_by_id
        self.mine = fuse_mounts_by_id()
        self._namespaces: dict[str, dict] = {}

    def by_mnt_id(self, tgid: int, mnt_id: int):
        if mnt_id in self.mine:
            return self.mine[mnt_id]
        try:
            namespace = os.readlink(f"/proc/{tgid}/ns/mnt")
            if namespace not in self._namespaces:
                self._namespaces[namespace] = self._by_id(Path(f"/proc/{tgid}/mountinfo"))
        except OSError:
            return None
        return self._namespaces[namespace].get(mnt_id)

    def by_device(self, major: int, minor: int):
        seen = [self.mine, *self._namespaces.values()]
        return next((m for table in seen for m in table.values()
                     if (m.major, m.minor) == (major, minor)), None)


def _resolve_file(task, mounts: _Mounts) -> dict:
    """Mount, file and syscall of a sleeping task, where /proc tells them (see the module)."""
    from fusewb.tracers.procscan import (  # noqa: PLC0415
        FILE_SYSCALLS, fd_file, file_maps, syscall_name, task_syscall,
    )

    out: dict = {"syscall": None, "file": None, "fd": None, "ino": None, "mount_obj": None,
                 "mount_source": None, "file_fs": None}
    call = None if task.kernel_thread else task_syscall(task.tgid, task.tid)
    name = syscall_name(call[0]) if call and call[0] >= 0 else None
    out["syscall"] = name or (None if call is None else ("fault" if call[0] < 0 else str(call[0])))
    where = FILE_SYSCALLS.get(name) if name else None
    if call and where and where[1] == "fd":
        found = fd_file(task.tgid, call[1][where[0]])
        if found is not None:
            out.update(file=found.path, fd=found.fd, ino=found.ino)
            mount = mounts.by_mnt_id(task.tgid, found.mnt_id) if found.mnt_id else None
            out["file_fs"] = "fuse" if mount else "other"
            if mount:
                out.update(mount_obj=mount, mount_source="fd")
        return out
    if call and where and where[1] == "addr":
        address = call[1][where[0]]
        for m in file_maps(task.tgid):
            if m.start <= address < m.end:
                mount = mounts.by_device(m.major, m.minor)
                out.update(file=m.path, ino=m.ino, file_fs="fuse" if mount else "other")
                if mount:
                    out.update(mount_obj=mount, mount_source="maps")
                return out
    if call and call[0] < 0:  # a page fault: the one FUSE mount among its mappings, if one
        fuse_maps = {}
        for m in file_maps(task.tgid):
            mount = mounts.by_device(m.major, m.minor)
            if mount is not None:
                fuse_maps.setdefault(mount, m)
        if len(fuse_maps) == 1:
            mount, m = next(iter(fuse_maps.items()))
            out.update(mount_obj=mount, mount_source="maps (only FUSE mapping)", file=m.path,
                       ino=m.ino, file_fs="fuse")
    return out


def _server_match(tgid: int, comm: str, mounts: list, holders: int) -> str | None:
    """How ``tgid`` (a /dev/fuse holder) is tied to a connection with ``mounts``, or None."""
    try:
        raw = Path(f"/proc/{tgid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{tgid}/cwd")
        exe = os.path.basename(os.readlink(f"/proc/{tgid}/exe"))
    except OSError:
        raw, cwd, exe = [], "/", ""
    arguments = {os.path.normpath(os.path.join(cwd, a.decode(errors="replace")))
                 for a in raw[1:] if a and not a.startswith(b"-")}
    if any(m.mountpoint in arguments for m in mounts):
        return "mountpoint in its command line"
    subtypes = {m.fstype.partition(".")[2] for m in mounts} - {""}
    if subtypes & {comm, exe}:
        return "fs subtype is its name"
    if holders == 1:
        return "the only /dev/fuse holder"
    return None


def _task_record(task, kind: str | None, resolved: dict, asleep: dict, evidence: str,
                 server: bool) -> dict:
    from fusewb.analysis.paths import clean_frames, matching_frame  # noqa: PLC0415

    path, frame = matching_frame(task.frames)
    mount = resolved["mount_obj"]
    return {
        "pid": task.tgid, "tid": task.tid, "comm": task.comm, "state": task.state,
        "waits_on": kind, "path": path, "path_frame": frame,
        "mount": mount.mountpoint if mount else None, "bdi": mount.bdi if mount else None,
        "connection": mount.connection if mount else None,
        "mount_source": resolved["mount_source"], "syscall": resolved["syscall"],
        "file": resolved["file"], "fd": resolved["fd"], "ino": resolved["ino"],
        "asleep_s": asleep.get((task.tgid, task.tid)), "evidence": evidence,
        "kernel_thread": task.kernel_thread, "server": server,
        "stack": clean_frames(task.frames),
    }


def _is_candidate(task) -> bool:
    from fusewb.analysis.paths import normalize_frame  # noqa: PLC0415

    if task.state == "S":
        return any(normalize_frame(f) == "request_wait_answer" for f in task.frames)
    return wait_kind(task.frames) is not None


def _timeouts() -> dict[str, int] | None:
    """FUSE request-timeout sysctls (6.15+) by name, or None when this kernel has none."""
    try:
        names = sorted(p.name for p in FUSE_SYSCTL.iterdir() if "timeout" in p.name)
    except OSError:
        return None
    values = {}
    for name in names:
        try:
            values[name] = int((FUSE_SYSCTL / name).read_text())
        except (OSError, ValueError):
            continue
    return values or None


def snapshot() -> dict:
    """Every task waiting on FUSE now, per connection its waiting count and server, and what a
    user can do (JSON-ready; see the module text for the rules)."""
    from fusewb.analysis.paths import clean_frames, is_fuse_frame, matching_frame  # noqa: PLC0415
    from fusewb.tracers.mounts import FUSECTL, fusectl_mounted  # noqa: PLC0415
    from fusewb.tracers.procscan import (  # noqa: PLC0415
        SleepClock, dev_fuse_holders, scan_tasks,
    )

    _require_proc()
    began = time.perf_counter()
    mounts = _Mounts()
    with _fusectl() as folder:
        waiting = _read_connections(folder)
    clock = SleepClock()
    scanned = [0]

    def keep(task) -> bool:
        scanned[0] += 1
        if _is_candidate(task):
            clock.note(task.tgid, task.tid, task.cpu)
            return True
        return False

    candidates = list(scan_tasks({"D", "S"}, keep))
    holders = dev_fuse_holders()
    server_threads = list(scan_tasks(None, None, tgids=list(holders)))
    for thread in server_threads:
        if thread.state == "D":
            clock.note(thread.tgid, thread.tid, thread.cpu)
    asleep = clock.asleep_seconds()
    busy = sorted(c for c, n in waiting.items() if n)
    by_connection = {}
    for m in mounts.mine.values():
        by_connection.setdefault(m.connection, []).append(m)
    tasks = []
    for task in candidates:
        kind = wait_kind(task.frames)
        resolved = _resolve_file(task, mounts)
        fuse_frames = any(is_fuse_frame(f) for f in task.frames)
        if resolved["mount_obj"] is None and len(busy) == 1 and busy[0] in by_connection and (
                fuse_frames or resolved["file_fs"] is None):
            resolved.update(mount_obj=by_connection[busy[0]][0], mount_source=INFERRED)
        if fuse_frames:
            evidence = "FUSE function in the stack"
        elif resolved["file_fs"] == "fuse":
            evidence = f"its file is on a FUSE mount ({resolved['mount_source']})"
        elif resolved["file_fs"] is None and busy:
            evidence = ("waits on writeback or a page lock; its filesystem is not known from "
                        f"/proc, and FUSE connection(s) {', '.join(map(str, busy))} have "
                        "requests waiting")
        else:
            continue  # a wait on another filesystem
        tasks.append(_task_record(task, kind, resolved, asleep, evidence, task.tgid in holders))
    tasks.sort(key=lambda t: -(t["asleep_s"] or 0.0))
    connections = []
    for conn in sorted(set(waiting) | set(by_connection)):
        its_mounts = by_connection.get(conn, [])
        servers = []
        for tgid in sorted(holders):
            threads = [t for t in server_threads if t.tgid == tgid]
            comm = threads[0].comm if threads else "?"
            match = _server_match(tgid, comm, its_mounts, len(holders))
            if match is None:
                continue
            rows = []
            for t in threads:
                path, frame = matching_frame(t.frames)
                kind = wait_kind(t.frames)
                flags, reason = [], None
                if t.state == "D" and (path in SELF_WAIT_PATHS or kind is not None):
                    flags.append("SERVER_SELF_WAIT")
                    reason = (f"{path} ({frame})" if path in SELF_WAIT_PATHS
                              else f"waits on {kind}")
                rows.append({"tid": t.tid, "comm": t.comm, "state": t.state, "flags": flags,
                             "reason": reason, "asleep_s": asleep.get((t.tgid, t.tid)),
                             "stack": clean_frames(t.frames)})
            servers.append({"pid": tgid, "comm": comm, "match": match,
                            "dev_fuse_fds": holders[tgid], "threads": rows})
        connections.append({
            "connection": conn, "waiting": waiting.get(conn),
            "mounts": [m.mountpoint for m in its_mounts],
            "fstype": its_mounts[0].fstype if its_mounts else None,
            "bdi": its_mounts[0].bdi if its_mounts else None,
            "tasks": sum(1 for t in tasks if t["connection"] == conn),
            "servers": servers,
            "abort": str(FUSECTL / str(conn) / "abort"),
        })
    snap = {
        "kernel": os.uname().release,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stacks_read": scanned[0] + len(server_threads),
        "seconds": round(time.perf_counter() - began, 3),
        "asleep_source": SleepClock.SOURCE,
        "fusectl_mounted": fusectl_mounted(),
        "fusectl_readable": folder is not None,
        "tasks": tasks,
        "connections": connections,
        "request_timeouts": _timeouts(),
    }
    return {"verdict": verdict(snap), **snap}


STOPPED_STATES = frozenset("Tt")  # stopped by a signal (SIGSTOP, SIGTSTP) or by a tracer


def _server_cause(server: dict) -> str:
    """Why one server process does not answer, from its threads' states and stacks."""
    from fusewb.analysis.paths import normalize_frame  # noqa: PLC0415

    threads = server["threads"]
    name = f"{server['comm']}[{server['pid']}]"
    if not threads:
        return f"its server {name} has no thread left to read"
    self_wait = [t for t in threads if t["flags"]]
    if self_wait:
        t = self_wait[0]
        return (f"server thread {t['comm']}[{t['tid']}] itself waits on writeback or reclaim "
                f"({t['reason']}: {_stack_line(t['stack'])}), which only its own answers can "
                "end (SERVER_SELF_WAIT)")
    if all(t["state"] in STOPPED_STATES for t in threads):
        return (f"its server {name} is stopped (every thread in state T: SIGSTOP, SIGTSTP or a "
                f"debugger), so nothing reads its requests; kill -CONT {server['pid']} resumes it")
    reading = [t for t in threads
               if any(normalize_frame(f) in DEV_READ_FRAMES for f in t["stack"])]
    if reading:
        return (f"{len(reading)} of the {len(threads)} thread(s) of its server {name} wait in "
                "a /dev/fuse read, so the server has read the requests and holds them, or "
                "answers slowly")
    if all(t["state"] in "SD" for t in threads):
        where = sorted({_stack_line(t["stack"][:2]) for t in threads if t["stack"]})
        return (f"the {len(threads)} thread(s) of its server {name} are all asleep and none "
                f"reads /dev/fuse (in {'; '.join(where[:3]) or '?'}): it holds the requests it "
                "read, or waits on something else (a lock, the network, a poll that never "
                "wakes)")
    return f"its server {name} runs but has not answered"


def verdict(snap: dict) -> list[str]:
    """The likely cause per FUSE connection with tasks or requests waiting, as sentences: how
    many tasks wait and for how long, the requests waiting (fusectl), and what the server's
    threads are doing (stopped; all asleep outside /dev/fuse reads; a thread waiting on
    writeback or reclaim itself, with its frames)."""
    out = []
    for c in snap["connections"]:
        mine = [t for t in snap["tasks"] if t["connection"] == c["connection"]]
        if not mine and not c["waiting"]:
            continue
        where = ", ".join(c["mounts"]) or "no mount in this namespace"
        parts = [f"Connection {c['connection']} ({where}, bdi {c['bdi'] or '?'}):"]
        if mine:
            worst = max(mine, key=lambda t: t["asleep_s"] or 0.0)
            parts.append(f"{len(mine)} task(s) wait on it, {worst['comm']}[{worst['pid']}] "
                         f"asleep {_asleep(worst['asleep_s'])} in {worst['path']}"
                         + (";" if c["waiting"] is not None else "."))
        if c["waiting"] is not None:
            parts.append(f"{c['waiting']} request(s) waiting for the server (fusectl).")
        causes = [_server_cause(s) for s in c["servers"]]
        if not c["servers"]:
            causes = ["no /dev/fuse holder matched its server (gone, or in another PID "
                      "namespace)"]
        parts.append("Likely cause: " + "; ".join(causes) + ".")
        out.append(" ".join(parts))
    unplaced = [t for t in snap["tasks"] if t["connection"] is None]
    if unplaced:
        out.append(f"{len(unplaced)} task(s) wait on FUSE on a connection /proc does not name.")
    return out or ["Nothing waits on FUSE now."]


def _asleep(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _stack_line(frames: list[str]) -> str:
    from fusewb.analysis.paths import stack_summary  # noqa: PLC0415

    return stack_summary(frames, width=9)


def render_text(snap: dict) -> str:
    """The snapshot for a terminal: tasks, connections with their servers, what to do."""
    lines = [f"fusewb stuck: {len(snap['tasks'])} task(s) waiting on FUSE, "
             f"{len(snap['connections'])} FUSE connection(s); kernel {snap['kernel']}, "
             f"{snap['time']}, {snap['stacks_read']} kernel stacks read in {snap['seconds']:.2f} s",
             "", "Verdict"]
    for sentence in snap["verdict"]:
        lines.extend(textwrap.wrap(sentence, 100, initial_indent="  ", subsequent_indent="    "))
    if snap["tasks"]:
        lines += ["", "Tasks (asleep: time since the task last ran, from /proc/.../sched)",
                  f"  {'pid/tid':<13} {'comm':<15} st {'asleep':>8}  {'waits on':<10} "
                  f"{'path':<12} mount (bdi)"]
    for t in snap["tasks"]:
        mount = f"{t['mount']} ({t['bdi']})" if t["mount"] else "unknown"
        lines.append(f"  {t['pid']}/{t['tid']:<{12 - len(str(t['pid']))}} {t['comm'][:15]:<15} "
                     f"{t['state']:<2} {_asleep(t['asleep_s']):>8}  {t['waits_on'] or '-':<10} "
                     f"{t['path']:<12} {mount}")
        where = [f"syscall {t['syscall']}"] if t["syscall"] else []
        if t["file"]:
            where.append(f"file {t['file']}" + (f" (ino {t['ino']})" if t["ino"] else ""))
        if t["mount_source"]:
            where.append(f"mount from {t['mount_source']}")
        role = ["a FUSE server thread"] if t["server"] else (
            ["kernel thread"] if t["kernel_thread"] else [])
        lines.append(f"      {'; '.join(role + where + [t['evidence']])}")
        lines.append(f"      {_stack_line(t['stack'])}")
    if snap["connections"]:
        lines += ["", "FUSE connections (/sys/fs/fuse/connections/N)"]
    elif not snap["tasks"]:
        lines += ["", "no FUSE mounts: nothing can wait on FUSE"]
    for c in snap["connections"]:
        waiting = "?" if c["waiting"] is None else c["waiting"]
        where = ", ".join(c["mounts"]) or "(no mount in this namespace)"
        lines.append(f"  {c['connection']}: {where}  {c['fstype'] or ''}  bdi {c['bdi'] or '?'}"
                     f"  waiting {waiting}  stuck tasks {c['tasks']}")
        if not c["servers"]:
            lines.append("      server: no /dev/fuse holder matched (gone, or in another "
                         "PID namespace)")
        for s in c["servers"]:
            lines.append(f"      server {s['comm']} pid {s['pid']} ({s['match']}), "
                         f"{len(s['threads'])} thread(s):")
            groups: dict[tuple, list] = {}
            for t in s["threads"]:
                key = (t["state"], tuple(t["flags"]), _stack_line(t["stack"]))
                groups.setdefault(key, []).append(t)
            for (state, flags, stack), members in groups.items():
                ids = ",".join(str(t["tid"]) for t in members[:4]) + (
                    ",..." if len(members) > 4 else "")
                flag = f"  {' '.join(flags)}: {members[0]['reason']}" if flags else ""
                lines.append(f"        {len(members)}x {state} [{ids}] {stack}{flag}")
    lines += ["", "What you can do"]
    stuck_conns = [c for c in snap["connections"] if c["tasks"] or c["waiting"]]
    if stuck_conns and not snap["fusectl_mounted"]:
        lines.append("  mount -t fusectl none /sys/fs/fuse/connections   (fusectl is not mounted)")
    for c in stuck_conns:
        lines.append(f"  echo 1 > {c['abort']}   # abort {', '.join(c['mounts']) or c['connection']}")
    if stuck_conns:
        lines.append("      (every request of it fails with ENOTCONN, its waiters wake, data not "
                     "yet written is lost)")
    if not stuck_conns:
        lines.append("  nothing waits on FUSE now")
    timeouts = snap["request_timeouts"]
    if timeouts is None:
        lines.append("  this kernel has no FUSE request timeouts (no /proc/sys/fs/fuse/*timeout*)")
    else:
        values = ", ".join(f"{k} = {v}" for k, v in timeouts.items())
        lines.append(f"  request timeouts ({FUSE_SYSCTL}, seconds, 0 = none): {values}")
        lines.append(f"  echo 60 > {FUSE_SYSCTL}/default_request_timeout   # abort a connection "
                     "whose server leaves a request unanswered 60 s (mounts made from now on)")
    return "\n".join(lines)


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def stuck(as_json: bool) -> None:
    """Show every task waiting on a FUSE mount now, and each connection's server.

    Reads /proc and fusectl only (no BPF, any kernel): per task the kernel path (the analysis'
    rules), mount and bdi where /proc tells them, how long it has slept and its stack; per FUSE
    connection the waiting count and the server's threads (SERVER_SELF_WAIT when one sleeps on
    writeback or reclaim); then how to abort a connection and the request-timeout sysctls.
    It starts with a verdict: per connection the likely cause (server stopped, its threads all
    asleep outside /dev/fuse reads, a server thread waiting on writeback or reclaim itself).
    Needs root (kernel stacks).

    \b
    Examples:
      sudo fusewb stuck
      sudo fusewb stuck --json | jq '.tasks[] | {pid, comm, path, mount, asleep_s}'
      sudo fusewb stuck --json | jq '.connections[] | {connection, waiting}'
      sudo fusewb stuck --json | jq -r '.verdict[]'
    """
    snap = snapshot()
    click.echo(json.dumps(snap, indent=2) if as_json else render_text(snap))
