"""``fusewb stuck`` on the real kernel: tasks stuck behind a stalled fixture, checked against
/proc and fusectl; then the release lets them finish. Also its refusals, and the wait rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fusewb.contract.errors import FusewbError
from fusewb.fixtures.faults import Faults
from fusewb.stuck import _require_proc, render_text, verdict, wait_kind
from fusewb.tracers.mounts import FUSECTL, fusectl_mounted
from fusewb.tracers.procscan import read_frames
from tests.fixture_helpers import asleep_in, mounted, wait_until
from tests.support import TIMEOUT_SCALE, require, require_fuse, require_root

FUSEWB = [sys.executable, "-m", "fusewb.cli"]
FSYNC = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"s" * 65536)
os.fsync(fd)
"""
CLOSE = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"c" * 65536)
os.close(fd)
"""
FSYNC_ON_LINE = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY)
os.write(fd, b"s" * 65536)
print("written", flush=True)
sys.stdin.readline()
os.fsync(fd)
"""
STAT = "import os, sys; os.path.exists(sys.argv[1])  # a LOOKUP; ENOENT is its answer"


def _child(code: str, path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(path)], start_new_session=True)


def _stuck_json() -> dict:
    done = subprocess.run([*FUSEWB, "stuck", "--json"], capture_output=True, text=True,
                          timeout=60 * TIMEOUT_SCALE, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _fusectl_waiting(connection: int, scratch: Path) -> int:
    """The connection's waiting count, read here independently of fusewb."""
    if fusectl_mounted():
        return int((FUSECTL / str(connection) / "waiting").read_text())
    scratch.mkdir()
    subprocess.run(["mount", "-t", "fusectl", "none", str(scratch)], check=True, timeout=10)
    try:
        return int((scratch / str(connection) / "waiting").read_text())
    finally:
        subprocess.run(["umount", str(scratch)], check=False, timeout=10)


def _finish(children: list[subprocess.Popen]) -> list[int | None]:
    """Exit codes of children after a release (bounded); any still running is killed."""
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=15 * TIMEOUT_SCALE))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=15 * TIMEOUT_SCALE)
            codes.append(None)
    return codes


def _task(snap: dict, pid: int) -> dict:
    found = [t for t in snap["tasks"] if t["tid"] == pid]
    assert len(found) == 1, [(t["pid"], t["comm"], t["path"]) for t in snap["tasks"]]
    return found[0]


def test_a_stalled_fsync_is_reported_with_its_path_mount_bdi_and_connection(tmp_path) -> None:
    with mounted(tmp_path / "mnt", Faults(stall=True)) as fx:
        child = _child(FSYNC, tmp_path / "mnt" / "f")
        try:
            assert wait_until(lambda: asleep_in(child.pid, "fuse_fsync"), timeout=15), \
                "the fsync child never slept in fuse_fsync"
            snap = _stuck_json()
            waiting = _fusectl_waiting(fx.mount.connection, tmp_path / "ctl")
            task = _task(snap, child.pid)
            assert task["pid"] == child.pid and task["comm"] == Path(sys.executable).name[:15]
            assert task["state"] == "D" and task["waits_on"] == "writeback"
            assert task["path"] == "fsync" and task["path_frame"] == "fuse_fsync"
            assert task["syscall"] == "fsync" and task["mount_source"] == "fd"
            assert task["mount"] == fx.mountpoint and task["bdi"] == fx.mount.bdi
            assert task["file"] == str(tmp_path / "mnt" / "f")
            assert task["connection"] == fx.mount.connection
            assert "fuse_fsync" in task["stack"] and not task["server"]
            assert task["asleep_s"] is not None and 0 < task["asleep_s"] < 60
            conn = next(c for c in snap["connections"] if c["connection"] == fx.mount.connection)
            assert conn["mounts"] == [fx.mountpoint] and conn["bdi"] == fx.mount.bdi
            assert conn["waiting"] == waiting >= 1
            servers = {s["pid"]: s for s in conn["servers"]}
            assert fx.pid in servers, conn["servers"]
            assert servers[fx.pid]["match"] == "mountpoint in its command line"
            assert {t["tid"] for t in servers[fx.pid]["threads"]} == {
                int(t) for t in os.listdir(f"/proc/{fx.pid}/task")}
            assert child.poll() is None, "the fsync returned while its WRITE was stalled"
            # the fixture holds the WRITE it read: its threads sleep, none in a /dev/fuse read
            said = next(v for v in snap["verdict"]
                        if v.startswith(f"Connection {fx.mount.connection} "))
            assert f"({fx.mountpoint}, bdi {fx.mount.bdi})" in said
            assert "asleep" in said and "in fsync" in said
            assert f"{waiting} request(s) waiting for the server (fusectl)" in said
            assert "are all asleep and none reads /dev/fuse" in said, said
        finally:
            fx.release()
            codes = _finish([child])
        assert codes == [0]
        assert all(t["tid"] != child.pid for t in _stuck_json()["tasks"])


