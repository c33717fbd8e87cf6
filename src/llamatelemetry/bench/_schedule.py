"""When a run's requests leave.

Closed loop (``concurrency``): each of C workers sends its next request when its last one
is answered, so the load follows the server and a slow server is never overloaded. Open
loop (``rate``): requests leave on a schedule whatever the server does, the way users
arrive: Poisson arrivals at ``rate`` per second, or burstier (``burstiness`` < 1) or more
regular (> 1) ones with gamma-distributed gaps, optionally after a linear ramp-up. A
generator that cannot keep to its schedule is measured too (its lag), never hidden.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Arrivals", "arrival_times"]


@dataclass(frozen=True)
class Arrivals:
    """An open-loop schedule: ``rate`` requests per second on average, gaps drawn from a
    gamma distribution of shape ``burstiness`` (1: Poisson), the rate rising linearly from
    0 over the first ``ramp_up`` seconds; ``duration`` (seconds) ends the schedule, else
    ``requests`` do."""

    rate: float
    burstiness: float = 1.0
    ramp_up: float = 0.0
    duration: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(
                f"rate must be a positive number of requests per second, got {self.rate}"
            )
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise ValueError(f"burstiness must be > 0 (1: Poisson), got {self.burstiness}")
        if not (math.isfinite(self.ramp_up) and self.ramp_up >= 0):
            raise ValueError(f"ramp_up must be >= 0 seconds, got {self.ramp_up}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")


def _ramped(virtual: float, ramp_up: float) -> float:
    """Real time of an arrival that a constant rate would put at ``virtual`` seconds, when
    the rate instead rises linearly from 0 to its value over ``ramp_up`` seconds (the
    integral of the rate, inverted)."""
    if ramp_up <= 0:
        return virtual
    if virtual < ramp_up / 2:
        return math.sqrt(2 * ramp_up * virtual)
    return virtual + ramp_up / 2


def arrival_times(arrivals: Arrivals, requests: int | None = None) -> list[float]:
    """Seconds from the start at which each request leaves: ``requests`` of them, or as
    many as fall within ``arrivals.duration``."""
    if requests is None and arrivals.duration is None:
        raise ValueError("an open-loop schedule needs a number of requests or a duration")
    rng = random.Random(arrivals.seed)
    shape = arrivals.burstiness
    scale = 1.0 / (arrivals.rate * shape)  # mean gap 1 / rate, whatever the shape
    times: list[float] = []
    virtual = 0.0
    limit = requests if requests is not None else math.inf
    while len(times) < limit:
        virtual += rng.gammavariate(shape, scale)
        at = _ramped(virtual, arrivals.ramp_up)
        if arrivals.duration is not None and at >= arrivals.duration:
            break
        times.append(at)
    return times
