"""Service-level objectives: which requests were good enough, how many of them a second
(goodput), and the highest load that still keeps enough of them good.

An objective bounds a client-side latency of every request: ``ttft=200ms,tpot=50ms,
e2e=2s``. A request meets the SLO when it succeeded and met every objective; a run meets
it when at least ``attainment`` of its requests did. `find_capacity` searches for the
highest open-loop rate (or concurrency) whose run still meets it: doubling until a run
fails, then bisecting between the last good and the first bad level.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._records import RequestRecord, RunResult

__all__ = ["SLO", "Attainment", "capacity_bounded", "find_capacity"]

_UNITS = {"ms": 1e-3, "s": 1.0, "us": 1e-6}
_OBJECTIVE = re.compile(r"^\s*(ttft|tpot|e2e)\s*=\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*$")


@dataclass(frozen=True)
class SLO:
    """Upper bounds, in seconds, on a request's client-side latencies."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    attainment: float = 0.9  # share of requests that must meet it for a run to

    def __post_init__(self) -> None:
        if self.ttft is None and self.tpot is None and self.e2e is None:
            raise ValueError("an SLO needs at least one objective: ttft, tpot or e2e")
        for name in ("ttft", "tpot", "e2e"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        if not 0 < self.attainment <= 1:
            raise ValueError(f"attainment must be within (0, 1], got {self.attainment}")

    @classmethod
    def parse(cls, text: str, attainment: float = 0.9) -> SLO:
        """``"ttft=200ms,tpot=50ms,e2e=2s"`` (units ms, s or us; none: seconds)."""
        bounds: dict[str, float] = {}
        for part in text.split(","):
            match = _OBJECTIVE.match(part)
            if match is None:
                raise ValueError(
                    f"{part.strip()!r} is not an objective: write ttft=200ms, tpot=50ms or e2e=2s"
                )
            name, number, unit = match.groups()
            if name in bounds:
                raise ValueError(f"{name} is given twice")
            bounds[name] = float(number) * _UNITS[unit or "s"]
        return cls(**bounds, attainment=attainment)

    @property
    def needs_stream(self) -> bool:
        """TTFT and TPOT are measured on streamed answers only."""
        return self.ttft is not None or self.tpot is not None

    def met(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        # TPOT is undefined for an answer of one token: nothing to miss.
        tpot = record.tpot if record.output_tokens >= 2 else 0.0
        for bound, value in ((self.ttft, record.ttft), (self.tpot, tpot),
                             (self.e2e, record.latency)):  # fmt: skip
            if bound is not None and (value is None or value > bound):
                return False
        return True

    def evaluate(self, result: RunResult) -> Attainment:
        met = sum(1 for r in result.records if self.met(r))
        share = met / result.requests if result.requests else 0.0
        goodput = met / result.duration if result.duration > 0 else 0.0
        return Attainment(met, result.requests, share, goodput, share >= self.attainment)

    def describe(self) -> str:
        parts = [
            f"{name}≤{value * 1000:g}ms"
            for name, value in (("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e))
            if value is not None
        ]
        return f"{', '.join(parts)} for {self.attainment:.0%} of requests"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttft_ms": None if self.ttft is None else self.ttft * 1000,
            "tpot_ms": None if self.tpot is None else self.tpot * 1000,
            "e2e_ms": None if self.e2e is None else self.e2e * 1000,
            "attainment": self.attainment,
        }


@dataclass(frozen=True)
class Attainment:
    """How one run fared against an SLO."""

    met: int  # requests that met every objective
    requests: int
    share: float
    goodput: float  # requests per second that met every objective
    ok: bool  # the run met the SLO (share >= its attainment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "met": self.met,
            "requests": self.requests,
            "share": round(self.share, 4),
            "goodput": round(self.goodput, 4),
            "ok": self.ok,
        }


def capacity_bounded(
    capacity: float | None, by: str, results: Sequence[RunResult], slo: SLO
) -> bool:
    """Whether ``capacity`` (a rate, or with ``by="concurrency"`` a concurrency) is the
    capacity rather than a lower bound: some higher level among ``results`` missed ``slo``."""
    if capacity is None:
        return False
    return any(
        ((r.rate if by == "rate" else r.concurrency) or 0) > capacity and not slo.evaluate(r).ok
        for r in results
    )


async def find_capacity(
    run: Callable[[float], Awaitable[RunResult]],
    slo: SLO,
    start: float,
    *,
    integer: bool = False,
    bisections: int = 3,
    max_doublings: int = 8,
    ceiling: float | None = None,
) -> tuple[float | None, list[RunResult]]:
    """The highest level (a rate, or with ``integer`` a concurrency) at which ``run(level)``
    meets ``slo``, and every run made to find it (in order). None when even the lowest
    level tried fails: halving from ``start`` a few times first. Doubling stops at
    ``ceiling`` (a concurrency above the requests of a run means nothing); when no level
    failed, the level returned is a lower bound, not the capacity."""
    results: list[RunResult] = []

    async def ok(level: float) -> bool:
        result = await run(level)
        results.append(result)
        return slo.evaluate(result).ok

    def step(level: float, factor: float) -> float:
        return float(max(1, round(level * factor))) if integer else level * factor

    good: float | None = None
    bad: float | None = None
    level = start
    if await ok(level):
        good = level
        for _ in range(max_doublings):
            level = step(level, 2)
            if ceiling is not None and level > ceiling:
                if good >= ceiling:
                    break
                level = ceiling
            if not await ok(level):
                bad = level
                break
            good = level
    else:
        bad = level
        for _ in range(4):
            lower = step(level, 0.5)
            if lower == level:
                break
            level = lower
            if await ok(level):
                good = level
                break
            bad = level
    if good is None or bad is None:
        return good, results
    for _ in range(bisections):
        middle = (good + bad) / 2
        if integer:
            middle = float(round(middle))
            if middle in (good, bad):
                break
        if await ok(middle):
            good = middle
        else:
            bad = middle
    return good, results
