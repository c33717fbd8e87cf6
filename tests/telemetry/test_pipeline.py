"""Metrics, the instrumentor, setup_telemetry with real exporters, and the server-metrics
bridge: the real OpenTelemetry SDK against the real llama.cpp server."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import (
    CAPTURE_CONTENT_ENV,
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    InstrumentedLlamaCppClient,
    LlamaCppInstrumentor,
    LlamaServerMetrics,
    setup_telemetry,
)
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest
from llamatelemetry.testing._otlp import OTLPReceiver

from ..conftest import wait_until_idle

MESSAGES = [{"role": "user", "content": "What is GGUF?"}]


def chat_calls(url: str, telemetry: Any, n: int, max_tokens: int = 1) -> list[Any]:
    """``n`` chat calls through an instrumented client on ``telemetry``'s pipeline (a
    ``setup_telemetry`` handle); their replies."""
    with InstrumentedLlamaCppClient(
        url, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    ) as client:
        return [
            client.chat.completions.create(messages=MESSAGES, max_tokens=max_tokens)
            for _ in range(n)
        ]


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_metrics_one_point_per_call_with_spec_buckets(
    chat_server: ServerManager, providers: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        first = client.chat.completions.create(messages=MESSAGES, max_tokens=5)
        second = client.chat.completions.create(messages=MESSAGES, max_tokens=7)
    found = points(reader)
    [duration] = found["gen_ai.client.operation.duration"]
    assert duration.count == 2
    assert list(duration.explicit_bounds) == DURATION_BUCKETS
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["server.port"] == chat_server.port
    usage = {p.attributes["gen_ai.token.type"]: p for p in found["gen_ai.client.token.usage"]}
    assert usage["output"].sum == 12 and usage["output"].count == 2
    assert usage["input"].sum == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert list(usage["input"].explicit_bounds) == TOKEN_BUCKETS
    [ttft] = found["gen_ai.server.time_to_first_token"]
    assert ttft.sum == pytest.approx((first.timings.prompt_ms + second.timings.prompt_ms) / 1000)
    assert list(ttft.explicit_bounds) == TTFT_BUCKETS
    [tpot] = found["gen_ai.server.time_per_output_token"]
    expected = (first.timings.predicted_ms / 4 + second.timings.predicted_ms / 6) / 1000
    assert tpot.sum == pytest.approx(expected)
    assert list(tpot.explicit_bounds) == TPOT_BUCKETS
    assert "gen_ai.client.operation.time_to_first_chunk" not in found  # not a stream


def test_stream_metrics_time_to_first_and_per_chunk(
    chat_server: ServerManager, providers: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        chunks = list(client.chat.completions.create(messages=MESSAGES, max_tokens=6, stream=True))
    found = points(reader)
    [first] = found["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1
    [per_chunk] = found["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == len(chunks) - 1
    [usage_out] = [
        p
        for p in found["gen_ai.client.token.usage"]
        if p.attributes["gen_ai.token.type"] == "output"
    ]
    assert usage_out.sum == 6


def test_errors_count_in_duration_with_error_type(providers: Any) -> None:
    tracer_provider, meter_provider, reader = providers
    client = InstrumentedLlamaCppClient(
        "http://127.0.0.1:9",
        max_retries=0,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    with pytest.raises(requests.ConnectionError):
        client.tokenize("x")
    client.close()
    [duration] = points(reader)["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "APIConnectionError"
    assert "gen_ai.client.token.usage" not in points(reader)


def test_instrumentor_round_trip_leaves_results_identical(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers

    def run(client: LlamaCppClient) -> list[Any]:
        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=6, temperature=0)
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                messages=MESSAGES, max_tokens=6, temperature=0, stream=True
            )
        )
        return [
            reply.choices[0].message.content,
            reply.usage.completion_tokens,
            streamed,
            client.tokenize("Hello"),
            len(client.embed("x")),
        ]

    with LlamaCppClient(chat_server.url) as client:
        bare = run(client)
        instrumentor = LlamaCppInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        try:
            assert instrumentor.is_instrumented_by_opentelemetry
            instrumented = run(client)
            names = [s.name for s in span_exporter.get_finished_spans()]
            assert names == ["chat", "chat", "tokenize", "embeddings"]
            assert all(s.kind is SpanKind.CLIENT for s in span_exporter.get_finished_spans())
            # an InstrumentedLlamaCppClient under the instrumentor records each call once
            with InstrumentedLlamaCppClient(
                chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
            ) as both:
                both.tokenize("x")
            assert len(span_exporter.get_finished_spans()) == 5
        finally:
            instrumentor.uninstrument()
        assert not instrumentor.is_instrumented_by_opentelemetry
        after = run(client)
    assert bare == instrumented == after
    assert len(span_exporter.get_finished_spans()) == 5  # nothing recorded after uninstrument


def test_content_capture_from_environment(
    chat_server: ServerManager,
    providers: Any,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer_provider, meter_provider, _ = providers
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(messages=MESSAGES, max_tokens=4, stream=True)
        )
    [span] = span_exporter.get_finished_spans()
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is GGUF?"}]}
    ]
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}],
            "finish_reason": "length",
        }
    ]  # four tokens asked, four given


def test_otlp_export_end_to_end(chat_server: ServerManager) -> None:
    with OTLPReceiver() as receiver:
        telemetry = setup_telemetry(
            "llama-test", otlp_endpoint=receiver.url, set_global=False, export_interval_s=3600
        )
        with InstrumentedLlamaCppClient(
            chat_server.url,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        ) as client:
            reply = client.chat.completions.create(messages=MESSAGES, max_tokens=3)
            list(client.chat.completions.create(messages=MESSAGES, max_tokens=3, stream=True))
        assert telemetry.force_flush()
        spans = receiver.spans()
        assert [s["name"] for s in spans] == ["chat", "chat"]
        chat = spans[0]
        assert chat["kind"] == 3  # SPAN_KIND_CLIENT
        assert chat["resource"]["service.name"] == "llama-test"
        assert chat["scope"] == "llamatelemetry"
        assert chat["attributes"]["gen_ai.usage.output_tokens"] == 3
        assert chat["attributes"]["gen_ai.response.id"] == reply.id
        assert chat["attributes"]["gen_ai.response.finish_reasons"] == ("length",)
        assert spans[1]["attributes"]["gen_ai.response.time_to_first_chunk"] > 0
        metrics = receiver.metrics()
        duration = metrics["gen_ai.client.operation.duration"][-1]  # cumulative: the latest
        assert duration["count"] == 2 and duration["unit"] == "s"
        assert duration["bounds"] == DURATION_BUCKETS
        assert {
            p["attributes"]["gen_ai.token.type"] for p in metrics["gen_ai.client.token.usage"]
        } == {"input", "output"}
        telemetry.shutdown()


@pytest.mark.parametrize("collector", ["unreachable", "failing", "slow"])
def test_broken_exporter_never_breaks_calls(chat_server: ServerManager, collector: str) -> None:
    receiver = None
    if collector == "unreachable":
        endpoint = "http://127.0.0.1:9"
    else:
        receiver = OTLPReceiver(status=503) if collector == "failing" else OTLPReceiver(delay=2)
        endpoint = receiver.url
    telemetry = setup_telemetry(
        otlp_endpoint=endpoint, set_global=False, export_interval_s=0.05, export_timeout_s=1.0
    )
    try:
        replies = chat_calls(chat_server.url, telemetry, 5, max_tokens=2)
        assert [r.usage.completion_tokens for r in replies] == [2] * 5
    finally:
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown(timeout_millis=1000)
        if receiver is not None:
            receiver.close()


def test_prometheus_endpoint(chat_server: ServerManager) -> None:
    telemetry = setup_telemetry(prometheus_port=0, set_global=False)
    try:
        chat_calls(chat_server.url, telemetry, 1, max_tokens=2)
        text = httpx.get(telemetry.prometheus_url).text
        assert "gen_ai_client_operation_duration_seconds_count" in text
        assert 'gen_ai_token_type="output"' in text
    finally:
        telemetry.shutdown()


def test_server_metrics_bridge(chat_server: ServerManager) -> None:
    wait_until_idle(chat_server)  # its counters must not move but by this test's calls
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with LlamaCppClient(chat_server.url) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=3)
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)
        expected = client.metrics.values()
        found = points(reader)
        assert (
            found["llama_cpp.server.generated_tokens"][0].value
            == expected["llamacpp:tokens_predicted_total"]
        )
        assert (
            found["llama_cpp.server.prompt_tokens"][0].value
            == expected["llamacpp:prompt_tokens_total"]
        )
        assert found["llama_cpp.server.slots.total"][0].value == 4
        assert found["llama_cpp.server.slots.busy"][0].value == 0
        assert found["llama_cpp.server.requests_deferred"][0].value == 0
        point = found["llama_cpp.server.prompt_tokens"][0].attributes
        assert point == {"server.address": "127.0.0.1", "server.port": chat_server.port}
        client.chat.completions.create(messages=MESSAGES, max_tokens=4)
        assert (
            points(reader)["llama_cpp.server.generated_tokens"][0].value
            == expected["llamacpp:tokens_predicted_total"] + 4
        )
        bridge.close()
        assert "llama_cpp.server.generated_tokens" not in points(reader) or all(
            not p for p in points(reader)["llama_cpp.server.generated_tokens"]
        )
    provider.shutdown()


def test_server_metrics_bridge_survives_a_dead_server(providers: Any) -> None:
    _, meter_provider, reader = providers
    client = LlamaCppClient("http://127.0.0.1:9", max_retries=0)
    bridge = LlamaServerMetrics(client, interval=0, meter_provider=meter_provider)
    found = points(reader)
    assert "llama_cpp.server.generated_tokens" not in found
    assert bridge.scrapes >= 1 and bridge.failures >= 1
    client.close()


def test_one_provider_bridges_several_servers(
    chat_server: ServerManager, rerank_server: ServerManager
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with LlamaCppClient(chat_server.url) as chat, LlamaCppClient(rerank_server.url) as rank:
        bridges = [
            LlamaServerMetrics(chat, interval=0, meter_provider=provider),
            LlamaServerMetrics(rank, interval=0, meter_provider=provider),
        ]
        found = points(reader)
        ports = sorted(p.attributes["server.port"] for p in found["llama_cpp.server.slots.total"])
        assert ports == sorted([chat_server.port, rerank_server.port])
        totals = {
            p.attributes["server.port"]: p.value for p in found["llama_cpp.server.slots.total"]
        }
        assert totals[chat_server.port] == 4 and totals[rerank_server.port] == 1
        bridges[1].close()
        ports_after = [
            p.attributes["server.port"]
            for p in points(reader)["llama_cpp.server.slots.total"]
            if p.value
        ]
        assert chat_server.port in ports_after
    provider.shutdown()


def test_per_signal_endpoint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/v1/traces")
        telemetry = setup_telemetry(set_global=False)
        try:
            tracer = telemetry.tracer_provider.get_tracer("t")
            tracer.start_span("only-traces").end()
            telemetry.force_flush()
            assert [s["name"] for s in receiver.spans()] == ["only-traces"]
            assert receiver.metrics() == {}
        finally:
            telemetry.shutdown()


def test_a_server_with_metrics_off_is_up_one_that_is_gone_is_down() -> None:
    """Up means the server answered: an error status (``--no-metrics``: 501) is an answer."""

    def no_metrics(request: SeenRequest) -> Reply:
        if request.path.startswith("/props"):
            return Reply(200, {"role": "model"})
        return Reply(
            501, {"error": {"code": 501, "message": "This server does not support metrics"}}
        )

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with FaultServer(no_metrics) as server, LlamaCppClient(server.url, max_retries=0) as up:
        closed = socket.socket()  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        gone_port = closed.getsockname()[1]
        closed.close()
        gone = LlamaCppClient(f"http://127.0.0.1:{gone_port}", max_retries=0)
        bridges = [
            LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=1)
            for client in (up, gone)
        ]
        found = {
            p.attributes["server.port"]: p.value for p in points(reader)["llama_cpp.server.up"]
        }
        assert found == {server.port: 1, gone_port: 0}
        assert bridges[0].failures >= 1 and bridges[0].up is True
        assert bridges[1].up is False
        for bridge in bridges:
            bridge.close()
        assert "llama_cpp.server.up" not in points(reader) or all(
            not p for p in points(reader)["llama_cpp.server.up"]
        )  # a closed bridge reports nothing
        gone.close()
    provider.shutdown()


def test_a_collection_scrapes_each_server_once(chat_server: ServerManager) -> None:
    """interval=0 means at every collection, not at every one of the bridge's instruments
    (it scraped 16 times per collection)."""
    wait_until_idle(chat_server)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with LlamaCppClient(chat_server.url) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)
        before = client.metrics.values()["llamacpp:tokens_predicted_total"]
        found = points(reader)
        assert bridge.scrapes == 1
        assert found["llama_cpp.server.generated_tokens"][0].value == before
        client.chat.completions.create(messages=MESSAGES, max_tokens=3)
        found = points(reader)  # the next collection: fresh figures
        assert bridge.scrapes == 2
        assert found["llama_cpp.server.generated_tokens"][0].value == before + 3
        assert found["llama_cpp.server.slots.total"][0].value == 4
        bridge.close()
    provider.shutdown()


def test_stalled_servers_are_waited_for_together(chat_server: ServerManager) -> None:
    """Six servers that accept and never answer, beside a good one: a collection waits for
    the slowest (one time limit), not six in a row, so the SDK's own collection limit is
    never reached and the good server is reported."""
    stalled = [socket.socket() for _ in range(6)]
    clients = []
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        for sock in stalled:
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            port = sock.getsockname()[1]
            clients.append(LlamaCppClient(f"http://127.0.0.1:{port}", max_retries=0))
        clients.append(LlamaCppClient(chat_server.url, max_retries=0))
        bridges = [
            LlamaServerMetrics(c, interval=0, meter_provider=provider, timeout=1) for c in clients
        ]
        began = time.monotonic()
        found = points(reader)
        took = time.monotonic() - began
        assert took < 3  # one at a time: 6 s
        up = {p.attributes["server.port"]: p.value for p in found["llama_cpp.server.up"]}
        assert up[chat_server.port] == 1
        assert sorted(up.values()) == [0] * 6 + [1]
        [total] = found["llama_cpp.server.slots.total"]
        assert (total.attributes["server.port"], total.value) == (chat_server.port, 4)
        for bridge in bridges:
            bridge.close()
    finally:
        for client in clients:
            client.close()
        for sock in stalled:
            sock.close()
        provider.shutdown()


def test_a_server_that_comes_back_as_a_router_is_read_as_one() -> None:
    """Whether a server is a router is asked again once it was down: it may be back as
    something else on the same port."""
    phase = {"now": "model"}

    def answer(request: SeenRequest) -> Reply:
        if phase["now"] == "down":
            return Reply(drop=True)
        if request.path.startswith("/props"):
            return Reply(200, {"role": phase["now"]})
        if request.path.startswith("/v1/models"):
            return Reply(200, {"data": [{"id": "m", "status": {"value": "unloaded"}}]})
        if request.path.startswith("/metrics"):
            return Reply(200, "llamacpp:tokens_predicted_total 5\n", content_type="text/plain")
        return Reply(200, [])

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with FaultServer(answer) as server, LlamaCppClient(server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=1)
        assert points(reader)["llama_cpp.server.generated_tokens"][0].value == 5
        phase["now"] = "down"
        assert [p.value for p in points(reader)["llama_cpp.server.up"]] == [0]
        phase["now"] = "router"
        found = points(reader)
        [loaded] = found["llama_cpp.server.model.loaded"]
        assert (loaded.attributes["gen_ai.request.model"], loaded.value) == ("m", 0)
        assert [p.value for p in found["llama_cpp.server.up"]] == [1]
        bridge.close()
    provider.shutdown()
