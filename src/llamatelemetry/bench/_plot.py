"""``plot_results``: latency distributions and latency/throughput against concurrency, as
one PNG (matplotlib, the ``bench`` extra; drawn without pyplot, so no global state)."""

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
    figure = Figure(figsize=(15, 9), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_results(
    results: Sequence[RunResult], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw the client-side latency distributions of each run (one colour per concurrency
    level) and the TTFT percentiles and throughput against concurrency; write a PNG."""
    if not results:
        raise ValueError("nothing to plot: no results")
    figure = _figure()
    figure.suptitle(title or "llamatelemetry bench")
    axes = figure.subplots(2, 3)
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
                    label=f"concurrency {result.concurrency}",
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

    levels = [r.concurrency for r in results]
    ax = axes.flat[4]
    for side, style in (("client", "-"), ("server", "--")):
        for stat, marker, colour in (("median", "o", "C0"), ("p90", "s", "C1"), ("p99", "^", "C3")):
            points = [
                (r.concurrency, getattr(s, stat))
                for r in results
                if (s := r.summary("ttft", side)) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, marker=marker, color=colour, label=f"{side} {stat}")
    ax.set_title("TTFT vs concurrency")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("ms")
    ax.set_xticks(levels)
    if ax.lines:
        ax.legend(fontsize="small")

    ax = axes.flat[5]
    ax.plot(levels, [r.output_throughput for r in results], "-o", label="output tokens/s")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(levels)
    twin = ax.twinx()
    twin.plot(
        levels, [r.request_throughput for r in results], "--s", color="C1", label="requests/s"
    )
    twin.set_ylabel("requests/s")
    ax.set_title("Throughput vs concurrency")
    ax.legend(handles=[*ax.lines, *twin.lines], fontsize="small", loc="upper left")

    target = Path(path)
    figure.savefig(target, format="png", dpi=100)
    return target
