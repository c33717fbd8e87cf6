"""Comparing a benchmark with an earlier one, with an honest estimate of the noise.

Runs are matched by level (a concurrency, or an open-loop rate). A latency's change is
the difference of the medians of the requests of each side, with a 95% bootstrap
confidence interval (the requests resampled); a throughput has one value per run, so its
interval needs repeated runs (``--repeat``) on both sides, else it is reported without
one. A change whose interval holds zero is within the noise.
"""

from __future__ import annotations

import math
import os
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._distribution_summary import percentile
from ._jsonfile import read_json, show_number

__all__ = ["Change", "compare_reports", "level_of", "load_baseline", "usable_runs"]

#: Client-side latencies compared (per-request values in the JSON report, milliseconds).
LATENCIES = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E"))
THROUGHPUTS = (("request_throughput", "req/s"), ("output_throughput", "tok/s"))
#: A run's own figures: its level and its throughputs.
RUN_FIGURES = ("rate", "concurrency", *(key for key, _ in THROUGHPUTS))
#: The largest figure a report holds (milliseconds, requests or tokens per second): a
#: larger one is a hand-edited number the statistics would overflow on.
MAX_FIGURE = 1e12
RESAMPLES = 2000
# Two-sided 95% quantiles of Student's t for small degrees of freedom (then ~normal).
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


@dataclass(frozen=True)
class Change:
    """One figure of one level, then and now."""

    level: str
    metric: str
    baseline: float
    current: float
    low: float | None  # the 95% interval of current - baseline; None: no noise estimate
    high: float | None

    @property
    def relative(self) -> float | None:
        return None if self.baseline == 0 else (self.current - self.baseline) / self.baseline

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return "no noise estimate (fewer than 2 runs on a side: use --repeat)"
        if self.low <= 0 <= self.high:
            return "within noise"
        return "higher" if self.low > 0 else "lower"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "metric": self.metric,
            "baseline": round(self.baseline, 4),
            "current": round(self.current, 4),
            "relative": None if self.relative is None else round(self.relative, 4),
            "ci95": None if self.low is None else [round(self.low, 4), round(self.high or 0, 4)],
            "verdict": self.verdict,
        }


def level_of(run: dict[str, Any]) -> str:
    """A JSON run's level, as `RunResult.level` named it (reports older than that field:
    from its rate or concurrency)."""
    if isinstance(run.get("level"), str):
        return str(run["level"])
    if run.get("rate") is not None:
        return f"{run['rate']:g} req/s"
    return f"concurrency {run['concurrency']}"


def _number(value: Any) -> bool:
    """A figure a report can hold: a finite number within ±`MAX_FIGURE` (int and float
    compare exactly, so an int too large for a float is no figure, and raises nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and abs(value) <= MAX_FIGURE


def _odd_figure(report: Any) -> str | None:
    """The first figure of a report's runs that is a number, but not one a report can
    hold (NaN, infinity, a number beyond `MAX_FIGURE`), and where it is."""
    runs = report.get("runs") if isinstance(report, dict) else None
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        if not isinstance(run, dict):
            continue
        found = [(f"runs[{i}].{key}", run.get(key)) for key in RUN_FIGURES]
        requests = run.get("per_request")
        for j, request in enumerate(requests if isinstance(requests, list) else []):
            if isinstance(request, dict):
                found += [(f"runs[{i}].per_request[{j}].{k}", request.get(k)) for k, _ in LATENCIES]
        for where, value in found:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and not _number(value):
                return (
                    f"{where} is {show_number(value)}, not a figure a report holds "
                    f"(a finite number within ±{MAX_FIGURE:,.0f})"
                )
    return None


def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A report of ``llamatelemetry bench --json`` to compare with, read from ``path``
    (UTF-8, with or without a byte order mark) and checked whole, so that nothing in it
    fails the comparison after the run: raises ``ValueError`` naming the file, and the
    run and field of a figure no report holds. Runs that cannot be compared (no level, a
    figure of another type) are left out, as `usable_runs` says; a report without any is
    refused."""
    report = read_json(Path(path))
    problem = _odd_figure(report)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    if not isinstance(report, dict) or not usable_runs(report):
        raise ValueError(f"{path}: not a report of `llamatelemetry bench --json` with runs")
    return report


def usable_runs(report: Any) -> list[dict[str, Any]]:
    """The runs of a report that can be compared: a level, throughputs and per-request
    figures of the right types (anything else in a hand-edited file is left out)."""
    runs = report.get("runs") if isinstance(report, dict) else None
    found = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, dict) or not isinstance(run.get("per_request", []), list):
            continue
        level = run.get("rate") if run.get("rate") is not None else run.get("concurrency")
        if _number(level) and all(_number(run.get(key)) for key, _ in THROUGHPUTS):
            found.append(run)
    return found


def _by_level(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    levels: dict[str, list[dict[str, Any]]] = {}
    for run in usable_runs(report):
        levels.setdefault(level_of(run), []).append(run)
    return levels


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [
        float(r[key])
        for run in runs
        for r in run.get("per_request", [])
        if isinstance(r, dict) and r.get("ok") is True and _number(r.get(key))
    ]


def _median_change_ci(
    before: list[float], after: list[float], rng: random.Random
) -> tuple[float, float]:
    diffs = sorted(
        statistics.median(rng.choices(after, k=len(after)))
        - statistics.median(rng.choices(before, k=len(before)))
        for _ in range(RESAMPLES)
    )
    return percentile(diffs, 2.5), percentile(diffs, 97.5)


def _mean_change_ci(before: list[float], after: list[float]) -> tuple[float, float] | None:
    """Welch's interval for the difference of the means; None with fewer than 2 a side."""
    if len(before) < 2 or len(after) < 2:
        return None
    va, vb = statistics.variance(after) / len(after), statistics.variance(before) / len(before)
    spread = math.sqrt(va + vb)
    if spread == 0:
        delta = statistics.fmean(after) - statistics.fmean(before)
        return delta, delta
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va**2 / (len(after) - 1) + vb**2 / (len(before) - 1))
    t = _T95.get(max(1, math.floor(df)), 1.96 if df > 30 else 2.2)
    delta = statistics.fmean(after) - statistics.fmean(before)
    return delta - t * spread, delta + t * spread


def compare_reports(
    current: dict[str, Any], baseline: dict[str, Any], seed: int = 0
) -> list[Change]:
    """The changes from ``baseline`` to ``current`` (both ``bench --json`` reports), for
    every level both have."""
    rng = random.Random(seed)
    before_levels, changes = _by_level(baseline), []
    for level, runs in _by_level(current).items():
        before = before_levels.get(level)
        if not before:
            continue
        for key, name in LATENCIES:
            old, new = _values(before, key), _values(runs, key)
            if old and new:
                low, high = _median_change_ci(old, new, rng)
                changes.append(
                    Change(level, f"{name} p50 (ms)", statistics.median(old),
                           statistics.median(new), low, high)
                )  # fmt: skip
        for key, name in THROUGHPUTS:
            old_t = [float(run[key]) for run in before]
            new_t = [float(run[key]) for run in runs]
            interval = _mean_change_ci(old_t, new_t)
            changes.append(
                Change(level, name, statistics.fmean(old_t), statistics.fmean(new_t),
                       *(interval or (None, None)))
            )  # fmt: skip
    return changes
