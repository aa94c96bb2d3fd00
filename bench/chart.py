"""The suite's chart (PNG): the search's req/s and p99 against connections, Waymark beside its
ceilings; and Waymark ÷ the FastAPI peer doing the same work, for the search and for buy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Each line of the chart: a target of the sweep's search, its label and its style.
LINES: dict[str, tuple[str, dict[str, Any]]] = {
    "waymark": ("Waymark (server.py)", {"color": "tab:blue", "linewidth": 2.5, "marker": "o"}),
    "peer": ("FastAPI peer, database each call", {"color": "tab:orange", "marker": "s"}),
    "peer-snapshot": (
        "FastAPI peer, same 1 s snapshot",
        {"color": "tab:red", "marker": "D", "linewidth": 2},
    ),
    "echo": ("TLS echo ceiling", {"color": "tab:green", "marker": "^", "linestyle": "--"}),
    "store": ("direct Store ceiling", {"color": "tab:gray", "marker": "v", "linestyle": ":"}),
}
OP = "search_peak"
# The ratio panel: Waymark ÷ the peer doing the same work, per operation.
RATIO_LINES: dict[str, tuple[str, str]] = {
    "search_peak": ("search_walks ÷ FastAPI, same snapshot", "tab:red"),
    "buy": ("buy ÷ FastAPI, same transaction", "tab:purple"),
}


def draw(result: dict[str, Any], path: Path) -> None:
    """Write the chart of the search sweep, one column per database, to path."""
    databases = result["databases"]
    figure = Figure(figsize=(6 * len(databases), 12), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, len(databases), squeeze=False)
    meta = result["meta"]
    figure.suptitle(
        f"Waymark search_walks (area peak), and buy beside its peer: {meta['seconds']:g} s"
        " per stage,"
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
        draw_ratios(axes[2][column], database.get("fair_peer", []), ticks)
    figure.savefig(path, dpi=100)


def draw_ratios(ax: Any, fair: list[dict[str, Any]], ticks: list[int]) -> None:
    """Waymark ÷ the peer doing the same work: req/s (solid) and p99 (dashed), each point
    labelled with both p99s."""
    for op, (label, color) in RATIO_LINES.items():
        rows = sorted((f for f in fair if f["op"] == op), key=lambda f: f["connections"])
        if not rows:
            continue
        connections = [f["connections"] for f in rows]
        ax.plot(
            connections,
            [f["per_s"] for f in rows],
            label=f"{label}: req/s",
            color=color,
            marker="o",
            linewidth=2,
        )
        ax.plot(
            connections,
            [f["p99"] for f in rows],
            label=f"{label}: p99",
            color=color,
            marker="x",
            linestyle="--",
        )
        for f in rows:
            if f["per_s"] and f["waymark_p99_ms"] and f["peer_p99_ms"]:
                ax.annotate(
                    f"p99 {f['waymark_p99_ms']:.3g} vs {f['peer_p99_ms']:.3g} ms",
                    (f["connections"], f["per_s"]),
                    textcoords="offset points",
                    xytext=(4, 6 if op == OP else -12),
                    fontsize="x-small",
                    color=color,
                )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title("Waymark ÷ FastAPI doing the same work", fontsize="medium")
    ax.set_ylabel("ratio, log (req/s above 1, p99 below 1: Waymark better)")
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("connections (closed-loop clients)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="x-small")
