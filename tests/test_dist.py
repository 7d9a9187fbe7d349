"""``make dist`` (scripts/dist.sh) into a temporary folder: the wheel holds the BPF C and the
kernel headers it includes and declares only the core as dependencies, the wheelhouse installs
offline into a fresh virtualenv beside the distribution's bcc, and the .pyz runs with the system
Python alone. Nothing is loaded into the kernel or mounted (bcc compiles, to list the headers
it bundles into bpf/kernel-include, which make dist rewrites); pip reads PyPI or its cache for
the core's wheels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from fusewb import __version__
from fusewb.analysis.synthetic import synthetic_capture
from fusewb.contract.extras import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter a production host has, with its bcc
BUILD_TIMEOUT_S = 480


def _run(*args: str | Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(ROOT / "scripts" / "dist.sh", out, env=dict(os.environ, PY=sys.executable),
         timeout=BUILD_TIMEOUT_S)
    return out


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_capture(tmp_path_factory.mktemp("cap") / "cap", 2000, 500, seed=5)


def _check_runs(fusewb: list[str | Path], capture: Path, env: dict[str, str] | None = None) -> None:
    """--help of the root and of doctor, and a JSON report of ``capture``."""
    assert "Examples:" in _run(*fusewb, "--help", env=env).stdout
    assert "Usage:" in _run(*fusewb, "doctor", "--help", env=env).stdout
    report = json.loads(_run(*fusewb, "analyze", capture, "--format", "json", env=env).stdout)
    assert report["generator"] == f"fusewb {__version__}" and report["flags"]


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_wheel_holds_the_bpf_sources_and_only_the_core(dist: Path) -> None:
    wheel = dist / f"fusewb-{__version__}-py3-none-any.whl"
    assert (dist / f"fusewb-{__version__}.tar.gz").is_file()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"fusewb-{__version__}.dist-info/METADATA").decode())
        entry_points = archive.read(f"fusewb-{__version__}.dist-info/entry_points.txt").decode()
    sources = sorted(p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h"))
    assert sources and all(f"fusewb/bpf/{name}" in names for name in sources)
    # the kernel headers the program includes (scripts/bundle_headers.py), for hosts without any
    for header in ("include/generated/autoconf.h", "include/uapi/linux/fuse.h",
                   "include/uapi/linux/ptrace.h", "SOURCE"):
        assert f"fusewb/bpf/kernel-include/{header}" in names, header
    assert "fusewb = fusewb.cli:main" in entry_points
    core = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(core) == sorted(declared)
    assert set(metadata.get_all("Provides-Extra")) >= set(EXTRAS)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_wheelhouse_installs_offline_beside_the_distributions_bcc(dist: Path, capture: Path,
                                                                  tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--find-links",
         dist / "wheelhouse", "fusewb", timeout=300)
    _check_runs([venv / "bin" / "fusewb"], capture)
    # bcc from the distribution, no extra installed
    _run(venv / "bin" / "python", "-c", "import bcc")
    for extra in EXTRAS.values():
        for module in extra.modules:
            absent = subprocess.run([venv / "bin" / "python", "-c", f"import {module}"],
                                    capture_output=True, timeout=60, check=False)
            assert absent.returncode == 1, f"{module} ([{extra.name}]) came with the core install"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_pyz_runs_with_the_system_python(dist: Path, capture: Path, tmp_path: Path) -> None:
    (pyz,) = dist.glob(f"fusewb-{__version__}-py*.pyz")
    env = dict(os.environ, SHIV_ROOT=str(tmp_path / "shiv"))
    env.pop("PYTHONPATH", None)
    _check_runs([SYSTEM_PYTHON, pyz], capture, env)