def test_a_stopped_server_is_named_as_the_cause(tmp_path) -> None:
    """A server stopped with SIGSTOP while a fsync waits on its WRITE: the verdict says it is
    stopped and how to resume it."""
    with mounted(tmp_path / "mnt", Faults()) as fx:
        # the file is opened and written while the server runs; fsync once it is stopped
        child = subprocess.Popen([sys.executable, "-c", FSYNC_ON_LINE,
                                  str(tmp_path / "mnt" / "f")], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert child.stdout.readline() == "written\n"
            os.kill(fx.pid, signal.SIGSTOP)
            child.stdin.write("go\n")
            child.stdin.flush()
            try:
                assert wait_until(lambda: asleep_in(child.pid, "fuse_fsync"), timeout=15), \
                    f"the fsync never slept in fuse_fsync: {read_frames(child.pid, child.pid)}"
                snap = _stuck_json()
            finally:
                os.kill(fx.pid, signal.SIGCONT)
                codes = _finish([child])
        finally:
            os.kill(fx.pid, signal.SIGCONT)
        said = next(v for v in snap["verdict"]
                    if v.startswith(f"Connection {fx.mount.connection} "))
        assert "is stopped (every thread in state T" in said, said
        assert f"kill -CONT {fx.pid} resumes it" in said
        assert codes == [0]


def test_close_and_a_lookup_behind_a_single_threaded_server(tmp_path) -> None:
    """close() waits in fuse_flush; a stat then waits for its LOOKUP answer in
    request_wait_answer, interruptibly (S) first: both are listed.

    What close waits for depends on the kernel, and both are stuck behind the one stalled WRITE:
    without temp pages (6.16+) the WRITE's writeback (D). With temp pages (6.1) writeback ends at
    once, and write_inode_now then either sends the inode's times itself (fuse_write_inode: a
    SETATTR queued behind the WRITE, an interruptible request wait, S) or waits (D,
    __inode_wait_for_writeback) for the flusher that dirty throttling woke to do so (measured in
    the 6.1 guest: 5 and 3 of 8 closes). The kind fusewb reports is checked against the stack
    read here from /proc."""
    with mounted(tmp_path / "mnt", Faults(stall=True), single_threaded=True) as fx:
        closer = _child(CLOSE, tmp_path / "mnt" / "c")
        children = [closer]
        try:
            assert wait_until(lambda: asleep_in(closer.pid, "fuse_flush", "DS"), timeout=15), \
                f"the close never slept in fuse_flush: {read_frames(closer.pid, closer.pid)}"
            stat = _child(STAT, tmp_path / "mnt" / "other")
            children.append(stat)
            assert wait_until(lambda: asleep_in(stat.pid, "request_wait_answer", "SD"),
                              timeout=15)
            # the close's first sleep in fuse_flush may be a step before its lasting wait: the
            # kind fusewb saw is the one the stack shows both before and after the snapshot
            def close_kind(frames: list[str]) -> str:
                return "request" if any("request_wait_answer" in f for f in frames) else "writeback"

            for _attempt in range(5):
                before = close_kind(read_frames(closer.pid, closer.pid) or [])
                snap = _stuck_json()
                close_stack = read_frames(closer.pid, closer.pid) or []
                expected = close_kind(close_stack)
                if before == expected:
                    break
            closing, looking = _task(snap, closer.pid), _task(snap, stat.pid)
            assert closing["path"] == "close" and closing["waits_on"] == expected, close_stack
            assert closing["syscall"] == "close" and closing["fd"] is None
            assert looking["waits_on"] == "request"
            assert "request_wait_answer" in looking["stack"]
            for task in (closing, looking):
                # the descriptor is gone (close) or there is none (stat): the mount is inferred
                # from the waiting count, and only when one connection has requests waiting
                assert task["mount"] in (None, fx.mountpoint)
                assert (task["mount_source"] == "the only connection with waiting requests") \
                    == (task["mount"] is not None)
            conn = next(c for c in snap["connections"] if c["connection"] == fx.mount.connection)
            assert conn["waiting"] >= 2
        finally:
            fx.release()
            codes = _finish(children)
        assert codes == [0, 0]


def test_without_root_it_names_the_fix(tmp_path) -> None:
    require_root()
    require(subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0,
            "needs setpriv (util-linux)")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *FUSEWB, "stuck"], capture_output=True, text=True, timeout=60,
                          cwd="/", env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "only root" in done.stderr and "sudo fusewb stuck" in done.stderr


