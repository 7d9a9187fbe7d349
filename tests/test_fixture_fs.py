"""The fixture filesystem on the real kernel: POSIX semantics, writeback cache, faults."""

from __future__ import annotations

import errno
import mmap
import os
import time

import pytest

from fusewb.fixtures.faults import Faults
from tests.fixture_helpers import mounted, wait_until

MIB = 1 << 20


def test_file_semantics(tmp_path) -> None:
    with mounted(tmp_path / "mnt") as fx:
        root = tmp_path / "mnt"
        (root / "d").mkdir()
        path = root / "d" / "a"
        path.write_bytes(b"hello world")
        assert path.read_bytes() == b"hello world"
        assert path.stat().st_size == 11
        before = path.stat().st_mtime_ns
        time.sleep(0.02)
        with open(path, "r+b") as f:
            f.seek(6)
            f.write(b"fuse!")
            f.flush()
            os.fsync(f.fileno())
        assert path.read_bytes() == b"hello fuse!"
        assert path.stat().st_mtime_ns > before
        os.truncate(path, 5)
        assert path.read_bytes() == b"hello" and path.stat().st_size == 5
        os.truncate(path, 8)
        assert path.read_bytes() == b"hello\0\0\0"
        os.rename(path, root / "b")
        assert not path.exists() and (root / "b").read_bytes() == b"hello\0\0\0"
        (root / "c").write_bytes(b"other")
        os.rename(root / "c", root / "b")
        assert (root / "b").read_bytes() == b"other"
        with open(root / "b", "rb") as held:
            os.unlink(root / "b")
            assert not (root / "b").exists()
            assert held.read() == b"other"
        with pytest.raises(OSError) as exc:
            (root / "d").rmdir() if (root / "d" / "x").write_bytes(b"1") else None
        assert exc.value.errno == errno.ENOTEMPTY
        assert sorted(os.listdir(root)) == ["d"]
        assert fx.digest("d/x")["size"] == 1


def test_shared_writable_mmap_reaches_the_server(tmp_path) -> None:
    with mounted(tmp_path / "mnt") as fx:
        path = tmp_path / "mnt" / "m"
        with open(path, "w+b") as f:
            f.truncate(4 * MIB)
            with mmap.mmap(f.fileno(), 4 * MIB) as area:
                area[:4] = b"head"
                area[-4:] = b"tail"
                area.flush()
        data = path.read_bytes()
        assert data[:4] == b"head" and data[-4:] == b"tail" and len(data) == 4 * MIB
        assert fx.digest("m")["size"] == 4 * MIB


def test_writeback_cache_buffers_writes(tmp_path) -> None:
    """With writeback cache the WRITE requests come later (fsync here), not from write(2)."""
    with mounted(tmp_path / "mnt") as fx:
        fd = os.open(tmp_path / "mnt" / "w", os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, b"x" * (256 << 10))
            assert fx.status()["writes"]["seen"] == 0
            assert fx.status()["writeback_cache"] is True
            os.fsync(fd)
            assert fx.status()["writes"]["seen"] >= 1
        finally:
            os.close(fd)


def test_without_writeback_cache_writes_go_through(tmp_path) -> None:
    with mounted(tmp_path / "mnt", writeback_cache=False) as fx:
        fd = os.open(tmp_path / "mnt" / "w", os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, b"x" * 4096)
            assert fx.status()["writes"]["seen"] == 1
        finally:
            os.close(fd)


def test_backing_folder_holds_the_data(tmp_path) -> None:
    backing = tmp_path / "backing"
    with mounted(tmp_path / "mnt", backing=backing) as fx:
        (tmp_path / "mnt" / "f").write_bytes(b"on disk")
        inode = fx.digest("f")["inode"]
        assert (backing / str(inode)).read_bytes() == b"on disk"
        os.unlink(tmp_path / "mnt" / "f")
        assert wait_until(lambda: not (backing / str(inode)).exists(), timeout=5)


def test_latency_applies_only_to_the_chosen_inode(tmp_path) -> None:
    with mounted(tmp_path / "mnt", Faults(latency_ms=400)) as fx:
        slow, fast = tmp_path / "mnt" / "slow", tmp_path / "mnt" / "fast"
        slow.write_bytes(b"")
        fast.write_bytes(b"")
        fx.set_faults(only_inode=os.stat(slow).st_ino)
        timings = {}
        for path in (slow, fast):
            start = time.monotonic()
            path.write_bytes(b"y" * 8192)  # close waits for the WRITE (fuse_flush)
            timings[path.name] = time.monotonic() - start
        assert timings["slow"] >= 0.35, timings
        assert timings["fast"] < 0.3, timings


def test_eio_fraction_fails_writeback(tmp_path) -> None:
    with mounted(tmp_path / "mnt", Faults(eio_fraction=1.0)) as fx:
        fd = os.open(tmp_path / "mnt" / "e", os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, b"z" * 8192)
            with pytest.raises(OSError) as exc:
                os.fsync(fd)
            assert exc.value.errno == errno.EIO
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        assert fx.status()["writes"]["failed"] >= 1
