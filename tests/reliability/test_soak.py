"""Soak against the real tiny-model server: thousands of calls and hundreds of streams (some
abandoned half-way without ``close()``) through the instrumented clients.

After a warm-up, the process must end where it started: no more open file descriptors,
no more threads, Python heap and RSS within a small bound, every span started also ended
(finished spans == calls + streams), and every server slot idle again.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import weakref
from collections import Counter
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient, InstrumentedLlamaCppClient

from ._support import FIGURES, MESSAGES, fd_count, rss_bytes, tally

pytestmark = pytest.mark.usefixtures("no_debug_logs")

CALLS = 5_000
STREAMS = 500  # one after every 10th call; every 4th of them abandoned after 2 chunks
ASYNC_CALLS = 1_000
ASYNC_STREAMS = 100
CONCURRENCY = 16

# Bounds on growth after the warm-up. A leak of one object per call would add >= 5,000
# blocks; one socket per stream, hundreds of descriptors.
MAX_BLOCK_GROWTH = 3_000
MAX_RSS_GROWTH = 24 * 2**20


class SpanCounter(SpanProcessor):
    """Counts spans as they start and end (keeping none: the soak must not hoard them)."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self.outcomes: Counter[str] = Counter()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1
        attributes = span.attributes or {}
        if "error.type" in attributes:
            self.outcomes[f"error:{attributes['error.type']}"] += 1
        elif attributes.get("llama_cpp.stream.closed_early"):
            self.outcomes["closed_early"] += 1
        elif attributes.get("gen_ai.request.stream"):
            self.outcomes["stream_complete"] += 1
        else:
            self.outcomes["call"] += 1


def snapshot() -> dict[str, int]:
    gc.collect()
    return {
        "fds": fd_count(),
        "threads": threading.active_count(),
        "blocks": sys.getallocatedblocks(),
        "rss": rss_bytes(),
    }


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


def check_growth(delta: dict[str, int]) -> None:
    assert delta["fds"] <= 0, delta
    assert delta["threads"] <= 0, delta
    assert delta["blocks"] < MAX_BLOCK_GROWTH, delta
    assert delta["rss"] < MAX_RSS_GROWTH, delta


