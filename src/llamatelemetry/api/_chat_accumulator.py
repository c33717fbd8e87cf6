"""What a chat stream's chunks add up to: the ``ChatCompletion`` a non-streamed call would
have returned. Merged as the chunks are handed out (a few attribute reads per chunk; the
text kept as its pieces and joined once), so it is there whenever it is asked for."""

from __future__ import annotations

from typing import Any

from ._types import ChatCompletion, ChatCompletionChunk, Timings, ToolCall, Usage

__all__ = ["ChatAccumulator"]


class _ChoiceState:
    __slots__ = ("role", "content", "reasoning", "tools", "finish_reason", "logprobs")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.logprobs: list[Any] = []


def _merge_tool_call(tools: dict[int, dict[str, Any]], delta: ToolCall) -> None:
    """A streamed tool call arrives in pieces sharing an ``index``: its id, type and name
    once, its arguments as fragments of one JSON text."""
    index = len(tools) if delta.index is None else delta.index
    call = tools.setdefault(
        index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if delta.id:
        call["id"] = delta.id
    if delta.type:
        call["type"] = delta.type
    if delta.function.name:
        call["function"]["name"] += delta.function.name
    if delta.function.arguments:
        call["function"]["arguments"] += delta.function.arguments


class ChatAccumulator:
    """Folds chat chunks into one completion (content, ``reasoning_content``, tool calls
    merged by index, finish reasons, usage, timings, ids)."""

    __slots__ = ("_choices", "_first", "_usage", "_timings")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._first: ChatCompletionChunk | None = None
        self._usage: Usage | None = None
        self._timings: Timings | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        if self._first is None:
            self._first = chunk
        for choice in chunk.choices:
            state = self._choices.get(choice.index)
            if state is None:
                state = self._choices[choice.index] = _ChoiceState()
            delta = choice.delta
            if delta.content:
                state.content.append(delta.content)
            if delta.reasoning_content:
                state.reasoning.append(delta.reasoning_content)
            if delta.tool_calls:
                for call in delta.tool_calls:
                    _merge_tool_call(state.tools, call)
            if delta.role:
                state.role = delta.role
            if choice.finish_reason:
                state.finish_reason = choice.finish_reason
            if choice.logprobs:
                state.logprobs.append(choice.logprobs)
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.timings is not None:
            self._timings = chunk.timings

    def completion(self) -> ChatCompletion:
        first = self._first
        choices = [
            {
                "index": index,
                "message": {
                    "role": state.role,
                    "content": "".join(state.content) if state.content else None,
                    "reasoning_content": "".join(state.reasoning) if state.reasoning else None,
                    "tool_calls": [state.tools[i] for i in sorted(state.tools)] or None,
                },
                "finish_reason": state.finish_reason,
                "logprobs": state.logprobs or None,
            }
            for index, state in sorted(self._choices.items())
        ]
        return ChatCompletion.model_validate(
            {
                "id": None if first is None else first.id,
                "created": None if first is None else first.created,
                "model": None if first is None else first.model,
                "system_fingerprint": None if first is None else first.system_fingerprint,
                "choices": choices,
                "usage": self._usage,
                "timings": self._timings,
            }
        )
