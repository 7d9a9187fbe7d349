"""The CLI's help, mountinfo parsing and the bcc header tree."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from fusewb.cli import cli
from fusewb.tracers.headers import find_header_tree, prepare_bcc_environment
from fusewb.tracers.mounts import FuseMount, fuse_mounts, kernel_dev
from tests.support import require, require_bpf


def test_help_lists_examples() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_mountinfo_parsing(tmp_path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "36 25 0:52 / /mnt/a\\040b rw,nosuid - fuse.pyfuse3 fusewb rw,user_id=0\n"
        "37 25 8:1 / /mnt/blk rw - fuseblk /dev/sda1 rw\n"
        "38 25 253:0 / / rw - ext4 /dev/vda rw\n"
    )
    mounts = fuse_mounts(info)
    assert [m.mountpoint for m in mounts] == ["/mnt/a b", "/mnt/blk"]
    assert mounts[0].bdi == "0:52" and mounts[0].connection == 52
    assert mounts[1].bdi == "8:1-fuseblk" and mounts[1].connection == kernel_dev(8, 1)
    assert isinstance(mounts[0], FuseMount)


def test_bcc_compiles_with_header_tree() -> None:
    require_bpf()
    tree = find_header_tree()
    require(tree is not None, "needs kernel headers (Debian linux-headers-amd64)")
    prepare_bcc_environment()
    code = (
        "from bcc import BPF\n"
        "b = BPF(text='#include <uapi/linux/fuse.h>\\nint f(void *c){return FUSE_WRITE;}')\n"
        "b.load_func('f', BPF.SOCKET_FILTER)\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
