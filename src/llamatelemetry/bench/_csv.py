"""``bench --csv FILE``: the report as two CSV tables for a spreadsheet or pandas, one row
per request (``FILE``) and one per level (``FILE`` with ``.levels`` before its suffix),
written from the JSON report, so they say what it says."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ._compare import level_of
from ._distribution_summary import DEFAULT_PERCENTILES, percentile_name
from ._records import METRICS

__all__ = ["levels_path", "write_csv"]

_REQUEST_FIELDS = (
    "index", "ok", "start_ms", "lag_ms", "send_delay_ms", "session", "turn", "e2e_ms",
    "ttft_ms", "tpot_ms", "output_tokens", "prompt_tokens", "cached_tokens", "server_ttft_ms",
    "server_tpot_ms", "server_e2e_ms", "draft_tokens", "draft_accepted", "response_id",
    "error_type", "error",
)  # fmt: skip
_LEVEL_FIELDS = (
    "requests", "completed", "errors", "unfinished", "duration_s", "request_throughput",
    "output_throughput", "input_tokens", "output_tokens", "cache_hit_ratio",
    "draft_acceptance",
)  # fmt: skip
_GPU = ("utilization_mean", "memory_peak_bytes", "power_mean_w", "energy_per_output_token_j")


def levels_path(path: str | os.PathLike[str]) -> Path:
    """Where the per-level table goes beside ``path``: ``bench.csv`` → ``bench.levels.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.levels{path.suffix or '.csv'}")


def write_csv(report: dict[str, Any], path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the per-request and per-level tables of ``report`` (what ``bench --json``
    prints, with its ``per_request`` rows); the two paths."""
    requests, levels = Path(path), levels_path(path)
    with requests.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(("level", "repeat", *_REQUEST_FIELDS))
        for run, repeat in _numbered(report["runs"]):
            for row in run.get("per_request") or ():
                cells = (_cell(row.get(field)) for field in _REQUEST_FIELDS)
                writer.writerow((level_of(run), repeat, *cells))
    asked = (report.get("config") or {}).get("percentiles") or DEFAULT_PERCENTILES
    stats = ["mean", *("median" if q == 50 else percentile_name(q) for q in asked)]
    metric_columns = [
        (metric, side, stat)
        for metric in METRICS
        for side in ("client", "server")
        for stat in stats
    ]
    with levels.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow((
            "level", "repeat", *_LEVEL_FIELDS,
            *(f"{metric}_{side}_{stat}_ms" for metric, side, stat in metric_columns),
            *(f"gpu_{name}" for name in _GPU),
        ))  # fmt: skip
        for run, repeat in _numbered(report["runs"]):
            metrics = run.get("metrics") or {}
            gpu = run.get("gpu") or {}
            writer.writerow((
                level_of(run), repeat, *(_cell(run.get(f)) for f in _LEVEL_FIELDS),
                *(_cell(_stat((metrics.get(f"{metric}_ms") or {}).get(side), stat))
                  for metric, side, stat in metric_columns),
                *(_cell(gpu.get(name)) for name in _GPU),
            ))  # fmt: skip
    return requests, levels


def _stat(summary: dict[str, Any] | None, stat: str) -> Any:
    """A latency's figure: the mean, the median, or a percentile asked for."""
    if summary is None:
        return None
    if stat in summary:
        return summary[stat]
    return (summary.get("percentiles") or {}).get(stat)


def _numbered(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each run with its repeat's number at its level (0, 1, ... for --repeat)."""
    seen: dict[str, int] = {}
    numbered = []
    for run in runs:
        level = level_of(run)
        numbered.append((run, seen.get(level, 0)))
        seen[level] = seen.get(level, 0) + 1
    return numbered


def _cell(value: Any) -> Any:
    """A CSV cell: absent figures empty, booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
