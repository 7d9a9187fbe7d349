"""The layers show in the imports: contract at the bottom, tracers/analysis/fixtures above it,
the command line on top (docs/architecture.md). Read from the sources with ast."""

from __future__ import annotations

import ast
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
