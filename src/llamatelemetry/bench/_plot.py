"""``plot_results``: latency distributions, latency and throughput by level, and the
server's state over the runs, as one PNG (matplotlib, the ``bench`` extra; drawn without
pyplot, so no global state)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
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
    over each run; write a PNG. A figure nothing measured (no stream, a server not
    sampled) has no panel: the grid holds only what was measured."""
    target = Path(path)
    draw(results, title).savefig(target, format="png", dpi=100)
    return target


def draw(results: Sequence[RunResult], title: str = "") -> Any:
    """The figure `plot_results` writes: a panel for each figure measured."""
    if not results:
        raise ValueError("nothing to plot: no results")
    figure = _figure()
    figure.suptitle(title or "llamatelemetry bench")
    colours = [f"C{i % 10}" for i in range(len(results))]
    panels: list[Callable[[Any], None]] = []
    for metric in METRICS:
        if any(result.values(metric) for result in results):  # not measured: no panel
            panels.append(partial(_distribution, results=results, colours=colours, metric=metric))
    if any(r.summary("ttft", side) for r in results for side in ("client", "server")):
        panels.append(lambda ax: _ttft_by_level(ax, results))
    panels.append(lambda ax: _throughput_by_level(ax, results))
    for panel in _SERVER_PANELS:
        if any(
            getattr(s, name) is not None for r in results for s in r.server for name in panel[2]
        ):
            panels.append(partial(_server_series, results=results, colours=colours, panel=panel))
    rows = -(-len(panels) // 3)
    figure.set_figheight(4.4 * rows)
    axes = figure.subplots(rows, 3, squeeze=False).flat
    for ax, draw in zip(axes, panels, strict=False):
        draw(ax)
    for ax in list(axes)[len(panels) :]:
        ax.remove()  # an empty cell of the grid: nothing drawn there
    return figure


def _labels(results: Sequence[RunResult]) -> tuple[list[int], list[str]]:
    """Levels side by side: concurrencies and rates may share one sweep."""
    return list(range(len(results))), [r.level.replace("concurrency ", "c=") for r in results]


def _distribution(ax: Any, results: Sequence[RunResult], colours: list[str], metric: str) -> None:
    for result, colour in zip(results, colours, strict=False):
        values = [v * 1000.0 for v in result.values(metric)]
        if values:
            ax.hist(values, bins=min(40, max(5, len(values) // 2)), histtype="step",
                    linewidth=1.5, color=colour, label=result.level)  # fmt: skip
    ax.set_title(f"{METRIC_TITLES[metric]} (client)")
    ax.set_xlabel("ms")
    ax.set_ylabel("requests" if metric != "itl" else "gaps")
    ax.legend(fontsize="small")


def _ttft_by_level(ax: Any, results: Sequence[RunResult]) -> None:
    positions, labels = _labels(results)
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
    ax.legend(fontsize="small")


def _throughput_by_level(ax: Any, results: Sequence[RunResult]) -> None:
    positions, labels = _labels(results)
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


#: The server's sampled figures over time: title, unit, the `ServerSample` fields drawn.
_SERVER_PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Busy slots (—) and waiting requests (--)", "requests", ("busy_slots", "deferred")),
    ("Context in use by the slots", "share", ("context_used",)),
    ("Server tokens per second", "tokens/s", ("generated_per_s",)),
)


def _server_series(
    ax: Any,
    results: Sequence[RunResult],
    colours: list[str],
    panel: tuple[str, str, tuple[str, ...]],
) -> None:
    """One sampled server figure over time, the runs one after another."""
    panel_title, unit, fields = panel
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
                ax.plot(xs, ys, style, color=colour, label=result.level if style == "-" else None)
        offset += max(result.duration, max((s.t for s in result.server), default=0.0))
    ax.set_title(panel_title)
    ax.set_xlabel("seconds (runs one after another)")
    ax.set_ylabel(unit)
    if len(results) > 1:
        ax.legend(fontsize="small")
