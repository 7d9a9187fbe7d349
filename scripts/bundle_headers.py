"""make dist: copy the kernel headers fusewb's BPF program includes into the package
(``bpf/kernel-include/``, package data), so a host whose kernel has neither a build tree nor
kheaders compiles fusewb's program with only the distribution's bcc installed.

Which files: bcc compiles a program holding every ``#include <...>`` of ``bpf/`` (its own
helpers added, as in a real compile) against this machine's header tree (the one
``fusewb trace`` would use, tracers/headers.py), with clang writing its dependency file; every
file of that tree the compile opened is copied, symbolic links followed, with its path relative
to the tree (a running kernel's split ``build``/``source`` pair is merged into one tree, as
tracers/headers.py merges Debian's split packages). The headers are this machine's
architecture's: the bundle is used only on that architecture. The tree's kernel is
written to ``SOURCE`` in the folder. Like the Debian fallback tree, these headers are another
kernel's: fusewb takes only macros, helper declarations and uapi enums from them, struct
offsets from BTF.

    python scripts/bundle_headers.py bpf/kernel-include
"""

from __future__ import annotations

import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

from fusewb.bpf import source_dir
from fusewb.tracers.headers import BUNDLED_SOURCE_FILE, prepare_bcc_environment

_SYSTEM_INCLUDE = re.compile(r"^#include <[^>]+>", re.M)


def program_includes() -> str:
    """Every system include of the BPF sources, one per line, in a stable order."""
    found = set()
    for source in sorted(source_dir().glob("*.[ch]")):
        found.update(_SYSTEM_INCLUDE.findall(source.read_text()))
    return "\n".join(sorted(found)) + "\n"


def tree_roots(tree: Path) -> list[Path]:
    """Where the files of a header tree live: the tree itself, and for a running kernel's
    split build tree (``/lib/modules/R/build`` beside ``source``, as Debian and Ubuntu install
    it) its source folder too, which bcc then compiles from."""
    source = tree.parent / "source"
    if tree.name == "build" and source.is_dir() and source.resolve() != tree.resolve():
        return [source, tree]
    return [tree]


def bundle_paths(names: list[str], roots: list[Path]) -> dict[Path, Path]:
    """Each file of clang's dependency list that lies in one of ``roots`` -> its path inside
    the bundle (relative to that root). Relative names are relative to the folder bcc compiles
    from (``roots[0]``); absolute ones (a split tree's generated headers) are found under any
    root; bcc's own virtual headers and files elsewhere are left out."""
    found: dict[Path, Path] = {}
    for name in names:
        path = Path(name) if name.startswith("/") else roots[0] / name
        for root in roots:
            if (root == path or root in path.parents) and path.is_file():
                found[path] = path.relative_to(root)
                break
    return found


def opened_headers(tree: Path) -> dict[Path, Path]:
    """The files of ``tree`` that bcc's compile of :func:`program_includes` opens (clang's
    dependency file), as :func:`bundle_paths` gives them."""
    from bcc import BPF  # noqa: PLC0415

    class _Unattached(BPF):
        def _trace_autoload(self) -> None:
            """Nothing to attach: only the compile's dependency file is wanted."""

    with tempfile.TemporaryDirectory() as scratch:
        deps = Path(scratch) / "deps.d"
        _Unattached(text=program_includes().encode(), cflags=["-MD", f"-MF{deps}"]).cleanup()
        names = deps.read_text().replace("\\\n", " ").split(":", 1)[1].split()
    return bundle_paths(names, tree_roots(tree))


def bundle(dest: Path) -> int:
    """Copy the opened headers into ``dest`` (replaced whole, world-readable); the number of
    files copied. Nothing is left behind when it fails."""
    tree = prepare_bcc_environment()
    if tree.kind in ("kheaders", "bundled"):
        raise SystemExit(f"bundle_headers: the header tree is {tree.kind} ({tree.path}); "
                         "install linux-headers-amd64 (make setup) to bundle from a tree on disk")
    files = opened_headers(tree.path)
    if Path("include/generated/autoconf.h") not in files.values():
        raise SystemExit(f"bundle_headers: no include/generated/autoconf.h among the {len(files)} "
                         f"files bcc opened in {tree.path}; is it a kernel header tree?")
    staging = Path(tempfile.mkdtemp(prefix=".kernel-include.", dir=dest.parent))
    try:
        staging.chmod(0o755)
        for path, relative in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        source = (f"Debian linux-headers {tree.path.name}" if tree.kind == "debian-fallback"
                  else f"the build tree of {platform.release()}")
        (staging / BUNDLED_SOURCE_FILE).write_text(f"{source}\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(files)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    dest = Path(argv[1]).resolve()
    count = bundle(dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"bundle_headers: {count} header files, {size / 1024:.0f} KiB, into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
