"""The server's side of a run, sampled while it runs: busy slots, requests waiting for a
slot, the context its slots hold, tokens per second, from ``/metrics`` and ``/slots``
every ``interval`` seconds. An endpoint the server has switched off (llama-server answers
``/metrics`` with 501 unless started with ``--metrics``; a router, or another server, 404)
is asked once and then no more, and costs no sample: the run goes on with what the other
endpoint says, or unsampled. A sampling round where an endpoint answered something that
could not be read is one lost sample, counted in `ServerWatch.failures`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, cast

from ..api import APIStatusError, AsyncLlamaCppClient

__all__ = ["ServerSample", "ServerWatch"]

log = logging.getLogger(__name__)

PROCESSED = "llamacpp:tokens_predicted_total"
PROMPTED = "llamacpp:prompt_tokens_total"
DEFERRED = "llamacpp:requests_deferred"
#: The statuses that say an endpoint is switched off (501: a server option not given,
#: 404: no such endpoint here), not that one answer of it went wrong.
SWITCHED_OFF = frozenset({404, 501})


@dataclass(frozen=True)
class ServerSample:
    """One look at the server, ``t`` seconds after the run began."""

    t: float
    busy_slots: int | None = None
    total_slots: int | None = None
    deferred: float | None = None  # requests waiting for a slot
    context_used: float | None = None  # share of the slots' context their tokens fill
    generated_per_s: float | None = None  # since the previous sample
    prompt_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


#: The most a slot's count (its context, tokens) can be: llama.cpp keeps them in an int32.
MAX_COUNT = 2**31 - 1


def _count(slot: dict[str, Any], name: str) -> int:
    """A slot's count: absent (0), or a whole number llama.cpp could hold; anything else
    raises ``ValueError`` (and the sample is not taken)."""
    value = slot.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"a slot's {name} is {value!r:.40}, not a count")
    return value


def _decoded(slot: dict[str, Any]) -> int:
    """The tokens a slot decoded so far: ``next_token`` is a list of objects on today's
    server, one object on older (or compatible) ones."""
    next_token = slot.get("next_token")
    if next_token is None:
        return 0
    entries = [next_token] if isinstance(next_token, dict) else next_token
    if not isinstance(entries, list) or not all(isinstance(t, dict) for t in entries):
        raise ValueError(f"a slot's next_token is {next_token!r:.40}, not an object or a list")
    return sum(_count(t, "n_decoded") for t in entries)


def _context_used(slots: list[dict[str, Any]]) -> float | None:
    total = sum(_count(s, "n_ctx") for s in slots)
    if not total:
        return None
    used = 0
    for slot in slots:
        if slot.get("state") != "processing":
            continue
        decoded = _decoded(slot)
        if "n_prompt_tokens_processed" in slot:
            # Today's server: n_prompt_tokens grows with the decoded tokens; the prompt
            # is what came from the cache plus what was processed.
            prompt = _count(slot, "n_prompt_tokens_cache") + _count(
                slot, "n_prompt_tokens_processed"
            )
        else:
            prompt = _count(slot, "n_prompt_tokens")
        used += prompt + decoded
    return used / total


@dataclass(frozen=True)
class _Slots:
    """What one answer of ``/slots`` says."""

    busy: int
    total: int
    context_used: float | None

    @classmethod
    def of(cls, slots: Any) -> _Slots:
        """Raises ``ValueError`` (or ``TypeError``) for an answer not shaped as slots."""
        if not isinstance(slots, list) or not all(isinstance(s, dict) for s in slots):
            raise ValueError("/slots did not answer a list of slots")
        busy = sum(1 for s in slots if s.get("state") == "processing")
        return cls(busy, len(slots), _context_used(slots))


def _figures(values: Any) -> dict[str, float]:
    """The counters a sample reads, each a finite number >= 0; ``ValueError`` else."""
    if not isinstance(values, dict):
        raise ValueError("/metrics did not parse")
    figures: dict[str, float] = {}
    for name in (PROCESSED, PROMPTED, DEFERRED):
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} is {value!r:.40}, not a number")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} is {value!r}, not a count")
        figures[name] = float(value)
    return figures


class ServerWatch:
    """Samples one server every ``interval`` seconds from `start` until `stop`, through a
    client of its own: the run's connections stay the run's."""

    def __init__(self, url: str, api_key: str | None = None, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self._client = AsyncLlamaCppClient(
            url, api_key, max_retries=0, timeout=max(interval, 1.0), max_connections=2
        )
        self._interval = interval
        self.samples: list[ServerSample] = []
        self._task: asyncio.Task[None] | None = None
        self._origin = 0.0
        self._last: tuple[float, dict[str, float]] | None = None
        self.failures = 0  # sampling rounds that failed in the current run
        self.run_failures = 0  # ... and in the run `stop` ended
        self.switched_off: set[str] = set()  # endpoints the server said it does not serve

    def start(self, origin: float) -> None:
        self._origin = origin
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> list[ServerSample]:
        """Stop sampling and hand over this run's samples: every one taken while the run
        ran (none at its very start or after its end, when the server is idle). Never
        raises for what the server answered: a sample that failed is counted instead."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - the run keeps its report whatever happened
                log.debug("sampling %s ended in an error", self._client.base_url, exc_info=True)
                self.failures += 1
        samples, self.samples, self._last = self.samples, [], None
        self.run_failures, self.failures = self.failures, 0
        return samples

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _loop(self) -> None:
        await self._sample_counted(record=False)  # the counters' starting point
        while True:
            await asyncio.sleep(self._interval)
            await self._sample_counted()

    async def _sample_counted(self, record: bool = True) -> None:
        try:
            await self.sample(record)
        except Exception:  # noqa: BLE001 - a sample lost, not the run
            log.debug("a sample of %s failed", self._client.base_url, exc_info=True)
            self.failures += 1

    def _switched_off(self, endpoint: str, exc: Exception) -> bool:
        """Whether ``exc`` says the server does not serve ``endpoint`` at all: then it is
        not asked again (and its answer is no failure)."""
        if isinstance(exc, APIStatusError) and exc.status_code in SWITCHED_OFF:
            log.debug("%s%s is switched off (%s): not sampled", self._client.base_url,
                      endpoint, exc.status_code)  # fmt: skip
            self.switched_off.add(endpoint)
            return True
        return False

    async def _metrics(self) -> tuple[dict[str, float], bool]:
        """The counters a sample reads, and whether reading them failed: empty when
        ``/metrics`` is switched off (no failure) or says something that is not those
        counters (a failure)."""
        if "/metrics" in self.switched_off:
            return {}, False
        try:
            return _figures(await cast(Awaitable[Any], self._client.metrics.values())), False
        except Exception as exc:  # noqa: BLE001 - no /metrics (or a router), or an odd one
            if self._switched_off("/metrics", exc):
                return {}, False
            log.debug("/metrics of %s could not be read", self._client.base_url, exc_info=True)
            return {}, True

    async def _slots(self) -> tuple[_Slots | None, bool]:
        """What ``/slots`` says, and whether reading it failed: None when it is switched
        off (no failure) or of a shape not read here (a failure)."""
        if "/slots" in self.switched_off:
            return None, False
        try:
            return _Slots.of(await cast(Awaitable[Any], self._client.slots.list())), False
        except Exception as exc:  # noqa: BLE001 - no /slots, or slots of a shape not known here
            if self._switched_off("/slots", exc):
                return None, False
            log.debug("/slots of %s could not be read", self._client.base_url, exc_info=True)
            return None, True

    async def sample(self, record: bool = True) -> None:
        """One look at the server. A part that fails (the server's answer not of a shape
        read here, or no answer) is left out of the sample, and the round counted once in
        `failures` however many parts failed. An endpoint switched off is left out too,
        not asked again, and no failure."""
        now = time.perf_counter()
        values, metrics_failed = await self._metrics()
        slots, slots_failed = await self._slots()
        if metrics_failed or slots_failed:
            self.failures += 1
        if not values and slots is None:
            return
        rates: dict[str, float | None] = {"generated_per_s": None, "prompt_per_s": None}
        if self._last is not None and values:
            then, before = self._last
            elapsed = now - then
            if elapsed > 0:
                for key, name in (("generated_per_s", PROCESSED), ("prompt_per_s", PROMPTED)):
                    if name in values and name in before:
                        rates[key] = max(values[name] - before[name], 0.0) / elapsed
        if values:
            self._last = (now, values)
        if not record:
            return
        self.samples.append(
            ServerSample(
                t=now - self._origin,
                busy_slots=None if slots is None else slots.busy,
                total_slots=None if slots is None else slots.total,
                deferred=values.get(DEFERRED),
                context_used=None if slots is None else slots.context_used,
                **rates,
            )
        )
