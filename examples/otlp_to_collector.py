"""Traces and metrics over OTLP to an OpenTelemetry Collector (then Jaeger/Tempo, Prometheus).

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
    LLAMA_BASE_URL=http://127.0.0.1:8080 python examples/otlp_to_collector.py

Each "request" of this little program is one trace: an application span with the client's
spans beneath it (chat, a stream, embeddings, tokenize). The GenAI histograms and the
server's own figures (``LlamaServerMetrics``: tokens, throughput, slots, queue) go out as
OTLP metrics. See deploy/otel-collector.yaml for a Collector configuration, and
docs/deployment.md. Without LLAMA_BASE_URL the built-in tiny model is served for the run
(the ``server`` extra). Needs the ``otel`` extra.

An exporter that cannot reach the collector only logs a warning: the program goes on. So
the exporters here count what the collector accepted, and the last line says whether
everything arrived; when something did not, it goes to stderr and the exit status is 1.
(``OTEL_EXPORTER_OTLP_TIMEOUT`` bounds each export's retries, 10 s by default.)
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from llamatelemetry.api import LlamaCppClient, NotSupportedError
from llamatelemetry.telemetry import (
    InstrumentedLlamaCppClient,
    LlamaServerMetrics,
    setup_telemetry,
)
from llamatelemetry.testing import url_or_tiny_server

QUESTIONS = ["What is a GGUF file?", "Why quantize a model?", "What does a KV cache hold?"]
#: Export calls by signal and result: ("trace", "SUCCESS"), ("metric", "FAILURE"), ...
EXPORTS: Counter[tuple[str, str]] = Counter()


class Counted:
    """Mixed into an exporter: counts its exports by result (the SDK only logs failures)."""

    signal = ""

    def export(self, *args: Any, **kwargs: Any) -> Any:
        result = super().export(*args, **kwargs)
        EXPORTS[self.signal, result.name] += 1
        return result


class CountedSpanExporter(Counted, OTLPSpanExporter):
    signal = "trace"


class CountedMetricExporter(Counted, OTLPMetricExporter):
    signal = "metric"


def report(endpoint: str) -> None:
    """One line on what reached the collector; exit status 1 unless everything did."""
    failures = [
        f"{EXPORTS[signal, 'FAILURE']} {signal} export(s)"
        for signal in ("trace", "metric")
        if EXPORTS[signal, "FAILURE"]
    ]
    if failures:
        sys.exit(f"NOT exported to {endpoint}: {' and '.join(failures)} failed")
    if not EXPORTS:
        sys.exit(f"NOT exported to {endpoint}: nothing was sent")
    print(f"exported to {endpoint}: traces to /v1/traces, metrics to /v1/metrics")


def announce(url: str) -> None:
    print(f"(no LLAMA_BASE_URL: serving the built-in tiny model at {url})")


def main() -> None:
    # Taken out of the environment, so that setup_telemetry exports through the counting
    # exporters below only, not through unchecked ones of its own for the same endpoint.
    endpoint = os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    base = endpoint.rstrip("/")
    telemetry = setup_telemetry(
        service_name=os.environ.get("OTEL_SERVICE_NAME", "otlp-example"),
        span_exporters=[CountedSpanExporter(endpoint=f"{base}/v1/traces")],
        metric_readers=[
            PeriodicExportingMetricReader(CountedMetricExporter(endpoint=f"{base}/v1/metrics"))
        ],
        resource_attributes={"deployment.environment": "example"},
    )
    tracer = trace.get_tracer("otlp-example")
    with url_or_tiny_server(announce=announce) as url:
        bridge = LlamaServerMetrics(LlamaCppClient(base_url=url), interval=5.0)
        with InstrumentedLlamaCppClient(base_url=url) as client:
            for question in QUESTIONS:
                with tracer.start_as_current_span("answer-question") as span:
                    span.set_attribute("app.question.length", len(question))
                    tokens = client.tokenize(question)
                    reply = client.chat.completions.create(
                        messages=[{"role": "user", "content": question}], max_tokens=24
                    )
                    trace_id = format(span.get_span_context().trace_id, "032x")
                print(
                    f"trace {trace_id}: {len(tokens)} prompt tokens, "
                    f"{reply.usage.completion_tokens} generated"
                )
            with tracer.start_as_current_span("summarize-answers"):
                stream = client.chat.completions.create(
                    messages=[{"role": "user", "content": "Summarize."}], max_tokens=16, stream=True
                )
                summary = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
            print(f"summary of {len(summary)} characters")
            try:
                vectors = client.embed(QUESTIONS)
                print(f"{len(vectors)} embeddings of {len(vectors[0])} dimensions")
            except NotSupportedError:  # a span with error.type all the same
                print("embeddings: skipped (start the server with --embedding --pooling mean)")
        telemetry.shutdown()  # flushes spans and metrics (the bridge scrapes the server now)
        bridge.close()
    report(endpoint)


if __name__ == "__main__":
    main()
