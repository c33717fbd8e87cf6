"""Streaming chat with OpenTelemetry printed to the console.

    LLAMA_BASE_URL=http://127.0.0.1:8080 python examples/streaming_with_console_telemetry.py

The answer streams token by token; when the program ends, the spans (the application's
own "tell-a-story" span and the client's "chat" span beneath it, with the GenAI
attributes and llama.cpp's timings) and the GenAI metrics are printed as JSON. Without
LLAMA_BASE_URL, the built-in tiny model is served for the run (the ``server`` extra).
Needs the ``otel`` extra.
"""

from __future__ import annotations

import time

from opentelemetry import trace

from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import url_or_tiny_server


def announce(url: str) -> None:
    print(f"(no LLAMA_BASE_URL: serving the built-in tiny model at {url})")


def main() -> None:
    # Spans and metrics to stdout, as JSON (they are printed when telemetry shuts down).
    telemetry = setup_telemetry(service_name="streaming-example", console=True)
    tracer = trace.get_tracer("streaming-example")
    try:
        with (
            url_or_tiny_server(announce=announce) as url,
            InstrumentedLlamaCppClient(base_url=url) as client,
        ):
            with tracer.start_as_current_span("tell-a-story"):
                started = time.perf_counter()
                first_token_at = None
                pieces = 0
                with client.chat.completions.create(
                    messages=[{"role": "user", "content": "Tell me a short story."}],
                    max_tokens=48,
                    stream=True,
                ) as stream:
                    for chunk in stream:
                        text = chunk.choices[0].delta.content
                        if text:
                            first_token_at = first_token_at or time.perf_counter()
                            pieces += 1
                            print(text, end="", flush=True)
                        if chunk.usage is not None:  # the last chunk: usage and llama.cpp timings
                            usage, timings = chunk.usage, chunk.timings
            print()
            print(
                f"--- {pieces} pieces; first after {(first_token_at - started) * 1000:.1f} ms; "
                f"{usage.completion_tokens} tokens at "
                f"{timings.predicted_per_second:.0f} tokens/s (server)"
            )
    finally:
        print("--- telemetry (console exporter):")
        telemetry.shutdown()  # flushes: prints the spans, then the metrics


if __name__ == "__main__":
    main()
