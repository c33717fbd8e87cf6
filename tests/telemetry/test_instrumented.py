"""InstrumentedLlamaCppClient against the real server, with the real OpenTelemetry SDK."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llamatelemetry.api import ChatCompletion, StreamInterruptedError
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, unmeasured
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

MESSAGES = [{"role": "user", "content": "What is GGUF?"}]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def tclient(
    chat_server: ServerManager, provider: TracerProvider
) -> Iterator[InstrumentedLlamaCppClient]:
    with InstrumentedLlamaCppClient(chat_server.url, tracer_provider=provider) as client:
        yield client


def only_span(exporter: InMemorySpanExporter) -> Any:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_spec_example_runs_verbatim(chat_server: ServerManager) -> None:
    from ..test_spec_examples import run

    _, scope = run("16_instrumented_client", chat_server.url)
    response = scope["response"]
    assert isinstance(response, ChatCompletion)
    assert response.usage.completion_tokens == 64
    scope["client"].close()


def test_chat_span_attributes_match_response(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter, chat_server: ServerManager
) -> None:
    response = tclient.chat_completions(
        {"messages": MESSAGES, "max_tokens": 8, "seed": 3, "temperature": 0.0, "stop": ["zz"]}
    )
    span = only_span(exporter)
    a = span.attributes
    assert span.kind is SpanKind.CLIENT and span.name == "chat"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "llama.cpp"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == chat_server.port
    assert a["gen_ai.request.max_tokens"] == 8 and a["gen_ai.request.seed"] == 3
    assert a["gen_ai.request.temperature"] == 0.0
    assert a["gen_ai.request.stop_sequences"] == ("zz",)
    assert a["gen_ai.response.id"] == response.id
    assert a["gen_ai.response.model"] == response.model
    assert a["gen_ai.response.finish_reasons"] == ("length",)
    assert a["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == 8
    assert a["llama_cpp.timings.predicted_n"] == response.timings.predicted_n == 8
    assert a["llama_cpp.timings.prompt_ms"] == response.timings.prompt_ms
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert span.status.status_code is StatusCode.UNSET


def test_spans_mark_the_defaults_the_caller_never_set(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter
) -> None:
    """The client sends the spec's defaults (seed 0, temperature 0.7, ...); a span shows
    what was sent, and names which of those values the caller did not choose."""
    tclient.chat.completions.create(messages=MESSAGES, max_tokens=2)
    a = only_span(exporter).attributes
    assert a["gen_ai.request.seed"] == 0 and a["gen_ai.request.temperature"] == 0.7
    assert a["llamatelemetry.request.defaulted"] == (
        "gen_ai.request.frequency_penalty",
        "gen_ai.request.presence_penalty",
        "gen_ai.request.seed",
        "gen_ai.request.temperature",
        "gen_ai.request.top_k",
        "gen_ai.request.top_p",
    )
    exporter.clear()
    tclient.chat.completions.create(
        messages=MESSAGES, seed=7, temperature=0.7, top_p=0.9, extra_body={"top_k": 40}
    )
    a = only_span(exporter).attributes
    assert a["gen_ai.request.seed"] == 7
    assert a["llamatelemetry.request.defaulted"] == (
        "gen_ai.request.frequency_penalty",
        "gen_ai.request.max_tokens",
        "gen_ai.request.presence_penalty",
    )
    exporter.clear()
    tclient.complete("GGUF is", n_predict=2, seed=None, temperature=0, top_p=1, top_k=0,
                     frequency_penalty=0, presence_penalty=0)  # fmt: skip
    assert "llamatelemetry.request.defaulted" not in only_span(exporter).attributes


def test_unmeasured_calls_are_traced_but_add_no_metric_points(
    chat_server: ServerManager,
    providers: tuple[TracerProvider, Any, Any],
    span_exporter: InMemorySpanExporter,
) -> None:
    """Warm-ups and calibration are spans, never points in the GenAI histograms: a stream
    begun inside ``unmeasured()`` stays unmeasured when read after the block."""
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        with unmeasured():
            client.chat.completions.create(messages=MESSAGES, max_tokens=2)
            stream = client.chat.completions.create(messages=MESSAGES, max_tokens=4, stream=True)
        assert len(list(stream)) > 2
        assert reader.get_metrics_data() is None or not _points(reader)
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)
    assert len(span_exporter.get_finished_spans()) == 3
    assert _points(reader)["gen_ai.client.operation.duration"] == 1


def _points(reader: Any) -> dict[str, int]:
    """Each metric's number of recorded values, over all its points."""
    data = reader.get_metrics_data()
    found: dict[str, int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                counts = [getattr(p, "count", 0) for p in metric.data.data_points]
                if sum(counts):
                    found[metric.name] = sum(counts)
    return found


def test_model_in_request_names_the_span(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter
) -> None:
    tclient.chat.completions.create(messages=MESSAGES, max_tokens=1, model="tiny")
    span = only_span(exporter)
    assert span.name == "chat tiny" and span.attributes["gen_ai.request.model"] == "tiny"


def test_content_captured_only_when_asked(
    chat_server: ServerManager, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=provider, capture_content=True
    ) as client:
        response = client.chat_completions({"messages": MESSAGES, "max_tokens": 4})
    a = only_span(exporter).attributes
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is GGUF?"}]}
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": response.choices[0].message.content}],
            "finish_reason": response.choices[0].finish_reason,
        }
    ]


