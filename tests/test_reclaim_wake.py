"""The writeback pulse that ends memcg reclaim passes early completes real writeback.

Checked against the kernel's own counter: ``nr_written`` in /proc/vmstat counts every page whose
writeback ended, so it must grow by at least the pages the pulse wrote back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fusewb.fixtures.loads.reclaim_wake import PULSE_BYTES, WritebackPulse, block_backed_dir
from tests.support import require, require_root


def _vmstat(name: str) -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, value = line.split()
        if key == name:
            return int(value)
    raise KeyError(name)


def _mount_source(directory: Path) -> str:
    """The source of the mount holding ``directory``, from /proc/self/mountinfo."""
    dev = os.stat(directory).st_dev
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        major, minor = map(int, fields[2].split(":"))
        if os.makedev(major, minor) == dev:
            return fields[fields.index("-") + 2]
    raise LookupError(directory)


def test_pulse_writes_back_on_a_block_device() -> None:
    require_root()
    directory = block_backed_dir()
    require(directory is not None, "needs a block-backed file system in /var/tmp, /tmp or /root")
    assert _mount_source(directory).startswith("/dev/")
    written = _vmstat("nr_written")
    with WritebackPulse() as pulse:
        assert pulse.start()
        deadline = time.monotonic() + 10
        while pulse.pulses < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert pulse.error is None
    assert pulse.pulses >= 5
    assert _vmstat("nr_written") - written >= pulse.pulses * PULSE_BYTES // os.sysconf("SC_PAGE_SIZE")
    assert not list(directory.glob("fusewb-pulse-*")), "the scratch file is gone"


def test_pulse_without_a_block_backed_dir_does_nothing() -> None:
    pulse = WritebackPulse()
    pulse.directory = None
    assert not pulse.start()
    pulse.stop()
    assert pulse.pulses == 0
