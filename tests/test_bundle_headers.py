"""scripts/bundle_headers.py's choice of files, on made-up header trees: clang's dependency list
of a compile from a merged tree (Debian fallback) and from a running kernel's split
``build``/``source`` pair. The real bundle is compiled in test_foundation and packed in test_dist."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bundle_headers import bundle_paths, tree_roots  # noqa: E402

sys.path.pop(0)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("/* header */\n")
    return path


def test_a_merged_tree_gives_its_relative_names(tmp_path: Path) -> None:
    tree = tmp_path / "kernel-tree" / "6.1.0-57-amd64"
    _touch(tree / "include" / "linux" / "types.h")
    _touch(tree / "include" / "generated" / "autoconf.h")
    assert tree_roots(tree) == [tree]
    names = ["/virtual/main.c", "include/linux/types.h", "include/generated/autoconf.h",
             "/virtual/include/bcc/helpers.h", "include/linux/absent.h"]
    assert bundle_paths(names, tree_roots(tree)) == {
        tree / "include/linux/types.h": Path("include/linux/types.h"),
        tree / "include/generated/autoconf.h": Path("include/generated/autoconf.h"),
    }


def test_a_split_running_kernel_tree_is_merged(tmp_path: Path) -> None:
    modules = tmp_path / "lib" / "modules" / "6.1.0-57-amd64"
    build, source = modules / "build", tmp_path / "usr" / "src" / "linux-headers-common"
    _touch(source / "include" / "linux" / "types.h")
    _touch(build / "include" / "generated" / "autoconf.h")
    _touch(build / "arch" / "x86" / "include" / "generated" / "uapi" / "asm" / "types.h")
    (modules / "source").symlink_to(source)
    roots = tree_roots(build)
    assert roots == [modules / "source", build]
    # bcc compiles from source: its headers relative, build's generated ones absolute
    names = ["include/linux/types.h", f"{build}/include/generated/autoconf.h",
             f"{build}/arch/x86/include/generated/uapi/asm/types.h"]
    assert sorted(bundle_paths(names, roots).values()) == [
        Path("arch/x86/include/generated/uapi/asm/types.h"),
        Path("include/generated/autoconf.h"), Path("include/linux/types.h")]
