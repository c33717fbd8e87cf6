"""Telemetry with no code change: a script that never mentions telemetry, run under
``opentelemetry-instrument`` with the usual ``OTEL_*`` variables, sends its calls' spans,
metric points and events to a real OTLP collector; ``llamatelemetry.instrument()`` does
the same from code, once however often it is called, and ``uninstrument()`` undoes it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llamatelemetry
from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import INFERENCE_EVENT
from llamatelemetry.testing._otlp import OTLPReceiver

from .test_pipeline import MESSAGES, points

APP = textwrap.dedent(
    """
    import sys
    import openai
    from llamatelemetry import LlamaCppClient

    with LlamaCppClient(sys.argv[1]) as client:  # nothing of telemetry here
        reply = client.chat.completions.create(
            messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        list(client.chat.completions.create(
            messages=[{"role": "user", "content": "Hi"}], max_tokens=2, stream=True
        ))
    sdk = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="none", max_retries=0)
    sdk.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    print(reply.id)
    """
)


def test_a_script_under_opentelemetry_instrument_is_traced_measured_and_evented(
    chat_server: ServerManager, tmp_path: Path
) -> None:
    tool = Path(sys.executable).with_name("opentelemetry-instrument")
    assert tool.exists() or shutil.which("opentelemetry-instrument"), "the otel extra's tool"
    app = tmp_path / "app.py"
    app.write_text(APP)
    with OTLPReceiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            OTEL_SERVICE_NAME="zero-code",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_AND_EVENT",
        )
        done = subprocess.run(
            [str(tool), sys.executable, str(app), chat_server.url],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        reply_id = done.stdout.strip().splitlines()[-1]
        every = receiver.spans()
        spans = [s for s in every if s["scope"] == "llamatelemetry"]
        theirs = [s for s in every if s["scope"] != "llamatelemetry"]
        metrics = receiver.metrics()
        events = [r for r in receiver.logs() if r["event_name"] == INFERENCE_EVENT]
    assert [s["name"] for s in spans] == ["chat", "chat"]
    # The openai SDK's call: openai-v2 (installed here too) records it, and ours adds
    # llama.cpp's attributes to its span: one span.
    (sdk_span,) = theirs
    assert "llama_cpp.timings.prompt_ms" in sdk_span["attributes"]
    assert spans[0]["resource"]["service.name"] == "zero-code"
    assert spans[0]["attributes"]["gen_ai.response.id"] == reply_id
    assert spans[1]["attributes"]["gen_ai.response.time_to_first_chunk"] > 0
    assert "gen_ai.input.messages" in spans[0]["attributes"]
    ours = [
        p for p in metrics["gen_ai.client.operation.duration"]
        if p["attributes"].get("gen_ai.provider.name") == "llama.cpp"
    ]  # fmt: skip
    assert sum(p["count"] for p in ours) == 2  # the SDK call's duration is openai-v2's
    assert [e["span_id"] for e in events if e["scope"] == "llamatelemetry"] == [
        s["span_id"] for s in spans
    ]


def test_instrument_from_code_once_however_often_and_undone(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, reader = providers
    methods = (LlamaCppClient.execute_call, AsyncLlamaCppClient.execute_call)
    try:
        llamatelemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        llamatelemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        with LlamaCppClient(chat_server.url) as client:
            client.chat.completions.create(messages=MESSAGES, max_tokens=1)
        assert len(span_exporter.get_finished_spans()) == 1  # one span, not two
        assert sum(p.count for p in points(reader)["gen_ai.client.operation.duration"]) == 1
    finally:
        llamatelemetry.uninstrument()
    assert (LlamaCppClient.execute_call, AsyncLlamaCppClient.execute_call) == methods
    with LlamaCppClient(chat_server.url) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=1)
    assert len(span_exporter.get_finished_spans()) == 1  # none more


def test_without_the_openai_sdk_our_clients_alone_are_instrumented(
    chat_server: ServerManager,
    providers: Any,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # import fails
    tracer_provider, meter_provider, _ = providers
    with caplog.at_level(logging.DEBUG, "llamatelemetry"):
        llamatelemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with LlamaCppClient(chat_server.url) as client:
            client.chat.completions.create(messages=MESSAGES, max_tokens=1)
    finally:
        llamatelemetry.uninstrument()
    assert [s.name for s in span_exporter.get_finished_spans()] == ["chat"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_importing_llamatelemetry_loads_no_sdk() -> None:
    """The functions are there at once; OpenTelemetry's SDK is loaded when called."""
    code = (
        "import sys, llamatelemetry; "
        "assert callable(llamatelemetry.instrument) and callable(llamatelemetry.uninstrument); "
        "assert 'opentelemetry.sdk' not in sys.modules, 'loaded at import'; "
        "assert 'opentelemetry.instrumentation' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
