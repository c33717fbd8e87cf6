"""Telemetry under faults: failed calls leave one ended span with ``error.type`` (sync and
async), and a collector that is down, slow or broken never slows or breaks a call, nor
lets memory grow without bound."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llamatelemetry.api import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIResponseError,
    APITimeoutError,
    BadRequestError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    StreamInterruptedError,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import (
    InstrumentedAsyncLlamaCppClient,
    InstrumentedLlamaCppClient,
    setup_telemetry,
)
from llamatelemetry.testing._fault_server import Reply, sse
from llamatelemetry.testing._otlp import OTLPReceiver

from ._support import (
    FIGURES,
    LOADING,
    MESSAGES,
    REPLY,
    BlackHole,
    Driver,
    LatePort,
    TallyingFaultServer,
    chunk,
    tally,
)

pytestmark = pytest.mark.usefixtures("fast_backoff")
INSTRUMENTED = (InstrumentedLlamaCppClient, InstrumentedAsyncLlamaCppClient)
STREAM = sse(chunk("a"), chunk("b"), chunk(finish="stop"))


# (replies or a special address, client options, what to do, the error)
Scenario = tuple[Any, dict[str, Any], str, type]
SCENARIOS: dict[str, Scenario] = {
    "refused": ("refused", {"max_retries": 1}, "chat", APIConnectionError),
    "connect-timeout": (
        "blackhole",
        {"max_retries": 0, "timeout": httpx.Timeout(5, connect=0.1)},
        "chat",
        APIConnectTimeoutError,
    ),
    "read-timeout": (
        [Reply(200, REPLY, delay=1.0)],
        {"max_retries": 1, "timeout": 0.1},
        "chat",
        APITimeoutError,
    ),
    "503-storm": ([Reply(503, LOADING)], {"max_retries": 2}, "chat", ServiceUnavailableError),
    "429": (
        [Reply(429, {"error": {"message": "slow"}}, headers={"Retry-After": "0"})],
        {"max_retries": 1},
        "chat",
        RateLimitError,
    ),
    "400": (
        [Reply(400, {"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}})],
        {},
        "chat",
        BadRequestError,
    ),
    "malformed-json": (
        [Reply(200, b'{"choices": [', content_type="application/json")],
        {},
        "chat",
        APIResponseError,
    ),
    "stream-dropped": ([Reply(chunks=STREAM, drop_after=1)], {}, "stream", StreamInterruptedError),
    "stream-error-event": (
        [Reply(chunks=sse(chunk("a"), {"error": {"code": 500, "message": "x"}}))],
        {},
        "stream",
        StreamError,
    ),
    "stream-stalled": (
        [Reply(chunks=STREAM, chunk_delay=1.0)],
        {"timeout": 0.1},
        "stream",
        APITimeoutError,
    ),
    "stream-without-done": (
        [Reply(chunks=sse(chunk("a"), done=False))],
        {},
        "stream",
        StreamInterruptedError,
    ),
}


def duration_points(reader: InMemoryMetricReader) -> list[Any]:
    data = reader.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.operation.duration":
                    points += list(metric.data.data_points)
    return points


@pytest.mark.parametrize("name", SCENARIOS)
def test_failed_call_ends_one_span_with_error_type(
    drivers: Callable[..., Driver], providers: Any, span_exporter: InMemorySpanExporter, name: str
) -> None:
    target, options, action, error_type = SCENARIOS[name]
    tracer_provider, meter_provider, reader = providers
    tally(scenarios=1)
    closers: list[Any] = []
    if target == "refused":
        port = LatePort()
        url = port.url
        closers.append(port)
    elif target == "blackhole":
        hole = BlackHole()
        url = hole.url
        closers.append(hole)
    else:
        fault = TallyingFaultServer(target)  # the fault repeats: retries meet it too
        url = fault.url
        closers.append(fault)
    try:
        driver = drivers(
            url,
            INSTRUMENTED,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            **options,
        )
        if action == "chat":
            with pytest.raises(error_type) as info:
                driver.chat()
            error = info.value
        else:
            _, error, stream = driver.stream()
            assert stream.closed
        assert type(error) is error_type
        [span] = span_exporter.get_finished_spans()  # one span, however many attempts
        assert span.end_time is not None
        assert span.attributes["error.type"] == error_type.__qualname__
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == str(error)[:500]
        [point] = duration_points(reader)
        assert point.attributes["error.type"] == error_type.__qualname__
        assert point.count == 1
    finally:
        for closer in closers:
            closer.close()


class HealthyExporter(SpanExporter):
    """A collector that takes every batch at once: the baseline."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("collector exploded")

    def shutdown(self) -> None:
        pass


