"""Structured outputs, the chat stream's accumulator and prompt-token counts: on the tiny
model where counts and shapes matter, on the real model (SmolLM2) where the text does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from llamatelemetry.api import (
    AsyncLlamaCppClient,
    ChatCompletion,
    LlamaCppClient,
    StructuredOutputError,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

MESSAGES = [{"role": "user", "content": "What is GGUF?"}]
# SmolLM2 answers sensibly with a system message (its template's own default system prompt
# makes it ramble in French at temperature 0).
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1}


class City(BaseModel):
    city: str
    country: str


# --- the accumulator ------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "during", "after"])
def test_final_completion_equals_the_whole_answer(client: LlamaCppClient, when: str) -> None:
    whole = client.chat.completions.create(messages=MESSAGES, max_tokens=12, **GREEDY)
    stream = client.chat.completions.create(messages=MESSAGES, max_tokens=12, stream=True, **GREEDY)
    seen = []
    if when == "during":
        seen = [next(stream), next(stream)]
    elif when == "after":
        seen = list(stream)
    final = stream.get_final_completion()
    assert stream.closed
    assert isinstance(final, ChatCompletion)
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert final.usage is not None and whole.usage is not None
    assert final.usage.completion_tokens == whole.usage.completion_tokens == 12
    assert final.usage.prompt_tokens == whole.usage.prompt_tokens
    assert final.timings is not None and final.timings.predicted_n == 12
    assert final.id is not None and final.model == whole.model
    if when == "after":
        assert "".join(c.choices[0].delta.content or "" for c in seen) == (
            final.choices[0].message.content
        )
    assert stream.get_final_completion() == final  # again: the same, nothing re-read


async def test_async_final_completion(chat_server: ServerManager) -> None:
    async with AsyncLlamaCppClient(chat_server.url) as client:
        whole = await client.chat.completions.create(messages=MESSAGES, max_tokens=6, **GREEDY)
        stream = await client.chat.completions.create(
            messages=MESSAGES, max_tokens=6, stream=True, **GREEDY
        )
        await stream.__anext__()
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.usage is not None and final.usage.completion_tokens == 6


def test_final_completion_of_a_stream_closed_early_is_what_arrived(
    client: LlamaCppClient,
) -> None:
    stream = client.chat.completions.create(messages=MESSAGES, max_tokens=12, stream=True)
    first = [next(stream) for _ in range(3)]
    stream.close()
    final = stream.get_final_completion()
    text = "".join(c.choices[0].delta.content or "" for c in first)
    assert final.choices[0].message.content == text
    assert final.choices[0].finish_reason is None and final.usage is None


def test_only_chat_streams_have_a_final_completion(client: LlamaCppClient) -> None:
    stream = client.complete("Once", max_tokens=2, stream=True)
    with pytest.raises(TypeError, match="no final answer"):
        stream.get_final_completion()  # type: ignore[misc]


def _tool_delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}


def test_tool_calls_and_reasoning_are_merged_by_index() -> None:
    """Deltas as llama-server streams them for a template with tools and reasoning (the
    tiny and SmolLM2 templates have neither: a scripted server sends them)."""
    chunks = sse(
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Two cities; "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "look both up."}}]},
        _tool_delta(0, id="call_a", type="function", function={"name": "weather"}),
        _tool_delta(0, function={"arguments": '{"city": '}),
        _tool_delta(1, id="call_b", type="function", function={"name": "weather"}),
        _tool_delta(0, function={"arguments": '"Paris"}'}),
        _tool_delta(1, function={"arguments": '{"city": "Lyon"}'}),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 20}},
    )
    with FaultServer(Reply(chunks=chunks)) as server, LlamaCppClient(server.url) as client:
        stream = client.chat.completions.create(messages=MESSAGES, stream=True)
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.reasoning_content == "Two cities; look both up."
    assert message.content is None
    assert message.tool_calls is not None
    assert [(c["id"], c["function"]["name"]) for c in message.tool_calls] == [
        ("call_a", "weather"),
        ("call_b", "weather"),
    ]
    assert [json.loads(c["function"]["arguments"]) for c in message.tool_calls] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 20
    assert final.id == "c1" and final.model == "m"


# --- prompt-token counts ----------------------------------------------------------------


def test_count_tokens_is_what_a_generation_counts(client: LlamaCppClient) -> None:
    for messages in (MESSAGES, [SYSTEM, *MESSAGES, {"role": "assistant", "content": "A file."}]):
        counted = client.chat.completions.count_tokens(messages)
        reply = client.chat.completions.create(messages=messages, max_tokens=1)
        assert reply.usage is not None
        assert counted == reply.usage.prompt_tokens > 0
    longer = client.chat.completions.count_tokens([{"role": "user", "content": "GGUF " * 50}])
    assert longer > client.chat.completions.count_tokens(MESSAGES)


def test_count_tokens_checks_before_sending() -> None:
    with LlamaCppClient("http://127.0.0.1:9", max_retries=0) as client:
        with pytest.raises(TypeError, match="messages"):
            client.chat.completions.count_tokens("hello")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="tools"):
            client.chat.completions.count_tokens(MESSAGES, tools="weather")  # type: ignore[arg-type]


# --- structured outputs -----------------------------------------------------------------


def test_parse_refuses_what_is_not_a_model_class_before_sending() -> None:
    with LlamaCppClient("http://127.0.0.1:9", max_retries=0) as client:
        with pytest.raises(TypeError, match="pydantic model class"):
            client.chat.completions.parse(MESSAGES, response_format={"type": "json_object"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="drop grammar"):
            client.chat.completions.parse(MESSAGES, response_format=City, grammar="root ::= x")  # type: ignore[call-arg]


def _answer(content: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "c1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }


def test_parse_sends_the_models_schema_and_validates_the_answer() -> None:
    replies = [
        Reply(body=_answer('{"city": "Paris", "country": "France"}')),
        Reply(body=_answer('{"city": "Paris"}')),
    ]
    with FaultServer(replies) as server, LlamaCppClient(server.url) as client:
        completion = client.chat.completions.parse(MESSAGES, response_format=City, max_tokens=50)
        with pytest.raises(StructuredOutputError, match="does not validate against City") as bad:
            client.chat.completions.parse(MESSAGES, response_format=City)
    sent = server.requests[0].json()["response_format"]
    assert sent == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": City.model_json_schema(), "strict": True},
    }
    assert server.requests[0].json()["max_tokens"] == 50
    assert completion.choices[0].message.parsed == City(city="Paris", country="France")
    assert bad.value.finish_reason == "stop" and bad.value.content == '{"city": "Paris"}'
    assert len(server.requests) == 2  # a bad answer is not retried


def test_real_model_answers_paris(real_client: LlamaCppClient) -> None:
    reply = real_client.chat.completions.create(
        messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        **GREEDY,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"  # it ends by itself, before the cap


def test_real_model_parses_into_the_model(real_client: LlamaCppClient) -> None:
    completion = real_client.chat.completions.parse(
        [SYSTEM, {"role": "user", "content": "Give the capital of France as JSON."}],
        response_format=City,
        max_tokens=60,
        **GREEDY,
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City)
    assert city.city == "Paris"
    assert completion.choices[0].finish_reason == "stop"


def test_real_model_cut_by_max_tokens_is_a_clear_error(real_client: LlamaCppClient) -> None:
    with pytest.raises(StructuredOutputError, match="raise max_tokens") as caught:
        real_client.chat.completions.parse(
            [SYSTEM, {"role": "user", "content": "Give the capital of France as JSON."}],
            response_format=City,
            max_tokens=4,
            **GREEDY,
        )
    assert caught.value.finish_reason == "length"
    assert caught.value.content and caught.value.content.startswith("{")
    assert caught.value.__cause__ is not None  # the validation error


def test_real_model_stream_adds_up_to_the_whole_answer(real_client: LlamaCppClient) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Name three colours."}]
    whole = real_client.chat.completions.create(messages=messages, max_tokens=30, **GREEDY)
    stream = real_client.chat.completions.create(
        messages=messages, max_tokens=30, stream=True, **GREEDY
    )
    final = stream.get_final_completion()
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason
    assert real_client.chat.completions.count_tokens(messages) == (
        whole.usage.prompt_tokens if whole.usage else -1
    )


def test_tool_calls_are_typed_and_go_back_as_sent() -> None:
    """One call with a tool call (as llama-server answers for a template with tools), then
    the conversation continued with the typed message and the tool's result."""
    answer = _answer("", "tool_calls")
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    with FaultServer([Reply(body=answer), Reply(body=_answer("Sunny."))]) as server:
        with LlamaCppClient(server.url) as client:
            first = client.chat.completions.create(messages=MESSAGES)
            message = first.choices[0].message
            [call] = message.tool_calls or []
            assert (call.id, call.function.name) == ("call_a", "weather")
            assert json.loads(call.function.arguments or "") == {"city": "Paris"}
            assert call["function"]["name"] == "weather"  # dict-style, as before typing
            follow = [
                *MESSAGES,
                {"role": "assistant", "content": None, "tool_calls": message.tool_calls},
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
            ]
            second = client.chat.completions.create(messages=follow)
    assert second.choices[0].message.content == "Sunny."
    sent = server.requests[1].json()["messages"][1]["tool_calls"]
    assert sent == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]


async def test_async_parse(real_server: ServerManager) -> None:
    async with AsyncLlamaCppClient(real_server.url) as client:
        completion = await client.chat.completions.parse(
            [SYSTEM, {"role": "user", "content": "Give the capital of France as JSON."}],
            response_format=City,
            max_tokens=60,
            **GREEDY,
        )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.city == "Paris"