def test_with_no_fuse_mount_it_says_so() -> None:
    """In a private mount namespace with every FUSE mount lazily unmounted (others' mounts stay
    as they are outside it), no task can wait on a FUSE mount of this namespace."""
    require_fuse()
    script = ("grep -E ' - fuse(blk)?(\\.[^ ]*)? ' /proc/self/mountinfo | cut -d' ' -f5 | "
              "while read m; do umount -l \"$m\"; done; exec \"$@\"")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           "sh", *FUSEWB, "stuck"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    connections = [line for line in done.stdout.splitlines() if line.startswith("  ")
                   and ": " in line and "bdi" in line]
    if connections:  # connections of other namespaces (other mounts of this machine)
        assert all("(no mount in this namespace)" in line for line in connections)
    else:
        assert "no FUSE mounts: nothing can wait on FUSE" in done.stdout


def test_a_kernel_without_fuse_is_refused(tmp_path) -> None:
    require_root()
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tsysfs\nnodev\tproc\n\text4\n")
    with pytest.raises(FusewbError, match="no 'fuse' in /proc/filesystems"):
        _require_proc(filesystems)


@pytest.mark.parametrize("stack, kind", [
    ("folio_wait_bit folio_wait_writeback __filemap_fdatawait_range file_write_and_wait_range "
     "fuse_fsync do_fsync __x64_sys_fsync", "writeback"),
    ("request_wait_answer __fuse_simple_request fuse_lookup_name fuse_lookup", "request"),
    ("fuse_fsync do_fsync __x64_sys_fsync", "writeback"),  # temp pages: waits on page_waitq
    # temp pages (6.1): close waits for the flusher that holds the inode (I_SYNC)
    ("__inode_wait_for_writeback writeback_single_inode write_inode_now fuse_flush filp_close",
     "writeback"),
    ("request_wait_answer fuse_simple_request fuse_flush_times fuse_write_inode "
     "__writeback_single_inode writeback_single_inode write_inode_now fuse_flush", "request"),
    ("fuse_wait_on_page_writeback.part.0 fuse_page_mkwrite do_page_mkwrite", "writeback"),
    ("folio_wait_bit_common __folio_lock fuse_read_folio filemap_read_folio", "page_lock"),
    ("rwsem_down_write_slowpath down_write fuse_cache_write_iter vfs_write", "lock"),
    ("folio_wait_writeback migrate_pages_batch migrate_pages offline_pages", "writeback"),
    ("do_epoll_wait __x64_sys_epoll_wait", None),
])
def test_wait_kind(stack: str, kind: str | None) -> None:
    assert wait_kind(stack.split()) == kind


def test_kernel_threads_are_told_from_user_tasks() -> None:
    require_root()
    from fusewb.tracers.procscan import scan_tasks

    kthreadd = list(scan_tasks(None, tgids=[2]))
    me = list(scan_tasks(None, tgids=[os.getpid()]))
    assert kthreadd and all(t.kernel_thread for t in kthreadd)
    assert me and not any(t.kernel_thread for t in me)


