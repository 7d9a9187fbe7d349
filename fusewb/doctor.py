"""``fusewb doctor``: what this kernel offers, with the evidence, and the probe plan fusewb picks.

Before it says tracing will work, the doctor compiles the BPF program of that plan and loads
every program of it into the verifier, attaching nothing (``fusewb.tracers.program.verify_program``,
well under a second here); a compile or verifier failure is a problem like any other (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from fusewb.command import Command

if TYPE_CHECKING:
    from fusewb.tracers.plan import ProbePlan

__all__ = ["doctor", "Diagnosis", "diagnose"]


@dataclass
class Diagnosis:
    """The doctor's findings: the kernel features, FUSE mounts, plan, and blocking problems."""

    features: dict
    mounts: list[dict]
    plan: dict | None
    problems: list[tuple[str, str]]  # (problem, fix): each one stops tracing

    @property
    def can_trace(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "can_trace": self.can_trace,
            "problems": [{"problem": p, "fix": f} for p, f in self.problems],
            "features": self.features,
            "mounts": self.mounts,
            "plan": self.plan,
        }


def _bcc_import_error() -> ImportError | None:
    try:
        import bcc  # noqa: F401, PLC0415
    except ImportError as exc:
        return exc
    return None


def _verify(chosen: ProbePlan) -> tuple[dict | None, tuple[str, str] | None]:
    """Compile and verifier-load the plan: (what was loaded, None) or (None, (problem, fix))."""
    from fusewb.contract.errors import FusewbError  # noqa: PLC0415
    from fusewb.tracers.program import BuildOptions, verify_program  # noqa: PLC0415

    try:
        programs, seconds = verify_program(chosen, BuildOptions())
    except FusewbError as exc:
        return None, (exc.problem, exc.fix or "")
    return {"programs": programs, "seconds": round(seconds, 3)}, None


def diagnose(test_loads: bool = True, defines: Mapping[str, str] | None = None) -> Diagnosis:
    """Collect the evidence (imports bcc lazily; safe to call without root). ``defines`` are
    added to the plan's before the verification compile (tests force a failing one)."""
    from fusewb.contract.extras import HEADERS_FIX, missing_bcc  # noqa: PLC0415
    from fusewb.tracers.features import probe_features  # noqa: PLC0415
    from fusewb.tracers.mounts import fuse_mounts  # noqa: PLC0415

    feats = probe_features(test_loads=test_loads)
    problems: list[tuple[str, str]] = []
    if not feats.root:
        problems.append(("not running as root", "run fusewb doctor/trace as root (sudo)"))
    if not feats.tracefs.ok:
        problems.append(("tracefs is not mounted", "mount -t tracefs nodev /sys/kernel/tracing"))
    bcc_error = _bcc_import_error()
    if bcc_error:
        error = missing_bcc(bcc_error)
        problems.append((error.problem, error.fix or ""))
    if feats.headers is None:
        problems.append(("no kernel headers for bcc", HEADERS_FIX))
    wait_tp = feats.tracepoints.get("writeback:folio_wait_writeback") or feats.tracepoints.get(
        "writeback:wait_on_page_writeback"
    )
    if feats.tracefs.ok and not wait_tp and not feats.kprobes.ok:
        problems.append(
            (
                "no writeback wait tracepoint and no kprobes: fusewb cannot see writeback waits",
                "use a kernel with CONFIG_TRACEPOINTS (writeback events) or CONFIG_KPROBES",
            )
        )
    plan = None
    from fusewb.tracers.plan import choose_plan  # noqa: PLC0415

    if not problems:
        chosen = choose_plan(feats)
        chosen.defines.update(defines or {})
        verified, problem = _verify(chosen)
        if problem is not None:
            problems.append(problem)
        plan = {
            "name": chosen.name,
            "tracepoints": list(chosen.tracepoints),
            "raw_tracepoints": list(chosen.raw_tracepoints),
            "kprobes": [chosen.symbol(fn) for fn in chosen.kprobes],
            "entry_kprobes": [chosen.symbol(fn) for fn in chosen.entry_kprobes],
            "skipped": dict(chosen.skipped),
            "describe": list(chosen.describe()),
            "absent_columns": dict(chosen.absent_columns),
            "verified": verified,
        }
    mounts = [m.as_dict() for m in fuse_mounts()]
    return Diagnosis(feats.as_dict(), mounts, plan, problems)


