"""fsx-style integrity: 20,000 seeded operations against the fixture, zero mismatches."""

from __future__ import annotations

import pytest

from fusewb.fixtures.faults import Faults
from fusewb.fixtures.fsx import FsxMismatch, FsxOp, generate_ops, replay_fsx, run_fsx
from tests.fixture_helpers import mounted

OPS = 20000


@pytest.mark.parametrize("latency_ms, seed", [(0, 11), (1, 12)])
def test_fsx_with_writeback_cache(tmp_path, latency_ms, seed) -> None:
    log = tmp_path / "fsx.log"
    with mounted(tmp_path / "mnt", Faults(latency_ms=latency_ms)) as fx:
        assert fx.status()["writeback_cache"] is True
        result = run_fsx(tmp_path / "mnt" / "fsx.dat", ops=OPS, seed=seed, log=log,
                         server_digest=lambda: fx.digest("fsx.dat"), echo=lambda _: None)
        assert result.ops == OPS
        assert set(result.by_kind) == {"read", "write", "mapread", "mapwrite", "truncate", "fsync"}
        assert result.server_checks > 100
        assert fx.status()["writes"]["completed"] > 0
    lines = [ln for ln in log.read_text().splitlines() if ln[:1].isdigit()]
    assert len(lines) == OPS


def test_fsx_log_replays_and_mismatches_are_reported(tmp_path) -> None:
    """On a local file: the log replays the same ops, and a wrong server copy is caught."""
    log = tmp_path / "fsx.log"
    run_fsx(tmp_path / "a.dat", ops=500, seed=3, log=log, echo=lambda _: None)
    replayed = replay_fsx(tmp_path / "b.dat", log, echo=lambda _: None)
    assert replayed.ops == 500
    assert [op.line() for op in generate_ops(3, 5, 256 << 10, 64 << 10)] == \
        [ln for ln in log.read_text().splitlines() if ln[:1].isdigit()][:5]
    assert FsxOp.parse("7 write 10 3").data() == FsxOp(7, "write", 10, 3).data()
    wrong = lambda: {"size": -1, "sha256": ""}  # noqa: E731
    with pytest.raises(FsxMismatch) as exc:
        run_fsx(tmp_path / "c.dat", ops=2000, seed=3, server_digest=wrong, echo=lambda _: None)
    assert "server holds -1 bytes" in str(exc.value) and "last ops" in str(exc.value)