def _snap(threads: list[dict], waiting: int | None = 3) -> dict:
    """A snapshot with one fsync waiting on connection 40, its server's threads given."""
    task = {"pid": 8606, "tid": 8606, "comm": "python3", "state": "D", "waits_on": "writeback",
            "path": "fsync", "connection": 40, "asleep_s": 4.26}
    server = {"pid": 900, "comm": "rclone", "match": "mountpoint in its command line",
              "threads": [{"tid": 900 + i, "comm": "rclone", "flags": [], "reason": None,
                           "asleep_s": None, **t} for i, t in enumerate(threads)]}
    return {"tasks": [task], "connections": [
        {"connection": 40, "waiting": waiting, "mounts": ["/mnt/x"], "bdi": "0:40",
         "fstype": "fuse.rclone", "tasks": 1, "abort": "/sys/fs/fuse/connections/40/abort",
         "servers": [server]},
        {"connection": 41, "waiting": 0, "mounts": ["/mnt/idle"], "bdi": "0:41",
         "fstype": "fuse.sshfs", "tasks": 0, "abort": "/sys/fs/fuse/connections/41/abort",
         "servers": []}]}


@pytest.mark.parametrize(("threads", "cause"), [
    ([{"state": "T", "stack": ["do_signal_stop", "get_signal"]}] * 2,
     "its server rclone[900] is stopped (every thread in state T: SIGSTOP, SIGTSTP or a "
     "debugger), so nothing reads its requests; kill -CONT 900 resumes it"),
    ([{"state": "S", "stack": ["do_epoll_wait", "__x64_sys_epoll_wait"]},
      {"state": "S", "stack": ["futex_wait_queue", "futex_wait"]}],
     "the 2 thread(s) of its server rclone[900] are all asleep and none reads /dev/fuse (in "
     "do_epoll_wait < __x64_sys_epoll_wait; futex_wait_queue < futex_wait)"),
    ([{"state": "S", "stack": ["fuse_dev_do_read", "fuse_dev_read", "vfs_read"]},
      {"state": "S", "stack": ["futex_wait_queue", "futex_wait"]}],
     "1 of the 2 thread(s) of its server rclone[900] wait in a /dev/fuse read"),
    ([{"state": "D", "flags": ["SERVER_SELF_WAIT"], "reason": "reclaim (shrink_lruvec)",
       "stack": ["reclaim_throttle", "shrink_lruvec", "shrink_node"]},
      {"state": "S", "stack": ["fuse_dev_do_read", "fuse_dev_read"]}],
     "server thread rclone[900] itself waits on writeback or reclaim (reclaim (shrink_lruvec): "
     "reclaim_throttle < shrink_lruvec < shrink_node), which only its own answers can end "
     "(SERVER_SELF_WAIT)"),
])
def test_stuck_verdict_names_the_likely_cause(threads: list[dict], cause: str) -> None:
    snap = _snap(threads)
    said = verdict(snap)
    assert len(said) == 1, said  # the idle connection says nothing
    assert said[0].startswith("Connection 40 (/mnt/x, bdi 0:40): 1 task(s) wait on it, "
                              "python3[8606] asleep 4.3 s in fsync; 3 request(s) waiting for "
                              "the server (fusectl). Likely cause: ")
    assert cause in said[0]


def test_stuck_verdict_without_waiters_or_server() -> None:
    assert verdict({"tasks": [], "connections": []}) == ["Nothing waits on FUSE now."]
    snap = _snap([])
    snap["connections"][0]["servers"] = []
    assert "no /dev/fuse holder matched its server" in verdict(snap)[0]


def test_stuck_text_starts_with_the_verdict() -> None:
    snap = {**_snap([{"state": "T", "stack": []}]), "kernel": "6.18", "time": "now",
            "stacks_read": 3, "seconds": 0.01, "fusectl_mounted": True, "request_timeouts": None}
    snap["verdict"] = verdict(snap)
    snap["tasks"][0].update(mount="/mnt/x", bdi="0:40", syscall="fsync", file=None,
                            mount_source="fd", server=False, kernel_thread=False,
                            evidence="FUSE function in the stack", stack=["fuse_fsync"])
    lines = render_text(snap).splitlines()
    assert lines[2] == "Verdict" and lines[3].startswith("  Connection 40 (/mnt/x, bdi 0:40)")
