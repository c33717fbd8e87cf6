"""``plot_results``: latency distributions, latency and throughput by level, and the
server's state over the runs, as one PNG (matplotlib, the ``bench`` extra; drawn without
pyplot, so no global state)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._records import METRIC_TITLES, METRICS, RunResult

__all__ = ["plot_results"]


def _figure() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install 'llamatelemetry[bench]'"
        ) from None
    figure = Figure(figsize=(15, 13), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_results(
    results: Sequence[RunResult], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw the client-side latency distributions of each run (one colour per level), the
    TTFT percentiles and throughput against the level (concurrency or rate), and the
    server's sampled busy slots, waiting requests, context in use and tokens per second
    over each run; write a PNG."""
    if not results:
        raise ValueError("nothing to plot: no results")
    figure = _figure()
    figure.suptitle(title or "llamatelemetry bench")
    axes = figure.subplots(3, 3)
    colours = [f"C{i % 10}" for i in range(len(results))]

    for ax, metric in zip(axes.flat[:4], METRICS, strict=False):
        drawn = False
        for result, colour in zip(results, colours, strict=False):
            values = [v * 1000.0 for v in result.values(metric)]
            if values:
                ax.hist(
                    values,
                    bins=min(40, max(5, len(values) // 2)),
                    histtype="step",
                    linewidth=1.5,
                    color=colour,
                    label=result.level,
                )
                drawn = True
        ax.set_title(f"{METRIC_TITLES[metric]} (client)")
        ax.set_xlabel("ms")
        ax.set_ylabel("requests" if metric != "itl" else "gaps")
        if drawn:
            ax.legend(fontsize="small")
        else:
            streamed = any(r.stream for r in results)
            ax.text(
                0.5,
                0.5,
                "no data" if streamed or metric == "e2e" else "not measured\n(streaming only)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )

    # Levels side by side: concurrencies and rates may share one sweep.
    positions = list(range(len(results)))
    labels = [r.level.replace("concurrency ", "c=") for r in results]
    ax = axes.flat[4]
    for side, style in (("client", "-"), ("server", "--")):
        for stat, marker, colour in (("median", "o", "C0"), ("p90", "s", "C1"), ("p99", "^", "C3")):
            points = [
                (i, getattr(s, stat))
                for i, r in enumerate(results)
                if (s := r.summary("ttft", side)) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, marker=marker, color=colour, label=f"{side} {stat}")
    ax.set_title("TTFT by level")
    ax.set_ylabel("ms")
    ax.set_xticks(positions, labels)
    if ax.lines:
        ax.legend(fontsize="small")

    ax = axes.flat[5]
    ax.plot(positions, [r.output_throughput for r in results], "-o", label="output tokens/s")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(positions, labels)
    twin = ax.twinx()
    twin.plot(
        positions, [r.request_throughput for r in results], "--s", color="C1", label="requests/s"
    )
    twin.set_ylabel("requests/s")
    ax.set_title("Throughput by level")
    ax.legend(handles=[*ax.lines, *twin.lines], fontsize="small", loc="upper left")

    _server_series(axes.flat[6:], results, colours)
    target = Path(path)
    figure.savefig(target, format="png", dpi=100)
    return target


def _server_series(axes: Any, results: Sequence[RunResult], colours: list[str]) -> None:
    """The server's sampled figures over time, the runs one after another."""
    panels = (
        ("Busy slots (—) and waiting requests (--)", "requests", ("busy_slots", "deferred")),
        ("Context in use by the slots", "share", ("context_used",)),
        ("Server tokens per second", "tokens/s", ("generated_per_s",)),
    )
    for ax, (panel_title, unit, fields) in zip(axes, panels, strict=True):
        offset = 0.0
        for result, colour in zip(results, colours, strict=False):
            for name, style in zip(fields, ("-", "--"), strict=False):
                points = [
                    (offset + sample.t, value)
                    for sample in result.server
                    if (value := getattr(sample, name)) is not None
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        xs, ys, style, color=colour, label=result.level if style == "-" else None
                    )
            offset += max(result.duration, max((s.t for s in result.server), default=0.0))
        ax.set_title(panel_title)
        ax.set_xlabel("seconds (runs one after another)")
        ax.set_ylabel(unit)
        if not ax.lines:
            ax.text(0.5, 0.5, "not sampled", ha="center", va="center", transform=ax.transAxes)
        elif len(results) > 1:
            ax.legend(fontsize="small")
