"""The scripts in examples/ run, as a user runs them (``python examples/x.py``, a separate
process), against the session's real llama.cpp servers, and do what they say."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from llamatelemetry.server import ServerManager
from llamatelemetry.testing._otlp import OTLPReceiver

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = [
    "quickstart.py",
    "streaming_with_console_telemetry.py",
    "otlp_to_collector.py",
    "fastapi_service.py",
    "embeddings_rerank_pipeline.py",
]


def environment(**values: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLAMA_")) and k != "PORT"
    }
    env.update(values)
    return env


def launch(script: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run an example as a user does; its exit status and output, whatever they are."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(**env),
    )


def run(script: str, timeout: float = 60, **env: str) -> str:
    done = launch(script, timeout, **env)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)


def test_quickstart(chat_server: ServerManager) -> None:
    out = run("quickstart.py", LLAMA_BASE_URL=chat_server.url)
    lines = out.splitlines()
    assert lines[0] == "health: ok"
    assert re.fullmatch(r"chat: '.*'", lines[1])
    assert re.fullmatch(r"  \d+ prompt tokens, 32 generated, finish_reason=length", lines[2])
    assert lines[3].startswith("stream: ") and len(lines[3]) > len("stream: ")
    assert lines[4] == "tokenize: 8 tokens [1, 292, 326, 389, 884, 356, 273, 357]"
    assert lines[5] == "detokenize: '<s> Hello, world!'"
    assert lines[6] == "embed: 64 dimensions"


def test_quickstart_serves_the_tiny_model_without_a_url() -> None:
    out = run("quickstart.py")
    assert re.match(
        r"\(no LLAMA_BASE_URL: serving the built-in tiny model at "
        r"http://127\.0\.0\.1:\d+\)\nhealth: ok\n",
        out,
    )
    assert out.rstrip().endswith("embed: 64 dimensions")


def test_quickstart_says_when_the_server_has_no_embeddings(
    rerank_server: ServerManager, tmp_path: Path
) -> None:
    from llamatelemetry.testing import start_chat_server

    with start_chat_server(tmp_path, n_parallel=1, embedding=False, pooling=None) as plain:
        out = run("quickstart.py", LLAMA_BASE_URL=plain.url)
    assert out.splitlines()[-1] == (
        "embed: skipped (start the server with --embedding --pooling mean)"
    )


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporters print, one after another."""
    decoder, objects, i = json.JSONDecoder(), [], 0
    while (start := text.find("{", i)) != -1:
        obj, i = decoder.raw_decode(text, start)
        objects.append(obj)
    return objects


def test_streaming_with_console_telemetry(chat_server: ServerManager) -> None:
    out = run("streaming_with_console_telemetry.py", LLAMA_BASE_URL=chat_server.url)
    story, telemetry = out.split("--- telemetry (console exporter):\n")
    assert re.search(
        r"^--- \d+ pieces; first after [\d.]+ ms; 48 tokens at \d+ tokens/s "
        r"\(server\)$",
        story,
        re.M,
    )
    objects = json_objects(telemetry)
    spans = {o["name"]: o for o in objects if "context" in o}
    assert set(spans) == {"chat", "tell-a-story"}
    chat, parent = spans["chat"], spans["tell-a-story"]
    assert chat["parent_id"] == parent["context"]["span_id"]
    assert chat["kind"] == "SpanKind.CLIENT"
    assert chat["attributes"]["gen_ai.request.stream"] is True
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 48
    assert chat["attributes"]["gen_ai.response.time_to_first_chunk"] > 0
    assert chat["resource"]["attributes"]["service.name"] == "streaming-example"
    metrics = {
        m["name"]
        for o in objects
        for rm in o.get("resource_metrics", [])
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
    }
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    } <= metrics


