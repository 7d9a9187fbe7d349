"""Fixture lifecycle on the real kernel: control channel while stalled, crash recovery, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fusewb.fixtures.faults import Faults
from fusewb.fixtures.manage import cleanup_stale, unmount_fixture
from fusewb.tracers.mounts import mount_for_path
from fusewb.fixtures.registry import paths_for, read_entry
from tests.fixture_helpers import in_thread, mounted, wait_until
from tests.support import require_fuse

FUSEWB = [sys.executable, "-m", "fusewb.cli"]


def _write_and_close(path) -> None:
    with open(path, "wb") as f:
        f.write(b"s" * 65536)


def test_control_answers_while_single_threaded_server_is_stalled(tmp_path) -> None:
    with mounted(tmp_path / "mnt", Faults(stall=True), single_threaded=True) as fx:
        thread, outcome = in_thread(lambda: _write_and_close(tmp_path / "mnt" / "f"))
        assert wait_until(lambda: fx.status()["writes"]["stalled"] == 1, timeout=10)
        status = fx.status()
        assert status["single_threaded"] is True
        assert status["fuse_thread_id"] != status["control_thread_id"]
        assert thread.is_alive(), "close() returned while its WRITE was stalled"
        lookup, looked = in_thread(lambda: os.path.exists(tmp_path / "mnt" / "other"))
        lookup.join(0.5)
        assert lookup.is_alive(), "a single-threaded server answered a LOOKUP while stalled"
        fx.release()
        lookup.join(10)
        assert not lookup.is_alive() and "error" not in looked
        thread.join(10)
        assert not thread.is_alive() and "error" not in outcome, outcome
        assert fx.status()["writes"]["completed"] >= 1
        assert fx.digest("f")["size"] == 65536


def test_umount_of_a_stalled_server_does_not_hang(tmp_path) -> None:
    with mounted(tmp_path / "mnt", Faults(stall=True)) as fx:
        thread, outcome = in_thread(lambda: _write_and_close(tmp_path / "mnt" / "f"))
        assert wait_until(lambda: fx.status()["writes"]["stalled"] >= 1, timeout=10)
        lookup, _ = in_thread(lambda: os.path.exists(tmp_path / "mnt" / "other"))
        lookup.join(5)
        assert not lookup.is_alive(), "a multi-task server must answer LOOKUP while a WRITE stalls"
        report = unmount_fixture(fx.mountpoint)
        assert "unmounted" in report.steps, report
        thread.join(10)
        assert not thread.is_alive()
        assert mount_for_path(fx.mountpoint) is None


def test_sigkill_of_the_server_leaves_no_stale_mount(tmp_path) -> None:
    with mounted(tmp_path / "mnt") as fx:
        (tmp_path / "mnt" / "f").write_bytes(b"data")
        os.kill(fx.pid, signal.SIGKILL)
        fx.process.wait(10)
        try:
            os.listdir(tmp_path / "mnt")
        except OSError as exc:
            assert exc.errno == 107  # ENOTCONN: the stale mount cleanup_stale must remove
        reports = cleanup_stale()
        assert [r.mountpoint for r in reports if r.mountpoint == fx.mountpoint]
        assert mount_for_path(fx.mountpoint) is None
        assert read_entry(fx.mountpoint) is None
        assert os.listdir(tmp_path / "mnt") == []


def test_umount_of_a_frozen_server_aborts_the_connection(tmp_path) -> None:
    """A server that stops answering entirely (SIGSTOP): umount escalates to fusectl abort."""
    with mounted(tmp_path / "mnt") as fx:
        os.kill(fx.pid, signal.SIGSTOP)
        thread, outcome = in_thread(lambda: _write_and_close(tmp_path / "mnt" / "f"))
        thread.join(0.5)
        report = unmount_fixture(fx.mountpoint, timeout=2.0)
        assert "abort" in report.steps and report.steps[-1] == "unmounted", report
        thread.join(10)
        assert not thread.is_alive() and isinstance(outcome.get("error"), OSError)
        assert fx.process.wait(10) is not None
    # an unclean unmount keeps the server's log for a person to read; this one was expected
    log = paths_for(os.path.realpath(tmp_path / "mnt"))["log"]
    assert log.exists(), "an aborted connection keeps its server's log"
    log.unlink()


def test_cli_mount_stall_release_umount(tmp_path) -> None:
    require_fuse()
    mnt = str(tmp_path / "mnt")
    run = lambda *args: subprocess.run([*FUSEWB, *args], capture_output=True, text=True,  # noqa: E731
                                       timeout=60)
    try:
        out = run("fixture", "mount", mnt, "--latency-ms", "10", "--single-threaded")
        assert out.returncode == 0, out.stderr
        entry = read_entry(mnt)
        assert entry is not None and entry.options["single_threaded"] is True
        assert run("fixture", "stall", mnt).returncode == 0
        thread, _ = in_thread(lambda: _write_and_close(tmp_path / "mnt" / "f"))
        status = run("fixture", "status", mnt)
        assert status.returncode == 0 and "single_threaded True" in status.stdout
        assert wait_until(lambda: "stalled 1" in run("fixture", "status", mnt).stdout, 10)
        assert run("fixture", "release", mnt).returncode == 0
        thread.join(10)
        assert not thread.is_alive()
        again = run("fixture", "mount", mnt)
        assert again.returncode == 2 and "already a FUSE mount" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        down = run("fixture", "umount", mnt)
    assert down.returncode == 0, down.stderr
    assert mount_for_path(mnt) is None
    gone = run("fixture", "stall", mnt)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr


def test_mount_failure_is_one_line(tmp_path) -> None:
    require_fuse()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    out = subprocess.run([*FUSEWB, "fixture", "mount", str(not_a_folder)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "mountpoint" in out.stderr


def test_help_has_examples() -> None:
    for args in (["fixture", "--help"], ["fixture", "mount", "--help"], ["load", "--help"]):
        out = subprocess.run([*FUSEWB, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Examples:" in out.stdout, args
