"""The CLI's help, mountinfo parsing and the bcc header tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _only_bundled(monkeypatch, bundled) -> None:
    """This process sees no kernel headers but ``bundled`` (no build tree, kheaders or Debian
    pair); BCC_KERNEL_SOURCE is restored afterwards."""
    import fusewb.tracers.headers as headers

    monkeypatch.setattr(headers.platform, "release", lambda: "0.0.0-no-such-kernel")
    monkeypatch.setattr(headers, "KHEADERS", bundled / "no-kheaders.tar.xz")
    monkeypatch.setattr(headers, "_debian_pair", lambda: None)
    monkeypatch.setattr(headers, "BUNDLED", bundled)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "")


def test_bundled_headers_are_the_last_choice_and_only_for_their_architecture(tmp_path, monkeypatch) -> None:
    import fusewb.tracers.headers as headers

    bundled = tmp_path / "kernel-include"
    karch = headers.kernel_arch()
    (bundled / "include" / "linux").mkdir(parents=True)
    (bundled / "arch" / karch).mkdir(parents=True)
    (bundled / headers.BUNDLED_SOURCE_FILE).write_text("Debian linux-headers 6.1.0-99-amd64\n")
    _only_bundled(monkeypatch, bundled)
    tree = find_header_tree()
    assert tree is not None and tree.kind == "bundled" and not tree.matches_kernel
    assert tree.path == bundled and "6.1.0-99-amd64" in tree.note
    (bundled / "arch" / karch).rmdir()
    (bundled / "arch" / "other-arch").mkdir()
    assert find_header_tree() is None


def test_both_plans_compile_and_verify_against_the_bundled_headers(tmp_path, monkeypatch) -> None:
    """What make dist bundles (scripts/bundle_headers.py) is enough for every plan's program."""
    require_bpf()
    require(find_header_tree() is not None, "needs a header tree to bundle from (make setup)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        from bundle_headers import bundle
    finally:
        sys.path.pop(0)
    from fusewb.tracers.features import probe_features
    from fusewb.tracers.plan import choose_plan
    from fusewb.tracers.program import BuildOptions, verify_program

    bundled = tmp_path / "kernel-include"
    assert bundle(bundled) > 50
    _only_bundled(monkeypatch, bundled)
    assert prepare_bcc_environment().kind == "bundled"
    features = probe_features(test_loads=False)
    for plan in ("tracepoint", "kprobe"):
        programs, _seconds = verify_program(choose_plan(features, plan), BuildOptions())
        assert programs >= 10, plan