def test_otlp_to_collector(chat_server: ServerManager) -> None:
    with OTLPReceiver() as collector:
        out = run(
            "otlp_to_collector.py",
            LLAMA_BASE_URL=chat_server.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        )
        spans, metrics = collector.spans(), collector.metrics()
    traces = re.findall(r"^trace ([0-9a-f]{32}): \d+ prompt tokens, 24 generated$", out, re.M)
    assert len(traces) == 3
    assert "3 embeddings of 64 dimensions" in out
    assert out.splitlines()[-1] == (
        f"exported to {collector.url}: traces to /v1/traces, metrics to /v1/metrics"
    )
    assert {s["resource"]["service.name"] for s in spans} == {"otlp-example"}
    assert {s["resource"]["deployment.environment"] for s in spans} == {"example"}
    for trace_id in traces:  # one trace per question: the app span and its two client spans
        in_trace = [s for s in spans if s["trace_id"] == trace_id]
        (root,) = [s for s in in_trace if s["name"] == "answer-question"]
        children = sorted(s["name"] for s in in_trace if s["parent_span_id"] == root["span_id"])
        assert children == ["chat", "tokenize"]
    (summary,) = [s for s in spans if s["name"] == "summarize-answers"]
    assert [s["name"] for s in spans if s["parent_span_id"] == summary["span_id"]] == ["chat"]
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "llama_cpp.server.generated_tokens",
        "llama_cpp.server.slots.total",
    } <= set(metrics)
    assert metrics["llama_cpp.server.slots.total"][0]["value"] == 4


@pytest.mark.parametrize("collector", ["dead", "refusing"])
def test_otlp_to_collector_says_when_nothing_arrived(
    chat_server: ServerManager, collector: str
) -> None:
    with OTLPReceiver(status=400) as refusing:  # a collector that rejects every export
        endpoint = refusing.url if collector == "refusing" else f"http://127.0.0.1:{free_port()}"
        done = launch(
            "otlp_to_collector.py",
            LLAMA_BASE_URL=chat_server.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_TIMEOUT="1",  # seconds of retries against the dead port
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(re.findall(r"^trace [0-9a-f]{32}: ", done.stdout, re.M)) == 3  # the app ran
    assert "exported to" not in done.stdout
    assert re.fullmatch(
        rf"NOT exported to {re.escape(endpoint)}: "
        r"\d+ trace export\(s\) and \d+ metric export\(s\) failed",
        done.stderr.splitlines()[-1],
    ), done.stderr


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_span_of(spans: list[Any], client_span: Any) -> Any:
    """The SERVER span above ``client_span`` (FastAPI may put operation spans between)."""
    from opentelemetry.trace import SpanKind

    by_id = {s.context.span_id: s for s in spans}
    span = client_span
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        if span.kind == SpanKind.SERVER:
            return span
    raise AssertionError(f"{client_span.name} has no SERVER span above it")


@pytest.mark.parametrize("native", [True, False], ids=["fastapi-telemetry", "middleware"])
def test_fastapi_service_traces_end_to_end_in_process(
    chat_server: ServerManager, native: bool
) -> None:
    """TestClient against the app; an in-memory exporter shows the parentage."""
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    service = load_example("fastapi_service")
    if native and not service.FASTAPI_TRACES:
        pytest.skip("this FastAPI has no native telemetry")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = service.create_app(chat_server.url, tracer_provider=provider, native_telemetry=native)
    with TestClient(app) as http:
        reply = http.post(
            "/chat",
            json={"message": "Hi", "max_tokens": 8},
            headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["completion_tokens"] == 8 and body["trace_id"] == caller_trace
        streamed = http.post("/chat/stream", json={"message": "Hi", "max_tokens": 8})
        assert streamed.status_code == 200 and streamed.text
        assert http.get("/healthz").json() == {"llama_server": {"status": "ok"}}
        assert http.post("/chat", json={"message": ""}).status_code == 422
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert sorted(s.name for s in clients) == ["chat", "chat", "health"]
    routes = {}
    for client in clients:
        server = server_span_of(spans, client)
        assert server.context.trace_id == client.context.trace_id
        assert server.attributes["http.response.status_code"] == 200
        routes[server.name] = client
    assert sorted(routes) == ["GET /healthz", "POST /chat", "POST /chat/stream"]
    chat = routes["POST /chat"]
    assert chat.context.trace_id == int(caller_trace, 16)  # the caller's trace, continued
    (server,) = [
        s
        for s in spans
        if s.kind == SpanKind.SERVER
        and s.name == "POST /chat"
        and s.context.trace_id == chat.context.trace_id
    ]
    assert server.parent is not None and server.parent.span_id == 0x00F067AA0BA902B7
    stream = routes["POST /chat/stream"]
    assert stream.attributes["gen_ai.request.stream"] is True
    assert stream.attributes["gen_ai.usage.output_tokens"] == 8


@pytest.fixture
def fastapi_process(
    chat_server: ServerManager,
) -> Iterator[tuple[str, OTLPReceiver, subprocess.Popen[str]]]:
    port = free_port()
    with OTLPReceiver() as collector:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "fastapi_service.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(
                LLAMA_BASE_URL=chat_server.url,
                PORT=str(port),
                OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
                OTEL_SERVICE_NAME="chat-service",
            ),
        )
        try:
            yield f"http://127.0.0.1:{port}", collector, process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_fastapi_service_runs_under_uvicorn_and_exports_its_traces(
    fastapi_process: tuple[str, OTLPReceiver, subprocess.Popen[str]],
) -> None:
    url, collector, process = fastapi_process
    deadline = time.monotonic() + 30
    with httpx.Client(trust_env=False) as http:
        while True:
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.05)
        caller_trace = "0af7651916cd43dd8448eb211c80319c"
        reply = http.post(
            f"{url}/chat",
            json={"message": "Hello", "max_tokens": 8},
            headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"},
        )
        assert reply.status_code == 200 and reply.json()["trace_id"] == caller_trace
    process.send_signal(signal.SIGINT)  # uvicorn shuts down; main() flushes the telemetry
    assert process.wait(timeout=30) == 0
    spans = [s for s in collector.spans() if s["trace_id"] == caller_trace]
    assert {s["resource"]["service.name"] for s in spans} == {"chat-service"}
    (server_span,) = [s for s in spans if s["kind"] == 2]  # SERVER
    assert server_span["name"] == "POST /chat"
    assert server_span["parent_span_id"] == "b7ad6b7169203331"
    (client_span,) = [s for s in spans if s["kind"] == 3]  # CLIENT
    assert client_span["name"] == "chat"
    assert client_span["attributes"]["gen_ai.usage.output_tokens"] == 8
    by_id = {s["span_id"]: s for s in spans}
    above, parent = [], client_span["parent_span_id"]
    while parent in by_id:
        above.append(by_id[parent]["name"])
        parent = by_id[parent]["parent_span_id"]
    assert above[-1] == "POST /chat" and parent == "b7ad6b7169203331"
    assert "gen_ai.client.operation.duration" in collector.metrics()


