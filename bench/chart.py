"""The suite's chart: req/s and p99 against connections, Waymark beside its ceilings (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Each line of the chart: a target of the sweep's search, its label and its style.
LINES: dict[str, tuple[str, dict[str, Any]]] = {
    "waymark": ("Waymark (server.py)", {"color": "tab:blue", "linewidth": 2.5, "marker": "o"}),
    "peer": ("FastAPI + uvicorn peer", {"color": "tab:orange", "marker": "s"}),
    "echo": ("TLS echo ceiling", {"color": "tab:green", "marker": "^", "linestyle": "--"}),
    "store": ("direct Store ceiling", {"color": "tab:gray", "marker": "v", "linestyle": ":"}),
}
OP = "search_peak"


def draw(result: dict[str, Any], path: Path) -> None:
    """Write the chart of the search sweep, one column per database, to path."""
    databases = result["databases"]
    figure = Figure(figsize=(6 * len(databases), 8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(databases), squeeze=False)
    meta = result["meta"]
    figure.suptitle(
        f"Waymark search_walks (area peak): {meta['seconds']:g} s per stage,"
        f" {meta['cpus']} CPUs, load average {meta['load_average_before'][0]:.1f} before"
    )
    for column, database in enumerate(databases):
        rate, tail = axes[0][column], axes[1][column]
        for target, (label, style) in LINES.items():
            rows = sorted(
                (r for r in database["sweep"] if r["op"] == OP and r["target"] == target),
                key=lambda r: r["connections"],
            )
            connections = [r["connections"] for r in rows]
            rate.plot(connections, [r["overall"]["per_s"] for r in rows], label=label, **style)
            tail.plot(connections, [r["overall"]["p99_ms"] for r in rows], label=label, **style)
        rate.set_title(database["db"])
        rate.set_ylabel("requests per second")
        rate.set_ylim(bottom=0)
        tail.set_ylabel("p99 latency, ms (log)")
        tail.set_yscale("log")
        ticks = sorted({r["connections"] for r in database["sweep"]})
        for ax in (rate, tail):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set_xlabel("connections (closed-loop clients)")
            ax.grid(True, which="major", alpha=0.3)
        rate.legend(fontsize="small")
    figure.savefig(path, dpi=100)
