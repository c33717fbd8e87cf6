"""The deferred metric recorder: points leave the caller's thread, yet every collection
sees every finished operation, exactly once, with exemplars that point at its span."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import (
    InstrumentedLlamaCppClient,
    _call_recorder,
    _recorder,
    setup_telemetry,
)
from llamatelemetry.telemetry._recorder import DeferredRecorder, recorder
from llamatelemetry.testing._otlp import OTLPReceiver

from .test_pipeline import MESSAGES, chat_calls, points


def _sum_and_count(reader: InMemoryMetricReader, name: str) -> tuple[float, int]:
    found = points(reader).get(name, [])
    return sum(p.sum for p in found), sum(p.count for p in found)


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> DeferredRecorder:
    """Clients made from now on queue their points until a collection records them."""
    own = DeferredRecorder(background=False)
    monkeypatch.setattr(_recorder, "recorder", own)
    return own


@pytest.fixture
def meter() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def test_calls_queue_points_and_the_thread_records_them(
    chat_server: ServerManager, providers: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=3)
        deadline = time.monotonic() + 5
        while recorder._queue and time.monotonic() < deadline:  # no collection meanwhile
            time.sleep(0.01)
    assert not recorder._queue
    assert recorder._thread is not None and recorder._thread.daemon
    assert recorder._thread.name == "llamatelemetry-metrics"
    assert _sum_and_count(reader, "gen_ai.client.operation.duration")[1] == 1


def test_a_collection_right_after_calls_sees_them(
    chat_server: ServerManager, providers: Any, paused: DeferredRecorder
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        for _ in range(3):
            client.chat.completions.create(messages=MESSAGES, max_tokens=2)
        chunks = list(client.chat.completions.create(messages=MESSAGES, max_tokens=4, stream=True))
        queued = len(paused._queue)
        found = points(reader)
    # an entry per call (expanded into its points when recorded); a stream's: its first
    # chunk, the times between its chunks (one entry for all of them), the call
    assert queued == 3 + 3
    gaps = found["gen_ai.client.operation.time_per_output_chunk"]
    assert sum(p.count for p in gaps) == len(chunks) - 1 >= 4
    assert sum(p.count for p in found["gen_ai.client.operation.duration"]) == 4
    usage = {p.attributes["gen_ai.token.type"]: p for p in found["gen_ai.client.token.usage"]}
    assert usage["output"].sum == 10 and usage["output"].count == 4
    assert sum(p.count for p in found["gen_ai.client.operation.time_to_first_chunk"]) == 1
    assert not paused._queue


def test_no_point_lost_or_doubled_under_concurrent_calls_and_collections(
    chat_server: ServerManager, providers: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    calls_per_thread, threads = 40, 4
    collections: list[int] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            collections.append(_sum_and_count(reader, "gen_ai.client.operation.duration")[1])

    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:

        def work() -> None:
            for _ in range(calls_per_thread):
                client.chat.completions.create(messages=MESSAGES, max_tokens=1)

        collector = threading.Thread(target=collect)
        collector.start()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        collector.join()
        total, count = _sum_and_count(reader, "gen_ai.client.token.usage")
    assert len(collections) > 5
    assert collections == sorted(collections)  # cumulative counts never go back
    assert collections[-1] <= calls_per_thread * threads
    assert _sum_and_count(reader, "gen_ai.client.operation.duration")[1] == 160
    assert count == 2 * 160  # input and output, once per call


def test_exemplars_point_at_the_operation_span(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)
    [span] = span_exporter.get_finished_spans()
    [duration] = points(reader)["gen_ai.client.operation.duration"]
    assert [(e.trace_id, e.span_id) for e in duration.exemplars] == [
        (span.context.trace_id, span.context.span_id)
    ]


def test_shutdown_exports_points_still_queued(
    chat_server: ServerManager, paused: DeferredRecorder
) -> None:
    with OTLPReceiver() as receiver:
        telemetry = setup_telemetry("recorder-test", otlp_endpoint=receiver.url, set_global=False)
        chat_calls(chat_server.url, telemetry, 5)
        assert len(paused._queue) == 5
        telemetry.shutdown()  # no force_flush first
        [duration] = receiver.metrics()["gen_ai.client.operation.duration"][-1:]
    assert duration["count"] == 5


class _Broken:
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a faulty SDK")


def test_a_failing_instrument_does_not_stop_the_others(
    meter: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = meter
    histogram = provider.get_meter("t").create_histogram("h")
    own = DeferredRecorder(background=False)
    own.defer(histogram.record, 1.0, {"k": "a"})
    own.defer(_Broken().record, 2.0, {"k": "b"})
    own.defer(histogram.record, 3.0, {"k": "a"}, Context())
    own.flush()
    assert _sum_and_count(reader, "h") == (4.0, 2)
    assert not own._queue


def test_the_queue_is_bounded(
    meter: tuple[MeterProvider, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_recorder, "MAX_QUEUED", 50)
    provider, reader = meter
    histogram = provider.get_meter("t").create_histogram("h")
    own = DeferredRecorder(background=False)  # as if the thread could not keep up
    for _ in range(50):
        own.defer(histogram.record, 1.0, {})
    assert len(own._queue) == 50
    own.defer(histogram.record, 1.0, {})  # one more: the caller records the backlog itself
    assert len(own._queue) == 0
    assert _sum_and_count(reader, "h") == (51.0, 51)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_records_its_own_points_only(
    meter: tuple[MeterProvider, InMemoryMetricReader], paused: DeferredRecorder
) -> None:
    provider, reader = meter
    histogram = provider.get_meter("t").create_histogram("h")
    paused.attach(provider.get_meter("t"))
    recorder.attach(provider.get_meter("t2"))
    for _ in range(3):
        paused.defer(histogram.record, 10.0, {})
    recorder.defer(histogram.record, 0.0, {})  # the process-wide recorder starts its thread
    recorder.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without cleanup
        try:
            empty = not paused._queue and not recorder._queue
            no_thread = recorder._thread is None
            paused.defer(histogram.record, 1.0, {})
            recorder.defer(histogram.record, 2.0, {})
            started = recorder._thread is not None and recorder._thread.is_alive()
            total, count = _sum_and_count(reader, "h")
            os.write(write, f"{empty} {no_thread} {started} {total} {count}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    # The parent's queued points stay the parent's; the child records its own, on a
    # thread of its own.
    assert child == ["True", "True", "True", "3.0", "3"]
    assert _sum_and_count(reader, "h") == (30.0, 4)


_LATE_GLOBALS = """
import json, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from llamatelemetry.api import LlamaCppClient
from llamatelemetry.telemetry import LlamaCppInstrumentor, _recorder

