"""What `open_client` leaves on a tracer provider it is given: a span processor for good,
which marks the spans started during a benchmark's phase and leaves every other alone."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.bench import PHASE_ATTRIBUTE, open_client
from llamatelemetry.bench._phase import WARMUP, phase


async def test_the_marker_stays_on_the_provider_and_marks_only_phase_spans(
    providers: tuple[TracerProvider, MeterProvider, InMemoryMetricReader],
    span_exporter: InMemorySpanExporter,
) -> None:
    tracer_provider, _, _ = providers
    async with open_client("http://127.0.0.1:9", tracer_provider=tracer_provider):
        pass
    async with open_client("http://127.0.0.1:9", tracer_provider=tracer_provider):
        pass  # a second client: the provider is marked once
    tracer = tracer_provider.get_tracer("the program's own")
    with tracer.start_as_current_span("outside"):
        pass
    with phase(WARMUP), tracer.start_as_current_span("inside"):
        pass
    marked = {s.name: dict(s.attributes or {}) for s in span_exporter.get_finished_spans()}
    assert marked == {"outside": {}, "inside": {PHASE_ATTRIBUTE: WARMUP}}
