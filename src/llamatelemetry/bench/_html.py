"""A benchmark report as one self-contained HTML file: the runs' figures as tables, the
comparison with a baseline, the plots embedded as a PNG (when matplotlib is installed),
and the whole JSON report, so the file alone says everything the run measured."""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._compare import level_of
from ._records import METRIC_DEFINITIONS, RunResult

__all__ = ["write_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.warn { color: #a60; } img { max-width: 100%; } pre { background: #f6f6f6; padding: 1em; }
"""


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _runs_table(report: dict[str, Any]) -> str:
    rows = []
    for run in report["runs"]:
        metrics = run["metrics"]

        def get(metric: str, stat: str, metrics: dict[str, Any] = metrics) -> Any:
            found = metrics[metric]["client"]
            return None if found is None else found[stat]

        level = level_of(run)
        server = run.get("server") or {}
        busy = (server.get("busy_slots") or {}).get("mean")
        waiting = (server.get("deferred") or {}).get("mean")
        slo = run.get("slo") or {}
        gpu = run.get("gpu") or {}
        delay = (run.get("generator") or {}).get("delay_ms") or {}
        rows.append([
            level, run["completed"], run["errors"], run["request_throughput"],
            run["output_throughput"], slo.get("goodput"), get("ttft_ms", "median"),
            get("ttft_ms", "p99"), get("tpot_ms", "median"), get("tpot_ms", "p99"),
            get("e2e_ms", "median"), busy, waiting, run.get("cache_hit_ratio"),
            delay.get("p99"), gpu.get("utilization_mean"), gpu.get("memory_peak_bytes"),
            gpu.get("energy_per_output_token_j"),
        ])  # fmt: skip
    header = ["level", "ok", "errors", "req/s", "tok/s", "goodput req/s", "TTFT p50 ms",
              "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "E2E p50 ms", "busy slots",
              "waiting", "prompt cache hit", "generator delay p99 ms", "GPU util",
              "GPU memory peak (B)", "J per output token"]  # fmt: skip
    if not any(run.get("gpu") for run in report["runs"]):  # not sampled: no empty columns
        header, rows = header[:-3], [row[:-3] for row in rows]
    return _table(header, rows)


def _turns(run: dict[str, Any]) -> str:
    def stat(turn: dict[str, Any], key: str, which: str) -> Any:
        return (turn.get(key) or {}).get(which)

    rows = [
        [turn["turn"] + 1, turn["completed"], turn["requests"], stat(turn, "ttft_ms", "median"),
         stat(turn, "ttft_ms", "p99"), stat(turn, "server_ttft_ms", "median"),
         stat(turn, "prompt_tokens", "mean"), stat(turn, "cached_tokens", "mean")]
        for turn in run["by_turn"]
    ]  # fmt: skip
    return _table(["turn", "ok", "requests", "TTFT p50 ms", "TTFT p99 ms", "server TTFT p50 ms",
                   "prompt tokens (mean)", "cached tokens (mean)"], rows)  # fmt: skip


def _plot_png(results: Sequence[RunResult], title: str) -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from ._plot import plot_results

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_results(results, Path(tmp) / "plot.png", title=title)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def write_html(
    report: dict[str, Any], results: Sequence[RunResult], path: str | os.PathLike[str]
) -> Path:
    """Write ``report`` (what ``bench --json`` prints) and the plots of ``results`` as one
    HTML file with nothing to fetch."""
    title = f"llamatelemetry bench · {report.get('url', '')}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        "<p>"
        + " · ".join(
            html.escape(str(report.get(key))) for key in ("model", "started_at", "machine")
        )
        + "</p>",
    ]
    if report.get("slo"):
        parts.append(f"<p>SLO: {html.escape(json.dumps(report['slo']))}</p>")
    if report.get("capacity"):
        parts.append(f"<p><b>Capacity:</b> {html.escape(json.dumps(report['capacity']))}</p>")
    parts.append("<h2>Runs</h2>" + _runs_table(report))
    for run in report["runs"]:
        if run.get("by_turn"):
            parts.append(f"<h3>{html.escape(level_of(run))}, turn by turn</h3>" + _turns(run))
    definitions = report.get("metric_definitions") or {
        f"{metric}_ms": text for metric, text in METRIC_DEFINITIONS.items()
    }
    parts.append(
        "<dl>"
        + "".join(
            f"<dt>{html.escape(metric.removesuffix('_ms').upper())}</dt>"
            f"<dd>{html.escape(text)}</dd>"
            for metric, text in definitions.items()
        )
        + "</dl>"
    )
    warnings = [run["cache_warning"] for run in report["runs"] if run.get("cache_warning")]
    warnings += [
        f"{level_of(run)}: {run['generator'][kind]}"
        for run in report["runs"]
        for kind in ("delay_warning", "send_warning")
        if (run.get("generator") or {}).get(kind)
    ]
    parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in warnings]
    comparison = report.get("comparison")
    if comparison:
        rows = [
            [c["level"], c["metric"], c["baseline"], c["current"],
             None if c["relative"] is None else f"{c['relative']:+.1%}",
             None if c["ci95"] is None else f"{c['ci95'][0]:+.2f} .. {c['ci95'][1]:+.2f}",
             c["verdict"]]
            for c in comparison["changes"]
        ]  # fmt: skip
        parts.append(f"<h2>Compared with {html.escape(comparison['baseline'])}</h2>")
        parts.append(
            _table(["level", "figure", "before", "now", "change", "95% interval", ""], rows)
        )
    png = _plot_png(results, title) if results else None
    if png is not None:
        parts.append(f"<h2>Plots</h2><img alt='plots' src='data:image/png;base64,{png}'>")
    # The whole report, for scripts: a download, and a fold closed until asked for.
    text = json.dumps(report, indent=2)
    encoded = base64.b64encode(text.encode()).decode("ascii")
    parts.append(
        "<h2>The JSON report</h2><p><a download='bench.json' "
        f"href='data:application/json;base64,{encoded}'>Download bench.json</a> (what "
        "<code>bench --json</code> prints)</p><details><summary>Show it here</summary><pre>"
    )
    parts.append(html.escape(text))
    parts.append("</pre></details></body></html>")
    target = Path(path)
    target.write_text("".join(parts), encoding="utf-8")
    return target