_recorder.recorder = _recorder.DeferredRecorder(background=False)  # collections only
LlamaCppInstrumentor().instrument()  # before any provider exists: the API's proxies
reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
with LlamaCppClient(sys.argv[1]) as client:
    client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=2)
queued = len(_recorder.recorder._queue)
counts = {m.name: sum(p.count for p in m.data.data_points)
          for rm in reader.get_metrics_data().resource_metrics
          for sm in rm.scope_metrics for m in sm.metrics
          if hasattr(m.data.data_points[0], "count")}  # histograms
print(json.dumps({"queued": queued, "spans": len(spans.get_finished_spans()),
                  "counts": counts}))
"""


def test_global_providers_set_after_instrumenting(chat_server: ServerManager) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LATE_GLOBALS, chat_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["queued"] == 1 and result["spans"] == 1
    assert result["counts"]["gen_ai.client.operation.duration"] == 1
    assert result["counts"]["gen_ai.client.token.usage"] == 2
    assert "llamatelemetry.telemetry.queued_points" not in result["counts"]


@contextlib.contextmanager
def long_stream(server: ServerManager, providers: Any) -> Iterator[Any]:
    """A 300-token stream of an instrumented client (its client closed after)."""
    tracer_provider, meter_provider, _ = providers
    with InstrumentedLlamaCppClient(
        server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        yield client.chat.completions.create(
            messages=MESSAGES, max_tokens=300, stream=True, ignore_eos=True
        )


@pytest.mark.parametrize("stop_after", [None, 100])
def test_every_gap_of_a_long_stream_is_a_point(
    chat_server: ServerManager, providers: Any, stop_after: int | None
) -> None:
    """Gaps go to the metrics GAP_BATCH at a time and at the end, early end included."""
    reader = providers[2]
    chunks = []
    with long_stream(chat_server, providers) as stream:
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == stop_after:
                stream.close()
    found = points(reader)
    [gaps] = found["gen_ai.client.operation.time_per_output_chunk"]
    [first] = found["gen_ai.client.operation.time_to_first_chunk"]
    [duration] = found["gen_ai.client.operation.duration"]
    assert len(chunks) == (stop_after or 300 + 3)  # role, 300 tokens, finish, usage
    assert gaps.count == len(chunks) - 1
    # the gaps add up to the time from the first chunk to the last: none lost, none doubled
    assert first.sum + gaps.sum <= duration.sum
    assert first.sum + gaps.sum > 0.5 * duration.sum  # the rest: after the last chunk


def test_a_long_streams_gaps_reach_a_collection_before_its_end(
    chat_server: ServerManager, providers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only at the end: once GAP_EVERY_S has passed and GAP_BATCH are held."""
    monkeypatch.setattr(_call_recorder, "GAP_EVERY_S", 0.0)
    reader = providers[2]
    with long_stream(chat_server, providers) as stream:
        for seen, _chunk in enumerate(stream, start=1):
            if seen == 150:
                [gaps] = points(reader)["gen_ai.client.operation.time_per_output_chunk"]
                assert gaps.count == 128  # two batches of GAP_BATCH, the rest still held
        [gaps] = points(reader)["gen_ai.client.operation.time_per_output_chunk"]
        assert gaps.count == seen - 1


def test_a_flush_waits_for_the_batch_another_thread_is_recording() -> None:
    """The queue is empty while a batch the recording thread popped is still on its way to
    the SDK: a collection's flush must wait for it, or the collection misses its points
    (it did, at random: an OTLP export after force_flush without the call's duration)."""
    own = DeferredRecorder(background=False)
    in_flight, release, flushed = threading.Event(), threading.Event(), threading.Event()
    recorded: list[int] = []

    def slow(value: int, attributes: Any, context: Context | None) -> None:
        in_flight.set()
        assert release.wait(10)
        recorded.append(value)

    own.defer(slow, 1, None)
    recording = threading.Thread(target=own.flush)  # as the recording thread does
    recording.start()
    assert in_flight.wait(10)  # popped: the queue is empty, the point not yet recorded
    collecting = threading.Thread(target=lambda: (own.flush(), flushed.set()))
    collecting.start()
    # A flush that returned now would let a collection read the histograms without it.
    assert not flushed.wait(0.2)
    release.set()
    assert flushed.wait(10)
    assert recorded == [1]
    recording.join(10)
    collecting.join(10)