EXPORT_TIMEOUT = 2.0  # far beyond any call's own time (a few ms), however busy the machine


def _blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


@pytest.mark.usefixtures("no_debug_logs")
@pytest.mark.parametrize("collector", ["down", "slow", "raising"])
def test_broken_collector_never_slows_calls_and_memory_stays_bounded(
    chat_server: ServerManager,
    collector: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A small span queue: what the batch processor holds while export fails is bounded.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")  # one export to wait for at shutdown
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    closers: list[Any] = []
    kwargs: dict[str, Any] = {}
    if collector == "down":
        port = LatePort()  # refuses every connection
        closers.append(port)
        kwargs["otlp_endpoint"] = port.url
    elif collector == "slow":
        receiver = OTLPReceiver(delay=EXPORT_TIMEOUT + 2.0)  # every export runs to its timeout
        closers.append(receiver)
        kwargs["otlp_endpoint"] = receiver.url
    else:
        raising = RaisingExporter()
        kwargs["span_exporters"] = [raising]

    def measured(**options: Any) -> tuple[float, float, int]:
        """(the slowest of 750 calls, the last 600's time, their Python blocks)."""
        slowest = 0.0
        telemetry = setup_telemetry(
            set_global=False,
            export_interval_s=0.05,
            export_timeout_s=EXPORT_TIMEOUT,
            **options,
        )
        try:
            with InstrumentedLlamaCppClient(
                chat_server.url,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                max_retries=0,
            ) as client:

                def calls(n: int) -> None:
                    nonlocal slowest
                    for _ in range(n):
                        started = time.perf_counter()
                        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
                        slowest = max(slowest, time.perf_counter() - started)
                        assert reply.usage.completion_tokens == 1

                calls(150)  # warm-up: the span queue fills up
                before = _blocks()
                started = time.monotonic()
                calls(600)
                elapsed = time.monotonic() - started
                after = _blocks()
        finally:
            telemetry.tracer_provider.shutdown()
            telemetry.meter_provider.shutdown(timeout_millis=1000)
        return slowest, elapsed, after - before

    try:
        _, baseline, _ = measured(span_exporters=[HealthyExporter()])  # same calls, same load
        slowest, elapsed, grown = measured(**kwargs)
    finally:
        for closer in closers:
            closer.close()
    # No call ever waited for the collector: one that waited for an export would take its
    # timeout (2 s: the slow collector never answers within it, the down one is retried
    # until ~1.5 s), and a call that waited for a share of every export would slow them all.
    assert slowest < EXPORT_TIMEOUT / 2, slowest
    assert elapsed < 3 * baseline + 2.0, (elapsed, baseline)
    # A finished span holds ~42 allocated blocks: 600 kept would be ~25,000; the queue (64)
    # plus a batch in flight (64) is at most ~5,400.
    assert grown < 10_000, grown
    if collector == "raising":
        assert raising.calls >= 1
    tally(requests=750, faults_survived=1)
    FIGURES[f"collector {collector}"] = (
        f"750 calls all answered; slowest {slowest * 1000:.0f} ms;"
        f" 600 in {elapsed:.2f}s (healthy: {baseline:.2f}s); Python blocks {grown:+d}"
    )


class FaultyProcessor(SpanProcessor):
    """A span processor (someone else's code) that raises when a span ends."""

    def on_end(self, span: Any) -> None:
        raise RuntimeError("processor bug")


def test_a_faulty_span_processor_never_breaks_a_call(chat_server: ServerManager) -> None:
    provider = TracerProvider()
    provider.add_span_processor(FaultyProcessor())
    try:
        with InstrumentedLlamaCppClient(chat_server.url, tracer_provider=provider) as client:
            reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
            assert reply.usage.completion_tokens == 1
    finally:
        provider.shutdown()