def _mark(ok: bool) -> str:
    return click.style("yes", fg="green") if ok else click.style("no ", fg="red")


def _grid(present: dict[str, bool], columns: int = 2, width: int = 46) -> None:
    """Print ``name: yes/no`` entries packed in columns, to keep the doctor on one screen."""
    cells = [f"{_mark(ok)} {name:<{width - 4}}" for name, ok in present.items()]
    for start in range(0, len(cells), columns):
        click.echo("  " + "".join(cells[start : start + columns]).rstrip())


def _render(diag: Diagnosis) -> None:
    f = diag.features
    echo = click.echo
    echo(f"kernel {f['release']}   root: {_mark(f['root'])}")
    echo("")
    echo("BPF and tracing")
    for key, label in [
        ("tracefs", "tracefs"),
        ("btf", "BTF"),
        ("raw_tracepoint", "raw tracepoints"),
        ("kprobes", "kprobes"),
        ("fentry", "fentry/fexit"),
        ("uprobes", "uprobes"),
    ]:
        echo(f"  {label:<16} {_mark(f[key]['ok'])}  {f[key]['evidence']}")
    headers = f["headers"]
    if headers:
        echo(f"  {'bcc headers':<16} {headers['kind']}: {headers['path']}")
        echo(f"  {'':<16}      {headers['note']}")
    else:
        echo(f"  {'bcc headers':<16} {_mark(False)}  none found")
    echo("")
    echo("Tracepoints")
    _grid(f["tracepoints"])
    echo("")
    echo("Kernel functions (kallsyms)")
    _grid(f["symbols"])
    echo("")
    echo("FUSE mounts")
    if not diag.mounts:
        echo("  none (fusewb trace picks up new FUSE mounts while it runs)")
    for m in diag.mounts:
        echo(
            f"  {m['mountpoint']}  {m['fstype']}  bdi {m['bdi']}  connection {m['connection']}  "
            f"max_ratio {m['max_ratio']}  strict_limit {m['strict_limit']}"
        )
    echo("")
    if diag.plan:
        echo(f"Probe plan: {click.style(diag.plan['name'], bold=True)}")
        for line in diag.plan["describe"]:
            echo(f"  {line}")
        verified = diag.plan["verified"]
        if verified:
            echo(f"  compiled; {verified['programs']} programs loaded into the verifier, nothing "
                 f"attached, in {verified['seconds']:.2f} s")
    for problem, fix in diag.problems:
        echo(click.style(f"cannot trace: {problem}; {fix}", fg="red"))


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--no-test-loads", is_flag=True, help="Skip the real test attachments (faster).")
@click.option("--define", "defines", multiple=True, hidden=True, metavar="NAME=VALUE",
              help="Add a define to the plan's verification compile (tests force a failure).")
def doctor(as_json: bool, no_test_loads: bool, defines: tuple[str, ...]) -> None:
    """Show what this kernel offers fusewb, with the evidence, and the probe plan it will use.

    Exit status 0 when tracing can work, 2 (with the fix named) when it cannot.

    \b
    Examples:
      sudo fusewb doctor
      sudo fusewb doctor --json | jq .plan
    """
    extra = dict(d.partition("=")[::2] for d in defines)
    diag = diagnose(test_loads=not no_test_loads, defines=extra)
    if as_json:
        click.echo(json.dumps(diag.as_dict(), indent=2, default=str))
    else:
        _render(diag)
    if not diag.can_trace:
        raise SystemExit(2)