def duration_count(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.operation.duration":
                    total += sum(point.count for point in metric.data.data_points)
    return total


def wait_slots_idle(client: Any, seconds: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        slots = client.slots.list()
        if all(s["state"] == "idle" for s in slots) or time.monotonic() > deadline:
            return slots
        time.sleep(0.02)


def test_sync_soak_5000_calls_500_streams(chat_server: ServerManager) -> None:
    spans = SpanCounter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(spans)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    counts: Counter[str] = Counter()
    started = time.monotonic()

    with InstrumentedLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        max_retries=0,
    ) as client:

        def call() -> None:
            reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
            assert reply.usage.completion_tokens == 1
            counts["calls"] += 1

        def stream(n: int) -> None:
            counts["streams"] += 1
            s = client.chat.completions.create(messages=MESSAGES, max_tokens=8, stream=True)
            if n % 4 == 3:  # abandoned half-way: no close(), the reference just dropped
                for i, _ in enumerate(s):
                    if i == 1:
                        break
                ended = spans.ended
                ref = weakref.ref(s)
                del s
                assert ref() is None  # collected at once: no reference cycle keeps it
                assert spans.ended == ended + 1  # and its span ended with it
                counts["abandoned"] += 1
            elif n % 4 == 2:
                with s:
                    next(s)  # the with block closes it early
                counts["closed_early"] += 1
            else:
                chunks = list(s)
                assert chunks[-1].usage.completion_tokens == 8
                counts["exhausted"] += 1

        for n in range(300):  # warm-up: pools, caches, lazily built objects
            call()
            if n % 10 == 9:
                stream(n // 10)
        before = snapshot()
        counts.clear()
        spans.outcomes.clear()
        span_base = spans.ended
        for n in range(CALLS):
            call()
            if n % 10 == 9:
                stream(n // 10)
        after = snapshot()
        soak_spans = spans.ended - span_base
        outcomes = Counter(spans.outcomes)
        slots = wait_slots_idle(client)

    meter_provider.shutdown()
    tracer_provider.shutdown()
    elapsed = time.monotonic() - started
    delta = growth(before, after)
    assert counts["calls"] == CALLS and counts["streams"] == STREAMS
    assert counts["abandoned"] == STREAMS // 4
    assert all(s["state"] == "idle" for s in slots), slots
    assert spans.started == spans.ended  # every span ended
    assert soak_spans == CALLS + STREAMS
    assert outcomes["closed_early"] == counts["abandoned"] + counts["closed_early"]
    assert outcomes["stream_complete"] == counts["exhausted"]
    assert outcomes["call"] == CALLS
    assert not [k for k in spans.outcomes if k.startswith("error:")], spans.outcomes
    assert duration_count(reader) == spans.ended  # one metric point per span, too
    check_growth(delta)
    tally(
        requests=spans.ended,
        soak_calls=CALLS,
        soak_streams=STREAMS,
        soak_abandoned_streams=counts["abandoned"],
    )
    FIGURES["sync soak"] = (
        f"{CALLS} calls + {STREAMS} streams ({counts['abandoned']} abandoned, "
        f"{counts['closed_early']} closed early) in {elapsed:.1f}s; spans "
        f"started {spans.started} / ended {spans.ended}; growth after warm-up:"
        f" fds {delta['fds']:+d}, threads {delta['threads']:+d}, Python "
        f"blocks {delta['blocks']:+d}, RSS {delta['rss'] / 2**20:+.1f} MiB"
    )


async def test_async_soak_1000_calls_concurrency_16(chat_server: ServerManager) -> None:
    spans = SpanCounter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(spans)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    counts: Counter[str] = Counter()
    started = time.monotonic()

    async with InstrumentedAsyncLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        max_retries=0,
    ) as client:

        async def call() -> None:
            reply = await client.chat.completions.create(messages=MESSAGES, max_tokens=1)
            assert reply.usage.completion_tokens == 1
            counts["calls"] += 1

        async def stream(n: int) -> None:
            counts["streams"] += 1
            s = await client.chat.completions.create(messages=MESSAGES, max_tokens=8, stream=True)
            if n % 4 == 3:  # abandoned: dropped mid-way without aclose()
                i = 0
                async for _ in s:
                    i += 1
                    if i == 2:
                        break
                ended = spans.ended
                ref = weakref.ref(s)
                del s  # no await in between: no other task can end a span meanwhile
                assert ref() is None
                assert spans.ended == ended + 1  # the span ended at collection
                counts["abandoned"] += 1
            else:
                chunks = [c async for c in s]
                assert chunks[-1].usage.completion_tokens == 8
                counts["exhausted"] += 1

        async def run(calls: int, streams: int) -> None:
            jobs = iter(
                [("call", i) for i in range(calls)] + [("stream", i) for i in range(streams)]
            )

            async def worker() -> None:
                for what, n in jobs:
                    await (call() if what == "call" else stream(n))

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        await run(200, 20)  # warm-up: the pool grows to CONCURRENCY connections
        await asyncio.sleep(0.05)  # let closing tasks of abandoned streams run
        before = snapshot()
        counts.clear()
        spans.outcomes.clear()
        span_base = spans.ended
        await run(ASYNC_CALLS, ASYNC_STREAMS)
        for _ in range(20):
            await asyncio.sleep(0.01)
        after = snapshot()
        soak_spans = spans.ended - span_base
        outcomes = Counter(spans.outcomes)
        deadline = time.monotonic() + 5
        while True:  # the server noticed every abandoned stream and freed its slot
            slots = await client.slots.list()
            if all(s["state"] == "idle" for s in slots) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)

    points = duration_count(reader)
    meter_provider.shutdown()
    tracer_provider.shutdown()
    elapsed = time.monotonic() - started
    delta = growth(before, after)
    assert points == spans.ended  # one metric point per span, warm-up included
    assert counts["calls"] == ASYNC_CALLS and counts["streams"] == ASYNC_STREAMS
    assert spans.started == spans.ended
    assert soak_spans == ASYNC_CALLS + ASYNC_STREAMS
    assert outcomes["closed_early"] == counts["abandoned"]
    assert outcomes["stream_complete"] == counts["exhausted"]
    assert outcomes["call"] == ASYNC_CALLS
    assert not [k for k in spans.outcomes if k.startswith("error:")], spans.outcomes
    assert len(slots) == 4 and all(s["state"] == "idle" for s in slots), slots
    check_growth(delta)
    tally(
        requests=spans.ended,
        soak_calls=ASYNC_CALLS,
        soak_streams=ASYNC_STREAMS,
        soak_abandoned_streams=counts["abandoned"],
    )
    FIGURES["async soak"] = (
        f"{ASYNC_CALLS} calls + {ASYNC_STREAMS} streams "
        f"({counts['abandoned']} abandoned) at concurrency {CONCURRENCY} in "
        f"{elapsed:.1f}s; spans started {spans.started} / ended "
        f"{spans.ended}; growth after warm-up: fds {delta['fds']:+d}, "
        f"threads {delta['threads']:+d}, Python blocks "
        f"{delta['blocks']:+d}, RSS {delta['rss'] / 2**20:+.1f} MiB"
    )
