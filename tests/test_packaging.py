"""The install splits into a core and extras (contract/extras.py): pyproject.toml declares what
contract.extras.EXTRAS says, the core commands run with every extra's modules unimportable, and a
command that needs a missing extra says which one in one line (exit 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

from fusewb.analysis.synthetic import synthetic_capture
from fusewb.contract.extras import BCC_PACKAGES, EXTRAS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BLOCKED = sorted(m for extra in EXTRAS.values() for m in extra.modules)
# Installs every extra: the development set (make setup) and the all-in-one.
AGGREGATES = {"all", "test"}



def _blocking_env(site: Path, modules: list[str]) -> dict[str, str]:
    """The environment of a Python where ``modules`` are not installed: a sitecustomize in
    ``site`` whose meta-path finder raises ModuleNotFoundError for them."""
    site.mkdir()
    (site / "sitecustomize.py").write_text(f'''
import importlib.abc, sys
BLOCKED = {modules!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
''')
    return dict(os.environ, PYTHONPATH=str(site))

# Command lines that need an extra ({cap}: a capture, {tmp}: a scratch folder). `fusewb run`
# only as root, where it gets past its root check; mount_fixture checks the extra again.
NEEDS = [
    ("fixture", ["fixture", "mount", "{tmp}/mnt"]),
    ("report", ["analyze", "{cap}", "--format", "html", "-o", "{tmp}/r.html"]),
    ("dask", ["analyze", "{cap}", "--engine", "dask"]),
    ("perfetto", ["export", "{cap}", "--perfetto", "-o", "{tmp}/c.pftrace"]),
] + [("fixture", ["run", "msync-slow", "--keep", "{tmp}/run"])] * (os.geteuid() == 0)


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _installed_by(requirement: str) -> set[str]:
    """The distributions a requirement installs directly: its own, and those of its extras
    (``dask[distributed]`` installs distributed), from the installed metadata."""
    match = re.match(r"([A-Za-z0-9._-]+)(?:\[([a-z,]+)\])?", requirement)
    names = {_name(match.group(1))}
    for extra in (match.group(2) or "").split(","):
        names |= {_name(r) for r in requires(match.group(1)) or []
                  if extra and re.search(rf"extra == ['\"]{extra}['\"]", r)}
    return names


def _extras_named(requirement: str) -> set[str]:
    """The extras of a self-reference such as ``fusewb[fixture,report]``."""
    match = re.fullmatch(r"fusewb\[([a-z,]+)\]", requirement)
    return set(match.group(1).split(",")) if match else set()


def _expand(extra: str) -> set[str]:
    """The extras an extra installs, following its self-references (``fusewb[...]``)."""
    named = {extra}
    for requirement in PYPROJECT["optional-dependencies"].get(extra, []):
        for inner in _extras_named(requirement):
            named |= _expand(inner)
    return named


def test_pyproject_declares_the_extras_of_contract() -> None:
    optional = PYPROJECT["optional-dependencies"]
    assert set(optional) - AGGREGATES == set(EXTRAS)
    for aggregate in AGGREGATES:
        assert _expand(aggregate) >= set(EXTRAS), f"[{aggregate}] does not install every extra"
    providers = packages_distributions()
    for extra in EXTRAS.values():
        listed = set().union(*map(_installed_by, optional[extra.name]))
        for module in extra.modules:
            provided_by = {_name(d) for d in providers.get(module, [])}
            assert provided_by & listed, f"{module} comes from {provided_by}, not [{extra.name}] {listed}"
            assert not provided_by & {_name(r) for r in PYPROJECT["dependencies"]}, f"{module} is core"


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """The environment of a core-only install (every extra's modules blocked), and a small
    synthetic capture."""
    tmp = tmp_path_factory.mktemp("core")
    return _blocking_env(tmp / "site", BLOCKED), synthetic_capture(tmp / "cap", 2000, 500, seed=3)


def _fusewb(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fusewb.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_blocker_blocks(blocked: tuple[dict[str, str], Path]) -> None:
    env, _ = blocked
    done = subprocess.run([sys.executable, "-c", f"import {BLOCKED[0]}"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "blocked by the test" in done.stderr


@pytest.mark.parametrize("command", ["trace", "stuck", "doctor", "analyze", "export", "fixture", "run"])
def test_help_needs_no_extra(blocked: tuple[dict[str, str], Path], command: str) -> None:
    done = _fusewb(blocked[0], command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Examples:" in done.stdout


def test_analyze_needs_no_extra(blocked: tuple[dict[str, str], Path]) -> None:
    env, cap = blocked
    done = _fusewb(env, "analyze", cap, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["capture"]["hosts"] == ["synthetic"] and report["flags"]
    text = _fusewb(env, "analyze", cap, "--engine", "streaming")
    assert text.returncode == 0, text.stderr
    assert "BLOCKED_WAIT" in text.stdout


def test_every_extra_has_a_command() -> None:
    assert {extra for extra, _ in NEEDS} == set(EXTRAS)


@pytest.mark.parametrize(("extra", "command"), NEEDS, ids=[" ".join(c[:3]) for _, c in NEEDS])
def test_missing_extra_is_one_line(blocked: tuple[dict[str, str], Path], tmp_path: Path,
                                   extra: str, command: list[str]) -> None:
    env, cap = blocked
    done = _fusewb(env, *[a.format(cap=cap, tmp=tmp_path) for a in command])
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"need the '{extra}' extra" in lines[0] and f"pip install 'fusewb[{extra}]'" in lines[0]
    assert not (tmp_path / "mnt").exists() and not (tmp_path / "run").exists(), "went on without its extra"


def test_missing_bcc_names_the_distribution_packages(tmp_path: Path) -> None:
    env = _blocking_env(tmp_path / "site", ["bcc"])
    done = subprocess.run(
        [sys.executable, "-c", "from fusewb.tracers.program import compile_program\n"
         "from fusewb.contract.errors import FusewbError\n"
         "try:\n    compile_program(None, None)\nexcept FusewbError as exc:\n    print(exc)"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("bcc is not importable (No module named 'bcc'")
    assert all(package in done.stdout for package in BCC_PACKAGES), done.stdout
