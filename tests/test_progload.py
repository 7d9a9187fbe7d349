"""The program-type test loads (no bpftool on a production host) against ``bpftool feature
probe``, which test-loads each type its own way, on the running kernel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from fusewb.tracers.btf import load_vmlinux_btf
from fusewb.tracers.features import FENTRY_TEST_FUNCTION, probe_features
from fusewb.tracers.progload import BPF_TRACE_FENTRY, load_smallest
from tests.support import require_root


def _bpftool_program_types() -> dict[str, bool]:
    out = subprocess.run(["bpftool", "-j", "feature", "probe", "kernel"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out)["program_types"]


def test_test_loads_agree_with_bpftool() -> None:
    require_root()
    bpftool = _bpftool_program_types()
    for name in ("kprobe", "raw_tracepoint"):
        loaded, evidence = load_smallest(name)
        assert loaded == bpftool[f"have_{name}_prog_type"], (name, evidence)
    # fentry on a real function: bpftool asks only whether the type exists, which it does
    # wherever such a program loads
    fentry = probe_features(test_loads=True).fentry
    assert fentry.ok <= bpftool["have_tracing_prog_type"], fentry


def test_a_refused_load_says_why() -> None:
    """fentry without the function it would trace is refused everywhere, with the errno."""
    require_root()
    loaded, evidence = load_smallest("tracing", BPF_TRACE_FENTRY, 0)
    assert not loaded
    assert re.fullmatch(r"test load of a tracing program: refused \(E[A-Z]+(, verifier: .+)?\)", evidence), evidence


def test_features_need_no_bpftool(monkeypatch) -> None:
    """With no bpftool on PATH (a production host), the checks still rest on real loads."""
    require_root()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # bpftool is in /usr/sbin
    assert shutil.which("bpftool") is None
    features = probe_features(test_loads=True)
    assert features.raw_tracepoint.evidence.startswith("test load of a raw_tracepoint program")
    assert "test load of a kprobe program" in features.kprobes.evidence
    assert features.fentry.evidence.endswith(f"on {FENTRY_TEST_FUNCTION}"), features.fentry.evidence
    # the fentry target is a real function of this kernel's BTF
    assert load_vmlinux_btf().func_id(FENTRY_TEST_FUNCTION) > 0