def test_embeddings_rerank_pipeline(
    chat_server: ServerManager, rerank_server: ServerManager
) -> None:
    out = run(
        "embeddings_rerank_pipeline.py",
        LLAMA_BASE_URL=chat_server.url,
        LLAMA_RERANK_URL=rerank_server.url,
    )
    lines = out.splitlines()
    assert lines[0] == "embedded 10 documents in batches of 4 (64 dimensions)"
    assert lines[2] == "stage 1, cosine similarity: top 5 of 10"
    stage1 = [
        int(m) for m in re.findall(r"^  \d\. \[(\d+)\] [\d.]+  ", out.split("stage 2")[0], re.M)
    ]
    assert len(stage1) == 5 and len(set(stage1)) == 5
    assert lines[8] == "stage 2, reranked: best 3"
    stage2 = [
        (int(i), float(score))
        for i, score in re.findall(r"^  \d\. \[(\d+)\] ([\d.]+)  ", out.split("stage 2")[1], re.M)
    ]
    assert len(stage2) == 3 and {i for i, _ in stage2} <= set(stage1)
    assert [score for _, score in stage2] == sorted((score for _, score in stage2), reverse=True)


def test_embeddings_pipeline_without_a_reranker(chat_server: ServerManager) -> None:
    out = run("embeddings_rerank_pipeline.py", LLAMA_BASE_URL=chat_server.url)
    assert out.splitlines()[-1] == (
        "stage 2 skipped: set LLAMA_RERANK_URL to a server started with --reranking"
    )
