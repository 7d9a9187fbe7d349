"""The layers show in the imports: contract at the bottom, tracers/analysis/fixtures above it,
the command line on top (docs/architecture.md). Read from the sources with ast."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# folder -> fusewb packages its library modules may import (besides itself and fusewb.__version__).
ALLOWED = {
    "contract": set(),
    "bpf": set(),
    "tracers": {"fusewb.contract", "fusewb.bpf"},
    "analysis": {"fusewb.contract"},
    "fixtures": {"fusewb.contract", "fusewb.tracers"},
}
# Command modules: the only ones below the top that may use click and fusewb.command.
COMMAND_MODULES = {"tracers/cli.py", "analysis/cli.py", "analysis/export.py", "fixtures/cli.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_library_modules_import_only_lower_layers(folder: str) -> None:
    checked = 0
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        allowed = ALLOWED[folder] | {f"fusewb.{folder}", "fusewb"}
        if rel in COMMAND_MODULES:
            allowed |= {"fusewb.command", "click"}
        wrong = sorted(m for m in _imports(path)
                       if (m.startswith("fusewb") and _package(m) not in allowed)
                       or (m.split(".")[0] == "click" and "click" not in allowed))
        assert not wrong, f"{rel} imports {wrong}: a lower layer must not import these"
        checked += 1
    assert checked > 0


def test_fusewb_root_import_is_only_the_version() -> None:
    for folder in ALLOWED:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "fusewb":
                    assert [a.name for a in node.names] == ["__version__"], path


# --- no import circle in analysis/ ---------------------------------------------------------------

def _targets(path: Path, package: str, modules: set[str], home: dict[str, str]) -> set[str]:
    """The sibling modules ``path`` imports anywhere (module level, functions, TYPE_CHECKING),
    by absolute or relative import or ``importlib.import_module`` of a constant name; a
    computed ``import_module`` target is an error (it could hide a circle)."""
    found: set[str] = set()

    def add(module: str, names: list[str]) -> None:
        if module == package:  # from fusewb.analysis import X: a submodule, or its home
            found.update(n if n in modules else home[n] for n in names if n in modules or n in home)
        elif module.startswith(package + "."):
            found.add(module[len(package) + 1:].split(".")[0])

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, [])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            add(base, [alias.name for alias in node.names])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module"):
            target = node.args[0] if node.args else None
            assert isinstance(target, ast.Constant), \
                f"{path.name}:{node.lineno}: import_module of a computed name"
            add(target.value, [])
    return found - {path.stem}


def _circle(folder: Path, package: str, home: dict[str, str]) -> list[str] | None:
    """An import circle among the modules of ``folder`` (the package's ``__init__`` only loads
    names lazily, on first use: not a node), or None."""
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {m: _targets(folder / f"{m}.py", package, modules, home) for m in sorted(modules)}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*trail[trail.index(target):], target] if target in trail else [
                    *trail, target]
            if target not in state:
                found = visit(target, [*trail, target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_circle_in_analysis() -> None:
    from fusewb.analysis import _MODULE_OF  # noqa: PLC0415 (the lazy names' homes)

    circle = _circle(ROOT / "analysis", "fusewb.analysis", _MODULE_OF)
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_the_circle_check_sees_relative_imports_and_importlib(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "b.py").write_text("import importlib\nc = importlib.import_module('pkg.c')\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from pkg import thing\n")
    assert _circle(tmp_path, "pkg", {"thing": "a"}) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("x = 1\n")
    assert _circle(tmp_path, "pkg", {}) is None
    (tmp_path / "c.py").write_text("import importlib\nimportlib.import_module(name)\n")
    with pytest.raises(AssertionError, match="computed name"):
        _circle(tmp_path, "pkg", {})


def test_flag_declarations_read_with_keywords() -> None:
    """Every ``Flag(...)`` in analysis/findings.py names its arguments."""
    calls = [node for node in ast.walk(ast.parse((ROOT / "analysis" / "findings.py").read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Flag"]
    assert calls and all(not call.args for call in calls), [c.lineno for c in calls if c.args]


def test_bpf_map_sizes_come_from_the_contract() -> None:
    """Every BPF map is sized by a define of BuildOptions (contract/defaults.py) or an id count
    of bpf/fusewb.h, never a literal (single-entry maps aside)."""
    from fusewb.tracers.events import header_defs  # noqa: PLC0415
    from fusewb.tracers.program import BuildOptions  # noqa: PLC0415

    known = set(BuildOptions().defines()) | set(header_defs().constants)
    maps = re.findall(r"^BPF_\w+\((\w+),[^;]*?(\w+)\);", "\n".join(
        p.read_text() for p in sorted((ROOT / "bpf").glob("*.c"))), re.M)
    assert len(maps) > 10
    assert [(name, size) for name, size in maps if size != "1" and size not in known] == []
