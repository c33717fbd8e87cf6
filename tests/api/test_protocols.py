"""OpenAI's Responses API and Anthropic's Messages API on llama-server, both clients, with
their telemetry: shapes and counts on the tiny model, text on the real one (SmolLM2)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api import (
    AsyncLlamaCppClient,
    LlamaCppClient,
    Message,
    MessageStreamEvent,
    Response,
    ResponseStreamEvent,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedLlamaCppClient

SYSTEM = "You are a helpful assistant."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY: dict[str, Any] = {"temperature": 0}


def test_response_is_typed(client: LlamaCppClient) -> None:
    response = client.responses.create("What is GGUF?", max_output_tokens=6, **GREEDY)
    assert isinstance(response, Response)
    assert response.object == "response" and response.id and response.model
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    assert response.output_text == item.content[0].text  # type: ignore[index]
    assert response.usage is not None
    assert response.usage.output_tokens == 6
    assert response.usage.total_tokens == response.usage.input_tokens + 6


def test_response_stream_events_add_up(client: LlamaCppClient) -> None:
    whole = client.responses.create("What is GGUF?", max_output_tokens=6, **GREEDY)
    stream = client.responses.create("What is GGUF?", max_output_tokens=6, stream=True, **GREEDY)
    events = list(stream)
    assert all(isinstance(e, ResponseStreamEvent) for e in events)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 6
    final = stream.get_final_completion()
    assert isinstance(final, Response)
    assert final.output_text == "".join(d or "" for d in deltas) == whole.output_text
    assert final.usage is not None and final.usage.output_tokens == 6
    assert final.timings is not None and final.timings.predicted_n == 6


def test_message_is_typed(client: LlamaCppClient) -> None:
    message = client.messages.create(QUESTION, 5, system=SYSTEM, **GREEDY)
    assert isinstance(message, Message)
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.stop_reason == "max_tokens" and message.finish_reason == "length"
    assert message.usage is not None and message.usage.output_tokens == 5
    counted = client.messages.count_tokens(QUESTION, system=SYSTEM)
    assert message.usage.prompt_tokens == counted  # cached tokens included


def test_message_stream_events_add_up(client: LlamaCppClient) -> None:
    whole = client.messages.create(QUESTION, 5, **GREEDY)
    stream = client.messages.create(QUESTION, 5, stream=True, **GREEDY)
    events = list(stream)
    assert all(isinstance(e, MessageStreamEvent) for e in events)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") == 5
    final = stream.get_final_completion()
    assert isinstance(final, Message)
    assert final.text == whole.text
    assert final.stop_reason == "max_tokens"
    assert final.usage is not None and final.usage.output_tokens == 5
    assert final.usage.prompt_tokens == (whole.usage.prompt_tokens if whole.usage else -1)


async def test_async_twins(chat_server: ServerManager) -> None:
    async with AsyncLlamaCppClient(chat_server.url) as client:
        response = await client.responses.create("Hi", max_output_tokens=3, **GREEDY)
        message = await client.messages.create(QUESTION, 3, **GREEDY)
        stream = await client.messages.create(QUESTION, 3, stream=True, **GREEDY)
        final = await stream.get_final_completion()
        counted = await client.messages.count_tokens(QUESTION)
    assert response.usage is not None and response.usage.output_tokens == 3
    assert final.text == message.text
    assert counted > 0


def test_bad_arguments_fail_before_sending() -> None:
    with LlamaCppClient("http://127.0.0.1:9", max_retries=0) as client:
        with pytest.raises(ValueError, match="max_output_tokens"):
            client.responses.create("x", max_output_tokens=0)
        with pytest.raises(TypeError, match="max_tokens"):
            client.messages.create(QUESTION, "5")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="system"):
            client.messages.create(QUESTION, 5, system=3)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="stop_sequences"):
            client.messages.create(QUESTION, 5, stop_sequences="\n")  # type: ignore[call-overload]


def test_spans_of_both_protocols(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    with InstrumentedLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=True,
    ) as client:
        response = client.responses.create("Hi", instructions=SYSTEM, max_output_tokens=4)
        message = client.messages.create(QUESTION, 4, system=SYSTEM, stop_sequences=["\n\n"])
        client.responses.create("Hi", max_output_tokens=4, stream=True).get_final_completion()
        client.messages.create(QUESTION, 4, stream=True).get_final_completion()
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat"] * 4
    for span in spans:
        assert span.attributes["gen_ai.request.max_tokens"] == 4
        assert span.attributes["gen_ai.usage.output_tokens"] == 4
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
        assert span.attributes["gen_ai.response.finish_reasons"]
    assert spans[0].attributes["gen_ai.response.id"] == response.id
    assert spans[1].attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert spans[1].attributes["gen_ai.request.stop_sequences"] == ("\n\n",)
    assert spans[1].attributes["gen_ai.usage.input_tokens"] == (
        message.usage.prompt_tokens if message.usage else -1
    )
    assert '"Hi"' in spans[0].attributes["gen_ai.input.messages"]
    assert SYSTEM in spans[0].attributes["gen_ai.system_instructions"]
    assert SYSTEM in spans[1].attributes["gen_ai.system_instructions"]
    for span in spans[2:]:  # streams: the time to the first chunk of text
        assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0
        assert "llama_cpp.timings.predicted_n" in span.attributes or span is spans[3]


def test_real_model_answers_through_both(real_client: LlamaCppClient) -> None:
    response = real_client.responses.create(
        "What is the capital of France?", instructions=SYSTEM, max_output_tokens=24, **GREEDY
    )
    message = real_client.messages.create(QUESTION, 24, system=SYSTEM, **GREEDY)
    assert "Paris" in response.output_text
    assert "Paris" in message.text
    assert message.stop_reason == "end_turn"
    assert real_client.messages.count_tokens(QUESTION, system=SYSTEM) == (
        real_client.chat.completions.count_tokens(
            [{"role": "system", "content": SYSTEM}, *QUESTION]
        )
    )


# -- a Messages stream from a hostile server -------------------------------------------------

START = {"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}}
STOP = {"type": "message_stop"}


def _block_start(index: int) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}  # fmt: skip


def _delta(index: int, text: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}  # fmt: skip


def _hostile_messages(*events: dict[str, Any]) -> Any:
    from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

    return FaultServer(Reply(chunks=sse(*events, done=False), content_type="text/event-stream"))


def test_a_delta_before_its_block_start_keeps_its_text() -> None:
    events = (START, _delta(0, "Hel"), _block_start(0), _delta(0, "lo"), STOP)
    with _hostile_messages(*events) as server, LlamaCppClient(server.url) as client:
        stream = client.messages.create(QUESTION, 4, stream=True)
        assert stream.get_final_completion().text == "Hello"


@pytest.mark.parametrize(
    "bad",
    [
        _delta(0, 5),  # a number where the text goes
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": "many"},
        },  # fmt: skip
    ],
    ids=["numeric-text", "string-output-tokens"],
)
def test_a_malformed_message_event_is_the_clients_own_error_and_fails_the_span(
    bad: dict[str, Any],
    providers: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import StatusCode

    from llamatelemetry.api import APIResponseError

    tracer_provider, meter_provider, _ = providers
    events = (START, _block_start(0), _delta(0, "Hi"), bad, STOP)
    with (
        _hostile_messages(*events) as server,
        InstrumentedLlamaCppClient(
            server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
        ) as client,
    ):
        stream = client.messages.create(QUESTION, 4, stream=True)
        with pytest.raises(APIResponseError, match="message event"):
            stream.get_final_completion()
    [span] = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "APIResponseError"


def test_a_null_count_in_a_message_delta_keeps_message_starts_count() -> None:
    """Anthropic's delta usage has nullable fields: a null is no count, not a new one."""
    start = {"type": "message_start",
             "message": {"id": "m", "content": [], "usage": {"input_tokens": 7,
                                                            "output_tokens": 1}}}  # fmt: skip
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
           "usage": {"input_tokens": None, "output_tokens": 3,
                     "cache_read_input_tokens": None,
                     "cache_creation_input_tokens": None}}  # fmt: skip
    events = (start, _block_start(0), _delta(0, "Hi"), end, STOP)
    with _hostile_messages(*events) as server, LlamaCppClient(server.url) as client:
        message = client.messages.create(QUESTION, 4, stream=True).get_final_completion()
    assert message.text == "Hi" and message.stop_reason == "end_turn"
    assert message.usage is not None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    assert message.usage.cache_read_input_tokens is None
