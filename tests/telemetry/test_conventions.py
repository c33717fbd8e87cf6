"""The GenAI conventions as the OpenTelemetry GenAI utilities read them: the content-capture
modes, the operation-details event, system instructions and tool definitions, the schema
URL; and an instrumentor that removes only its own wrapper. Real SDK, real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import (
    CAPTURE_CONTENT_ENV,
    EMIT_EVENT_ENV,
    INFERENCE_EVENT,
    SCHEMA_URL,
    ContentCapture,
    InstrumentedLlamaCppClient,
    LlamaCppInstrumentor,
)
from llamatelemetry.telemetry._capture import capture_mode
from llamatelemetry.telemetry._messages import system_instructions, tool_definitions

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is GGUF?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def logs() -> Iterator[tuple[LoggerProvider, InMemoryLogRecordExporter]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _events(exporter: InMemoryLogRecordExporter) -> list[Any]:
    return [r.log_record for r in exporter.get_finished_logs()]


@pytest.mark.filterwarnings("ignore::llamatelemetry.api.ToolsIgnoredWarning")  # the tiny template
@pytest.mark.parametrize(
    "value, on_span, event, content_in_event",
    [
        ("SPAN_ONLY", True, False, False),
        ("span_only", True, False, False),
        ("EVENT_ONLY", False, True, True),
        ("SPAN_AND_EVENT", True, True, True),
        ("NO_CONTENT", False, False, False),
        ("true", True, False, False),  # the older boolean form
        ("", False, False, False),
    ],
)
def test_capture_modes_from_the_environment(
    chat_server: ServerManager,
    providers: Any,
    span_exporter: InMemorySpanExporter,
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    on_span: bool,
    event: bool,
    content_in_event: bool,
) -> None:
    tracer_provider, meter_provider, _ = providers
    logger_provider, log_exporter = logs
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, value)
    with InstrumentedLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
    ) as client:
        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=3, tools=TOOLS)
        client.tokenize("not an inference")
    # the first chat with tools asked the server about its template (a props span)
    props, chat, tokenize = span_exporter.get_finished_spans()
    assert props.name == "props"
    content_keys = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"}
    assert (content_keys <= set(chat.attributes)) is on_span
    assert not content_keys & set(chat.attributes) or on_span
    if on_span:
        # system messages in the chat history stay in the input messages (the conventions)
        assert json.loads(chat.attributes["gen_ai.input.messages"])[0]["role"] == "system"
        assert "gen_ai.system_instructions" not in chat.attributes
        assert json.loads(chat.attributes["gen_ai.tool.definitions"]) == TOOLS
    records = _events(log_exporter)
    if not event:
        assert records == []
        return
    [record] = records  # the inference's only: tokenize is not one
    assert record.event_name == INFERENCE_EVENT
    assert record.trace_id == chat.context.trace_id and record.span_id == chat.context.span_id
    assert tokenize.context.span_id != record.span_id
    attributes = dict(record.attributes)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens == 3
    assert attributes["gen_ai.response.id"] == reply.id
    if content_in_event:  # structured values, not JSON strings
        inputs = attributes["gen_ai.input.messages"]
        assert inputs[1]["parts"][0]["content"] == "What is GGUF?"
        [output] = attributes["gen_ai.output.messages"]
        assert output["parts"][0]["content"] == reply.choices[0].message.content
        assert attributes["gen_ai.tool.definitions"][0]["function"]["name"] == "get_weather"


def test_emit_event_variable_overrides_the_mode(
    chat_server: ServerManager,
    providers: Any,
    span_exporter: InMemorySpanExporter,
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``EMIT_EVENT=true`` with no content: the event carries the attributes, no messages;
    ``false`` with ``SPAN_AND_EVENT``: content on the span, no event."""
    tracer_provider, meter_provider, _ = providers
    logger_provider, log_exporter = logs
    monkeypatch.setenv(EMIT_EVENT_ENV, "true")
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "NO_CONTENT")
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, logger_provider=logger_provider
    ) as client:
        client.complete("Once", max_tokens=2)
    [record] = _events(log_exporter)
    assert record.attributes["gen_ai.operation.name"] == "text_completion"
    assert not any(key.endswith("messages") for key in record.attributes)
    monkeypatch.setenv(EMIT_EVENT_ENV, "false")
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "SPAN_AND_EVENT")
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, logger_provider=logger_provider
    ) as client:
        client.complete("Once", max_tokens=2)
    assert len(_events(log_exporter)) == 1
    assert "gen_ai.input.messages" in span_exporter.get_finished_spans()[-1].attributes


