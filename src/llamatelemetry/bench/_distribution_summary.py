"""Distribution summaries: mean, median, p90, p99 (and min, max, std) of latencies."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "DEFAULT_PERCENTILES",
    "Summary",
    "percentile",
    "percentile_name",
    "percentiles_problem",
]

#: The percentiles a report gives of each latency unless asked for others.
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


def percentile_name(q: float) -> str:
    """How a report names the ``q``-th percentile: ``p50``, ``p99.9``."""
    return f"p{q:g}"


def percentiles_problem(qs: Sequence[float]) -> str | None:
    """What is wrong with a list of percentiles to report, or None: at least one, each
    within 0..100, none twice."""
    if not qs:
        return "give at least one percentile"
    for q in qs:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 100:
            return f"{q!r} is not a percentile within 0..100"
    if len(set(qs)) != len(qs):
        return "a percentile is given twice"
    return None


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted values, interpolated linearly between the
    two nearest ranks (numpy's default method)."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q}")
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    # min() keeps the result monotone in q despite rounding in the interpolation
    return min(ordered[low] + (ordered[high] - ordered[low]) * fraction, ordered[high])


@dataclass(frozen=True)
class Summary:
    """How a set of measurements is distributed (in the unit they were given in)."""

    count: int
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    std: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary | None:
        """The summary of ``values``; None when there are none."""
        ordered = sorted(values)
        if not ordered:
            return None
        return cls(
            count=len(ordered),
            mean=statistics.fmean(ordered),
            median=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            min=ordered[0],
            max=ordered[-1],
            std=statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
        )

    def scaled(self, factor: float) -> Summary:
        """The same distribution in another unit (``1000.0``: seconds to milliseconds)."""
        return Summary(
            count=self.count,
            **{k: v * factor for k, v in asdict(self).items() if k != "count"},
        )

    def to_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {k: v if k == "count" else round(v, digits) for k, v in asdict(self).items()}
