"""Traces and metrics over OTLP to an OpenTelemetry Collector (then Jaeger/Tempo, Prometheus).

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
    LLAMA_BASE_URL=http://127.0.0.1:8080 python examples/otlp_to_collector.py

Each "request" of this little program is one trace: an application span with the client's
spans beneath it (chat, a stream, embeddings, tokenize). The GenAI histograms and the
server's own figures (``LlamaServerMetrics``: tokens, throughput, slots, queue) go out as
OTLP metrics. See deploy/otel-collector.yaml for a Collector configuration, and
docs/deployment.md. Without LLAMA_BASE_URL the built-in tiny model is served for the run
(the ``server`` extra). Needs the ``otel`` extra.
"""

from __future__ import annotations

import os

from opentelemetry import trace

from llamatelemetry.api import LlamaCppClient, NotSupportedError
from llamatelemetry.telemetry import (
    InstrumentedLlamaCppClient,
    LlamaServerMetrics,
    setup_telemetry,
)
from llamatelemetry.testing import url_or_tiny_server

QUESTIONS = ["What is a GGUF file?", "Why quantize a model?", "What does a KV cache hold?"]


def announce(url: str) -> None:
    print(f"(no LLAMA_BASE_URL: serving the built-in tiny model at {url})")


def main() -> None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    telemetry = setup_telemetry(
        service_name=os.environ.get("OTEL_SERVICE_NAME", "otlp-example"),
        otlp_endpoint=endpoint,
        resource_attributes={"deployment.environment": "example"},
        export_timeout_s=10,
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
    print(f"exported to {endpoint}: traces to /v1/traces, metrics to /v1/metrics")


if __name__ == "__main__":
    main()
