"""Draw a trace written by ``fusewb export --perfetto`` as a PNG with matplotlib, for docs where
ui.perfetto.dev cannot be screenshotted: the same tracks in the same order (counters, request
lanes per connection, one row per task), read back from the trace file itself.

Usage: .venv/bin/python scripts/perfetto_picture.py TRACE.pftrace OUT.png [--start S --end S]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fusewb.analysis.perfetto import read_trace  # noqa: E402

__all__ = ["main"]


def _label(track: dict) -> str:
    if track["tid"]:
        return f"{track['thread_name']} {track['tid']}"
    name = track["name"] or "?"
    return name if len(name) <= 40 else "..." + name[-37:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    got = read_trace(args.trace)
    origin = min([*got.slices.ts, *got.counters.ts])
    counter_tracks = [u for u, t in got.tracks.items() if t["counter"] and u in set(got.counters.track)]
    slice_tracks = [u for u, t in got.tracks.items() if not t["counter"] and u in set(got.slices.track)]
    rows = len(slice_tracks)
    fig, axes = plt.subplots(len(counter_tracks) + 1, 1, sharex=True, figsize=(11, 1.2 * len(counter_tracks) + 0.45 * rows + 1.2),
                             gridspec_kw={"height_ratios": [1] * len(counter_tracks) + [max(rows * 0.4, 1)]})
    for ax, uuid in zip(axes, counter_tracks):
        values = got.counters[got.counters.track == uuid]
        ax.step((values.ts - origin) / 1e9, values.value, where="post", color="tab:blue")
        ax.set_ylabel(_label(got.tracks[uuid]), rotation=0, ha="right", va="center", fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for row, uuid in enumerate(slice_tracks):
        spans = got.slices[got.slices.track == uuid]
        wait = any("path" in a for a in spans.args)
        ax.broken_barh(list(zip((spans.ts - origin) / 1e9, spans.dur / 1e9)), (row - 0.35, 0.7),
                       facecolors="tab:red" if wait else "tab:green", edgecolors="black",
                       linewidth=0.3)
        for begin, dur, name in zip(spans.ts, spans.dur, spans.name):
            if dur / 1e9 > 0.04 * ax.get_xlim()[1]:
                ax.text((begin - origin) / 1e9, row, f" {name}", va="center", fontsize=7)
    ax.set_yticks(range(rows), [_label(got.tracks[u]) for u in slice_tracks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the capture started")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{args.trace.name}: the Perfetto trace's tracks, drawn with matplotlib", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