def test_api_key_never_in_spans(
    key_server: ServerManager, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from ..conftest import API_KEY

    with InstrumentedLlamaCppClient(
        key_server.url, api_key=API_KEY, tracer_provider=provider, capture_content=True
    ) as client:
        client.chat_completions({"messages": MESSAGES, "max_tokens": 2})
    assert API_KEY not in repr(only_span(exporter).to_json())


@pytest.mark.parametrize("exit_path", ["exhaust", "break_close", "with_block", "gc"])
def test_stream_span_ends_exactly_once(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter, exit_path: str
) -> None:
    stream = tclient.chat.completions.create(messages=MESSAGES, max_tokens=6, stream=True)
    assert exporter.get_finished_spans() == ()  # open while the user iterates
    if exit_path == "exhaust":
        chunks = list(stream)
        stream.close()
    elif exit_path == "break_close":
        for _chunk in stream:
            break
        stream.close()
        stream.close()
    elif exit_path == "with_block":
        with stream:
            next(stream)
    else:
        next(stream)
        del stream
        gc.collect()
    span = only_span(exporter)
    a = span.attributes
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    if exit_path == "exhaust":
        assert a["gen_ai.usage.output_tokens"] == 6 == chunks[-1].usage.completion_tokens
        assert a["gen_ai.response.finish_reasons"] == ("length",)
        assert "llama_cpp.stream.closed_early" not in a
    else:
        assert a["llama_cpp.stream.closed_early"] is True
    assert span.status.status_code is StatusCode.UNSET


def test_stream_error_marks_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "a"}}]}
    with FaultServer(Reply(chunks=sse(chunk, chunk, chunk), drop_after=1)) as server:
        with InstrumentedLlamaCppClient(server.url, tracer_provider=provider) as client:
            with pytest.raises(StreamInterruptedError):
                list(client.chat.completions.create(messages=MESSAGES, stream=True))
    span = only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "StreamInterruptedError"


def test_failed_call_marks_span_and_traceparent_is_sent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with FaultServer(Reply(400, {"error": {"code": 400, "message": "bad"}})) as server:
        with InstrumentedLlamaCppClient(server.url, tracer_provider=provider) as client:
            with pytest.raises(Exception, match="bad"):
                client.tokenize("x")
    span = only_span(exporter)
    assert span.name == "tokenize"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "BadRequestError"
    traceparent = server.requests[0].headers["traceparent"]
    assert traceparent.split("-")[1] == format(span.context.trace_id, "032x")
    assert traceparent.split("-")[2] == format(span.context.span_id, "016x")


def test_every_call_is_a_span(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter
) -> None:
    tclient.embed("x")
    tclient.tokenize("x")
    tclient.complete("x", max_tokens=2)
    tclient.health.check()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["embeddings", "tokenize", "text_completion", "health"]
    native = exporter.get_finished_spans()[2].attributes
    assert native["gen_ai.usage.output_tokens"] == 2
    assert native["gen_ai.request.max_tokens"] == 2


def test_embed_spans_carry_the_usage_of_the_response(
    tclient: InstrumentedLlamaCppClient, exporter: InMemorySpanExporter
) -> None:
    vector = tclient.embed("one two three")
    full = tclient.embeddings.create(input="one two three")
    vectors = tclient.embed(["one", "one two three"])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["embeddings"] * 3
    assert vector == full.data[0].embedding
    assert len(vectors) == 2 and vectors[1] == pytest.approx(vector, abs=0.01)  # batched
    assert full.usage is not None
    assert spans[0].attributes["gen_ai.usage.input_tokens"] == full.usage.prompt_tokens > 0
    assert spans[2].attributes["gen_ai.usage.input_tokens"] > full.usage.prompt_tokens
