"""The HTML report as a person sees it: opened in headless Chromium (no network), its timeline
draws every lane and its flame graph renders, with no JavaScript error on the console."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusewb.analysis.cli import analyze
from fusewb.analysis.timeline import LANES_NAME
from tests.analysis_cases import everything_capture
from tests.browser import Browser, chromium
from tests.support import require

# Per lane of the timeline: the pixels of its row, inside the plot frame, that a span or a
# marker coloured (saturated, or dark grey for requests), read from the figure as drawn.
LANE_PIXELS = """(() => {
  const fig = Bokeh.documents[0].get_model_by_name(%s);
  const view = Bokeh.index.find_one(fig);
  const canvas = view.export("png").canvas;
  const ratio = canvas.height / view.bbox.height;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const frame = view.frame.bbox;
  const out = {};
  for (const lane of fig.y_range.factors) {
    const y = Math.round(view.frame.y_scale.compute(fig.y_range.synthetic(lane)) * ratio);
    let drawn = 0;
    for (let x = Math.ceil((frame.left + 2) * ratio); x < (frame.right - 2) * ratio; x++) {
      const i = (y * canvas.width + x) * 4;
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 40 || Math.max(r, g, b) < 120) drawn++;
    }
    out[lane] = drawn;
  }
  return out;
})()"""
READY = ("typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && "
         "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name(%s)) !== undefined")


def _report(folder: Path, out: Path) -> Path:
    done = CliRunner().invoke(analyze, [str(folder), "--format", "html", "-o", str(out)])
    assert done.exit_code == 0, done.output
    return out


def _lanes(report: Path) -> tuple[dict[str, int], Browser]:
    with Browser() as page:
        page.open(report.as_uri())
        name = json.dumps(LANES_NAME)
        page.wait_for(READY % name)
        page.wait_for("document.readyState === 'complete'")
        lanes = page.wait_for(LANE_PIXELS % name)
        roots = page.evaluate("Bokeh.documents[0].roots().length")
    assert roots == 2, "the timeline and the flame graph"
    return lanes, page


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    require(chromium() is not None, "needs chromium (scripts/setup.sh installs it)")


def test_the_timeline_draws_its_lanes_without_javascript_errors(tmp_path: Path) -> None:
    report = _report(everything_capture(tmp_path / "cap"), tmp_path / "r.html")
    lanes, page = _lanes(report)
    # the connection's requests, the server thread that answered, each waiting task
    assert set(lanes) == {"requests, bdi 0:52", "server fusewb-server[3001]", "writer[100]",
                          "reader[101]", "kcompactd0[102]", "sync[103]", "fusewb-server[3001]"}
    assert all(n > 0 for n in lanes.values()), lanes
    assert page.exceptions == []
    assert [m for m in page.console if m["type"] in ("error", "warning")] == []


def test_a_report_of_many_hosts_draws_a_lane_set_per_host(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    for host in ("alpha", "bravo", "charlie"):
        everything_capture(fleet / host, host=host)
    lanes, page = _lanes(_report(fleet, tmp_path / "r.html"))
    assert {lane.split()[0] for lane in lanes} == {"alpha", "bravo", "charlie"}
    assert "bravo requests, bdi 0:52" in lanes and "charlie kcompactd0[102]" in lanes
    assert all(n > 0 for n in lanes.values()), lanes
    assert page.exceptions == []
    assert [m for m in page.console if m["type"] in ("error", "warning")] == []