def test_a_failed_inference_event_names_the_error(
    providers: Any, logs: tuple[LoggerProvider, InMemoryLogRecordExporter]
) -> None:
    tracer_provider, _, _ = providers
    logger_provider, log_exporter = logs
    with InstrumentedLlamaCppClient(
        "http://127.0.0.1:9",
        tracer_provider=tracer_provider,
        logger_provider=logger_provider,
        capture_content="EVENT_ONLY",
        max_retries=0,
    ) as client:
        with pytest.raises(Exception, match="connect"):
            client.chat.completions.create(messages=MESSAGES, max_tokens=2)
    [record] = _events(log_exporter)
    assert record.attributes["error.type"] == "APIConnectionError"
    assert record.attributes["gen_ai.input.messages"][0]["parts"][0]["content"] == "Be brief."


def test_capture_content_argument_takes_the_modes() -> None:
    assert capture_mode(True) is ContentCapture.SPAN_ONLY
    assert capture_mode(False) is ContentCapture.NO_CONTENT
    assert capture_mode("event_only") is ContentCapture.EVENT_ONLY
    assert capture_mode(ContentCapture.SPAN_AND_EVENT) is ContentCapture.SPAN_AND_EVENT
    assert capture_mode("sometimes") is ContentCapture.NO_CONTENT  # unknown: off, with a warning
    with pytest.raises(TypeError, match="SPAN_ONLY"):
        capture_mode(1)  # type: ignore[arg-type]


def test_system_instructions_given_apart_from_the_history() -> None:
    assert system_instructions({"instructions": "Answer in French."}) == json.dumps(
        [{"type": "text", "content": "Answer in French."}]
    )
    blocks = [{"type": "text", "text": "Be terse."}, {"type": "image", "source": {}}]
    assert json.loads(system_instructions({"system": blocks}) or "") == [
        {"type": "text", "content": "Be terse."},
        {"type": "image"},
    ]
    assert system_instructions({"messages": MESSAGES}) is None  # in the history instead
    long = system_instructions({"instructions": "x" * 100_000}) or ""
    assert len(long) <= 16_384 and json.loads(long)[0]["content"].endswith("…")


def test_tool_definitions_stay_whole_json_when_too_many() -> None:
    many = [dict(TOOLS[0], function=dict(TOOLS[0]["function"], name=f"t{i}")) for i in range(500)]
    text = tool_definitions({"tools": many}) or ""
    kept = json.loads(text)
    assert 0 < len(kept) < 500 and len(text) <= 16_384
    assert [t["function"]["name"] for t in kept] == [f"t{i}" for i in range(len(kept))]
    assert tool_definitions({"tools": []}) is None


def test_tracer_meter_and_events_carry_the_schema_url(
    chat_server: ServerManager,
    span_exporter: InMemorySpanExporter,
    providers: Any,
    logs: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    tracer_provider, meter_provider, reader = providers
    logger_provider, log_exporter = logs
    with InstrumentedLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        capture_content="SPAN_AND_EVENT",
    ) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)
    [span] = span_exporter.get_finished_spans()
    assert span.instrumentation_scope.schema_url == SCHEMA_URL
    data = reader.get_metrics_data()
    assert data is not None
    scopes = [s.scope for rm in data.resource_metrics for s in rm.scope_metrics]
    assert scopes and all(s.schema_url == SCHEMA_URL for s in scopes)
    [logged] = log_exporter.get_finished_logs()
    assert logged.instrumentation_scope.schema_url == SCHEMA_URL


def _counting(previous: Any, seen: list[str], asynchronous: bool = False) -> Any:
    """Another library's wrapper around ``execute_call``."""
    if asynchronous:

        async def wrapper(client: Any, call: Any) -> Any:
            seen.append(call.operation)
            return await previous(client, call)

    else:

        def wrapper(client: Any, call: Any) -> Any:
            seen.append(call.operation)
            return previous(client, call)

    wrapper.__wrapped__ = previous  # type: ignore[attr-defined]
    return wrapper


