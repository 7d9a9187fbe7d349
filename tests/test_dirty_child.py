"""The memory loads' dirtying child: a write the kernel refuses with ENOMEM is retried and
counted (5.10 refused one in a self-wait run once its cgroup could not reclaim), any other
error ends the child."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest

from fusewb.fixtures.loads import dirty


def _refusing(monkeypatch: pytest.MonkeyPatch, errors: list[int]) -> None:
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if errors:
            code = errors.pop(0)
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(dirty.os, "write", write)
    monkeypatch.setattr(dirty, "ENOMEM_PAUSE_S", 0.0)
    monkeypatch.setattr("sys.stdin", io.StringIO("go\n"))


def test_enomem_is_retried_and_counted(tmp_path: Path, monkeypatch, capsys) -> None:
    _refusing(monkeypatch, [errno.ENOMEM, errno.ENOMEM])
    target = tmp_path / "f"
    assert dirty.main([str(target), str(3 * dirty.MIB)]) == 0
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reply["bytes"] == 3 * dirty.MIB == target.stat().st_size
    assert reply["enomem"] == 2 and set(reply["timings"]) == {"write", "fsync", "close"}


def test_other_write_errors_end_the_child(tmp_path: Path, monkeypatch) -> None:
    _refusing(monkeypatch, [errno.EIO])
    with pytest.raises(OSError) as raised:
        dirty.main([str(tmp_path / "f"), str(dirty.MIB)])
    assert raised.value.errno == errno.EIO
