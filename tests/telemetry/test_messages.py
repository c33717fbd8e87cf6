"""Captured content in the GenAI conventions' message shape: every kind of request and
response llama-server deals in, and the size bound that keeps the JSON parseable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api._types import ChatCompletion, Completion
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedLlamaCppClient
from llamatelemetry.telemetry._messages import (
    MAX_CONTENT_CHARS,
    _fitting,
    input_messages,
    output_messages,
    stream_output_messages,
    tool_definitions,
)


def _in(body: Any) -> Any:
    text = input_messages(body)
    return None if text is None else json.loads(text)


def test_chat_history_with_tools_becomes_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Oslo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4 C, rain"},
        ]
    }
    assert _in(body) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {
            "role": "user",
            "parts": [{"type": "text", "content": "Weather in Oslo?"}, {"type": "image_url"}],
        },  # the payload is not copied
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "weather",
                    "arguments": {"city": "Oslo"},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "4 C, rain"}],
        },
    ]


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("Once upon", [{"type": "text", "content": "Once upon"}]),
        (["a", "b"], [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]),
        ([1, 2, 3], [{"type": "tokens", "content": [1, 2, 3]}]),
    ],
)
def test_a_completion_prompt_is_one_user_message(prompt: Any, parts: Any) -> None:
    assert _in({"prompt": prompt, "n_predict": 4}) == [{"role": "user", "parts": parts}]


def test_bodies_without_content_capture_nothing() -> None:
    assert _in({"content": "tokenize me"}) is None
    assert _in(None) is None


def test_chat_outputs_one_message_per_choice_with_its_finish_reason() -> None:
    response = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": "Rain.",
                        "reasoning_content": "Oslo...",
                    },
                },
                {
                    "index": 1,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c2",
                                "type": "function",
                                "function": {"name": "weather", "arguments": "not json"},
                            }
                        ],
                    },
                },
            ]
        }
    )
    assert json.loads(output_messages(response) or "") == [
        {
            "role": "assistant",
            "finish_reason": "stop",
            "parts": [
                {"type": "reasoning", "content": "Oslo..."},
                {"type": "text", "content": "Rain."},
            ],
        },
        {
            "role": "assistant",
            "finish_reason": "tool_call",
            "parts": [
                {"type": "tool_call", "id": "c2", "name": "weather", "arguments": "not json"}
            ],
        },
    ]


def test_completion_outputs_their_text() -> None:
    response = Completion.model_validate(
        {"choices": [{"index": 0, "text": " a time", "finish_reason": "length"}]}
    )
    assert json.loads(output_messages(response) or "") == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": " a time"}],
            "finish_reason": "length",
        }
    ]


@pytest.mark.parametrize(
    ("reasons", "failed", "expected"),
    [
        (["stop"], False, "stop"),
        ([], False, ""),
        ([], True, "error"),
        (["tool_calls"], False, "tool_call"),
    ],
)
def test_stream_outputs(reasons: list[str], failed: bool, expected: str) -> None:
    assert json.loads(stream_output_messages("Hi", reasons, failed)) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hi"}],
            "finish_reason": expected,
        }
    ]


def test_long_content_is_shortened_and_still_parses() -> None:
    long_text = "x" * (3 * MAX_CONTENT_CHARS)
    body = {
        "messages": [{"role": "user", "content": "short"}, {"role": "user", "content": long_text}]
    }
    text = input_messages(body) or ""
    assert len(text) <= MAX_CONTENT_CHARS
    messages = json.loads(text)
    assert messages[0]["parts"][0]["content"] == "short"
    kept = messages[1]["parts"][0]["content"]
    assert kept.endswith("…") and long_text.startswith(kept[:-1]) and len(kept) > 1000


def test_too_many_messages_keep_the_newest() -> None:
    body = {
        "messages": [{"role": "user", "content": f"message {i} " + "y" * 200} for i in range(2000)]
    }
    messages = json.loads(input_messages(body) or "")
    assert len(input_messages(body) or "") <= MAX_CONTENT_CHARS
    assert 0 < len(messages) < 2000
    assert messages[-1]["parts"][0]["content"].startswith("message 1999 ")


def test_native_completion_capture_against_the_server(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    with InstrumentedLlamaCppClient(
        chat_server.url,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=True,
    ) as client:
        result = client.complete("Once upon a time", max_tokens=3)
    [span] = span_exporter.get_finished_spans()
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Once upon a time"}]}
    ]
    [output] = json.loads(span.attributes["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": result.content}]
    assert output["finish_reason"] == span.attributes["gen_ai.response.finish_reasons"][0]


@pytest.mark.parametrize(
    ("size", "count"),
    [(1, 1), (1, 300), (70, 2), (70, 300), (150, 3), (150, 300), (5000, 3), (5000, 40),
     (8000, 2), (MAX_CONTENT_CHARS, 1), (MAX_CONTENT_CHARS, 2), (MAX_CONTENT_CHARS, 3)],
)  # fmt: skip
def test_the_messages_and_tools_kept_are_those_dropping_one_at_a_time_keeps(
    size: int, count: int
) -> None:
    """Kept: the newest messages (the first tools) whose JSON fits, as leaving the oldest
    out one at a time and serializing again would keep, without the seconds that takes."""
    texts = [f"{i}:" + "é" * (size - 2 + i % 7) for i in range(count)]
    items = [{"role": "user", "parts": [{"type": "text", "content": t}]} for t in texts]

    def slow(items: list[Any]) -> int:
        k = len(items)
        while (
            k > 1
            and len(json.dumps(items[len(items) - k :], ensure_ascii=False)) > MAX_CONTENT_CHARS
        ):
            k -= 1
        return k

    assert _fitting(items) == slow(items)
    assert _fitting(items[::-1]) == slow(items[::-1])
    body = {"messages": [{"role": "user", "content": t} for t in texts]}
    shown = input_messages(body) or "[]"
    assert len(shown) <= MAX_CONTENT_CHARS
    kept = json.loads(shown)
    assert not kept or kept[-1]["parts"][0]["content"].startswith(f"{count - 1}:")
    tools = [{"type": "function", "function": {"name": f"t{i}", "description": t}}
             for i, t in enumerate(texts)]  # fmt: skip
    first = tools[: slow(tools[::-1])]
    fits = len(json.dumps(first, ensure_ascii=False)) <= MAX_CONTENT_CHARS
    assert json.loads(tool_definitions({"tools": tools}) or "[]") == (first if fits else [])
