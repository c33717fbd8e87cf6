"""When a run's requests leave.

Closed loop (``concurrency``): each of C workers sends its next request when its last one
is answered, so the load follows the server and a slow server is never overloaded. Open
loop (``rate``): requests leave on a schedule whatever the server does, the way users
arrive: Poisson arrivals at ``rate`` per second, or burstier (``burstiness`` < 1) or more
regular (> 1) ones with gamma-distributed gaps, optionally after a linear ramp-up. A
generator that cannot keep to its schedule is measured too (its lag), never hidden.

The shape is bounded by what Python's gamma sampler represents: below `MIN_BURSTINESS` its
draws underflow to gaps of exactly 0 s for a share of the arrivals that is no longer
negligible (a gamma distribution has no such atom), and above `MAX_BURSTINESS` the gaps
are constant to within 0.1% anyway. A schedule holds at most `MAX_ARRIVALS` requests, so
that planning one always ends, and soon.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = [
    "DURATION_GRACE",
    "MAX_ARRIVALS",
    "MAX_BURSTINESS",
    "MIN_BURSTINESS",
    "Arrivals",
    "arrival_times",
]

#: The lowest gamma shape accepted. The sampler draws x = p ** (1 / shape) for most of its
#: values (p uniform below 1), which underflows to exactly 0.0 when p < 5e-324 ** shape:
#: for a share of about exp(-744 * shape) of the gaps. At 0.02 that is 3e-7 (one gap in
#: three million collapses to 0), at 0.01 already 6e-4 and at 0.001 half of them.
MIN_BURSTINESS = 0.02
#: The highest: the gaps' coefficient of variation is 1 / sqrt(shape), 0.1% here.
MAX_BURSTINESS = 1e6
#: The most requests one schedule may hold (and, for a duration, be expected to hold).
MAX_ARRIVALS = 1_000_000
#: Seconds the requests still in flight at the end of a duration may take to finish
#: before the run stops waiting for them (k6's ``gracefulStop`` is the same idea).
DURATION_GRACE = 30.0


@dataclass(frozen=True)
class Arrivals:
    """An open-loop schedule: ``rate`` requests per second on average, gaps drawn from a
    gamma distribution of shape ``burstiness`` (1: Poisson; `MIN_BURSTINESS` to
    `MAX_BURSTINESS`), the rate rising linearly from 0 over the first ``ramp_up`` seconds;
    ``duration`` (seconds) ends the schedule, else ``requests`` do. With a duration, the
    run stops waiting ``grace`` seconds after it: requests still unanswered then are
    counted unfinished."""

    rate: float
    burstiness: float = 1.0
    ramp_up: float = 0.0
    duration: float | None = None
    seed: int | None = None
    grace: float = DURATION_GRACE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(
                f"rate must be a positive number of requests per second, got {self.rate}"
            )
        problem = burstiness_problem(self.burstiness)
        if problem is not None:
            raise ValueError(f"burstiness {self.burstiness:g}: {problem}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"rate {self.rate:g} requests per second is too low: the gaps between "
                f"requests (gamma of shape {self.burstiness:g}, scale 1 / (rate × "
                "burstiness)) would be longer than any number of seconds a float holds"
            )
        if not (math.isfinite(self.ramp_up) and self.ramp_up >= 0):
            raise ValueError(f"ramp_up must be >= 0 seconds, got {self.ramp_up}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")
        if self.duration is not None and self.expected(self.duration) > MAX_ARRIVALS:
            raise ValueError(
                f"{self.rate:g} requests per second for {self.duration:g} s is about "
                f"{self.expected(self.duration):.3g} requests; a schedule holds at most "
                f"{MAX_ARRIVALS:,}"
            )
        if not (math.isfinite(self.grace) and self.grace >= 0):
            raise ValueError(f"grace must be >= 0 seconds, got {self.grace}")

    @property
    def scale(self) -> float:
        """The scale of the gaps' gamma distribution: their mean is 1 / ``rate`` whatever
        the shape. Infinite (or, rounded, a division by zero) for a rate near 0."""
        product = self.rate * self.burstiness
        return 1.0 / product if product > 0 else math.inf

    def expected(self, seconds: float) -> float:
        """How many requests the schedule sends in its first ``seconds`` on average."""
        if seconds <= 0:
            return 0.0
        if seconds <= self.ramp_up:  # the rate rises linearly: its integral
            return self.rate * seconds * seconds / (2 * self.ramp_up)
        return self.rate * (seconds - self.ramp_up / 2)


def burstiness_problem(shape: float) -> str | None:
    """Why a gamma shape cannot be a schedule's burstiness; None when it can."""
    if not math.isfinite(shape) or shape <= 0:
        return "it must be a number > 0 (1: Poisson, below 1: burstier)"
    if shape < MIN_BURSTINESS:
        return (
            f"below {MIN_BURSTINESS:g}, the gamma sampler draws gaps of exactly 0 s for a "
            f"share of the arrivals (about {math.exp(-744.4 * shape):.2g} of them here) and "
            "the schedule no longer follows the asked-for distribution; "
            f"{MIN_BURSTINESS:g} is already very bursty (gaps' coefficient of variation "
            f"{1 / math.sqrt(MIN_BURSTINESS):.1f})"
        )
    if shape > MAX_BURSTINESS:
        return f"above {MAX_BURSTINESS:g}, the gaps are constant to within 0.1% anyway"
    return None


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
    many as fall within ``arrivals.duration``. Every one is finite: a rate so low that a
    time goes past the largest float raises ``ValueError``."""
    if requests is None and arrivals.duration is None:
        raise ValueError("an open-loop schedule needs a number of requests or a duration")
    if requests is not None and requests > MAX_ARRIVALS:
        raise ValueError(f"a schedule holds at most {MAX_ARRIVALS:,} requests, not {requests:,}")
    rng = random.Random(arrivals.seed)
    shape, scale = arrivals.burstiness, arrivals.scale  # mean gap 1 / rate
    times: list[float] = []
    virtual = 0.0
    limit = requests if requests is not None else math.inf
    while len(times) < limit:
        virtual += rng.gammavariate(shape, scale)
        at = _ramped(virtual, arrivals.ramp_up)
        if arrivals.duration is not None and at >= arrivals.duration:
            break
        if not math.isfinite(at):  # a run would wait for it forever
            raise ValueError(
                f"request {len(times) + 1} of the schedule would leave after {at} s, not a "
                f"finite time: rate {arrivals.rate:g} requests per second is too low to "
                f"schedule {requests} requests"
            )
        if len(times) == MAX_ARRIVALS:  # a bursty draw far above its expected count
            raise ValueError(
                f"the schedule drew more than {MAX_ARRIVALS:,} requests within "
                f"{arrivals.duration:g} s; a schedule holds at most that"
            )
        times.append(at)
    return times