def test_uninstrument_leaves_a_wrapper_put_on_after_it(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    original = LlamaCppClient.__dict__["execute_call"]
    instrumentor = LlamaCppInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    seen: list[str] = []
    theirs = _counting(LlamaCppClient.__dict__["execute_call"], seen)
    LlamaCppClient.execute_call = theirs  # type: ignore[method-assign]
    try:
        with LlamaCppClient(chat_server.url) as client:
            client.tokenize("a")
            instrumentor.uninstrument()
            assert LlamaCppClient.__dict__["execute_call"] is theirs  # still in place
            client.tokenize("b")
        assert seen == ["tokenize", "tokenize"]  # their wrapper saw both calls
        assert len(span_exporter.get_finished_spans()) == 1  # ours only the first
    finally:
        LlamaCppClient.execute_call = original  # type: ignore[method-assign]
        instrumentor.uninstrument()


async def test_uninstrument_restores_a_wrapper_put_on_before_it(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    originals = {c: c.__dict__["execute_call"] for c in (LlamaCppClient, AsyncLlamaCppClient)}
    seen: list[str] = []
    LlamaCppClient.execute_call = _counting(originals[LlamaCppClient], seen)  # type: ignore[method-assign]
    AsyncLlamaCppClient.execute_call = _counting(  # type: ignore[method-assign]
        originals[AsyncLlamaCppClient], seen, asynchronous=True
    )
    theirs = {c: c.__dict__["execute_call"] for c in originals}
    instrumentor = LlamaCppInstrumentor()
    try:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        async with AsyncLlamaCppClient(chat_server.url) as aclient:
            await aclient.tokenize("a")
        instrumentor.uninstrument()
        assert {c: c.__dict__["execute_call"] for c in originals} == theirs
        async with AsyncLlamaCppClient(chat_server.url) as aclient:
            await aclient.tokenize("b")
        assert seen == ["tokenize", "tokenize"]
        assert len(span_exporter.get_finished_spans()) == 1
    finally:
        for cls, method in originals.items():
            cls.execute_call = method  # type: ignore[method-assign]


def test_traceparent_comes_from_telemetry_only(providers: Any) -> None:
    """A plain client under an active span sends no ``traceparent`` (the api layer knows
    nothing of OpenTelemetry); under the instrumentor, the same client sends its span's."""
    from opentelemetry import trace

    from llamatelemetry.testing._fault_server import FaultServer, Reply

    tracer_provider, meter_provider, _ = providers
    tracer = trace.get_tracer("test", tracer_provider=tracer_provider)
    instrumentor = LlamaCppInstrumentor()
    with FaultServer(Reply(200, {"tokens": [1]})) as server:
        with tracer.start_as_current_span("outer"), LlamaCppClient(server.url) as client:
            client.tokenize("a")
            instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
            try:
                client.tokenize("b")
            finally:
                instrumentor.uninstrument()
            client.tokenize("c")
            outer = trace.get_current_span().get_span_context()
    headers = [request.headers for request in server.requests]
    assert "traceparent" not in headers[0] and "traceparent" not in headers[2]
    _, trace_id, parent, _ = headers[1]["traceparent"].split("-")
    assert trace_id == format(outer.trace_id, "032x")
    assert parent != format(outer.span_id, "016x")  # the call's own span, under "outer"


def test_a_failing_propagator_costs_the_call_nothing_and_leaves_no_open_span(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Broken(TextMapPropagator):
        def inject(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("broken propagator")

        def extract(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("broken propagator")

        @property
        def fields(self) -> set[str]:
            return set()

    tracer_provider, _, _ = providers
    with LlamaCppClient(chat_server.url) as plain:
        expected = plain.tokenize("Hello")
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(Broken())
    try:
        with InstrumentedLlamaCppClient(chat_server.url, tracer_provider=tracer_provider) as client:
            assert client.tokenize("Hello") == expected
    finally:
        propagate.set_global_textmap(before)
    [span] = span_exporter.get_finished_spans()  # started, and ended although unobserved
    assert span.end_time is not None


def test_thinking_is_told_apart_from_answering(providers: Any) -> None:
    """A reasoning model's stream: the first chunks are thoughts (reasoning_content), the
    answer starts later; the span says when each began, and the reasoning tokens the server
    reports. (Neither test model reasons: a scripted server streams what llama-server does
    with reasoning_format="deepseek".)"""
    import time as _time

    from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

    tracer_provider, meter_provider, _ = providers
    exporter = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    def delta(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": fields}]}

    chunks = sse(
        delta(role="assistant"),
        *[delta(reasoning_content=f"step {i}. ") for i in range(3)],
        delta(content="Paris."),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 12,
                "completion_tokens_details": {"reasoning_tokens": 9},
            },
        },
    )
    with FaultServer(Reply(chunks=chunks, chunk_delay=0.2)) as server:
        with InstrumentedLlamaCppClient(
            server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
        ) as client:
            started = _time.perf_counter()
            final = client.chat.completions.create(
                messages=MESSAGES, stream=True
            ).get_final_completion()
            elapsed = _time.perf_counter() - started
    [span] = exporter.get_finished_spans()
    first = span.attributes["gen_ai.response.time_to_first_chunk"]
    answer = span.attributes["llama_cpp.stream.time_to_first_content"]
    assert 0 < first < answer <= elapsed
    # three thinking chunks came between, the answer 4 x 0.2 s after the first chunk: more
    # than a chunk's gap, so not the first thinking chunk taken for the answer
    assert answer - first >= 2 * 0.2
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 9
    assert final.choices[0].message.reasoning_content == "step 0. step 1. step 2. "
    assert final.choices[0].message.content == "Paris."
