"""The server's side of a run, sampled while it runs: busy slots, requests waiting for a
slot, the context its slots hold, tokens per second, from ``/metrics`` and ``/slots``
every ``interval`` seconds. A server without those endpoints (or a router) is simply not
sampled: the run goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, cast

from ..api import AsyncLlamaCppClient

__all__ = ["ServerSample", "ServerWatch"]

PROCESSED = "llamacpp:tokens_predicted_total"
PROMPTED = "llamacpp:prompt_tokens_total"
DEFERRED = "llamacpp:requests_deferred"


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


def _context_used(slots: list[dict[str, Any]]) -> float | None:
    total = sum(int(s.get("n_ctx") or 0) for s in slots)
    if not total:
        return None
    used = 0
    for slot in slots:
        if slot.get("state") != "processing":
            continue
        decoded = sum(int(t.get("n_decoded") or 0) for t in slot.get("next_token") or [])
        if "n_prompt_tokens_processed" in slot:
            # Today's server: n_prompt_tokens grows with the decoded tokens; the prompt
            # is what came from the cache plus what was processed.
            prompt = int(slot.get("n_prompt_tokens_cache") or 0) + int(
                slot.get("n_prompt_tokens_processed") or 0
            )
        else:
            prompt = int(slot.get("n_prompt_tokens") or 0)
        used += prompt + decoded
    return used / total


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
        self.failures = 0  # scrapes that failed in the current run
        self.run_failures = 0  # ... and in the run `stop` ended

    def start(self, origin: float) -> None:
        self._origin = origin
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> list[ServerSample]:
        """Stop sampling and hand over this run's samples: every one taken while the run
        ran (none at its very start or after its end, when the server is idle)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        samples, self.samples, self._last = self.samples, [], None
        self.run_failures, self.failures = self.failures, 0
        return samples

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _loop(self) -> None:
        await self.sample(record=False)  # the counters' starting point
        while True:
            await asyncio.sleep(self._interval)
            await self.sample()

    async def sample(self, record: bool = True) -> None:
        now = time.perf_counter()
        values: dict[str, float] = {}
        slots: list[dict[str, Any]] | None = None
        try:
            values = await cast(Awaitable[dict[str, float]], self._client.metrics.values())
        except Exception:  # noqa: BLE001 - no /metrics (or a router): nothing to sample
            self.failures += 1
        try:
            slots = await cast(Awaitable[list[dict[str, Any]]], self._client.slots.list())
        except Exception:  # noqa: BLE001
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
                busy_slots=None
                if slots is None
                else sum(1 for s in slots if s.get("state") == "processing"),
                total_slots=None if slots is None else len(slots),
                deferred=values.get(DEFERRED),
                context_used=None if slots is None else _context_used(slots),
                **rates,
            )
        )
