"""The two other wire protocols llama-server speaks besides OpenAI's chat: OpenAI's
Responses API (``/v1/responses``) and Anthropic's Messages API (``/v1/messages``).

Typed as the server sends them (measured on llama.cpp's server), every model with
``extra="allow"`` so a field the server adds is kept. Streamed, each is a sequence of typed
events (``type`` names it) whose last one is ``response.completed`` (or ``.failed``,
``.incomplete``) and ``message_stop``; the accumulators fold them into the whole answer.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from ._api_errors import APIResponseError
from ._types import BaseType, Timings

__all__ = [
    "Response",
    "ResponseContent",
    "ResponseOutputItem",
    "ResponseStreamEvent",
    "ResponseUsage",
    "ResponseAccumulator",
    "RESPONSE_LAST_EVENTS",
    "Message",
    "MessageContentBlock",
    "MessageStreamEvent",
    "MessageUsage",
    "MessageAccumulator",
    "MESSAGE_LAST_EVENTS",
]

RESPONSE_LAST_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
MESSAGE_LAST_EVENTS = frozenset({"message_stop"})


# --- OpenAI's Responses API -----------------------------------------------------------


class ResponseContent(BaseType):
    type: str = "output_text"
    text: str | None = None
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class ResponseOutputItem(BaseType):
    """One item of a response's ``output``: a ``message`` (its ``content`` parts), a
    ``reasoning`` item, or a ``function_call`` (``name``, ``arguments``, ``call_id``)."""

    type: str = "message"
    id: str | None = None
    status: str | None = None
    role: str | None = None
    content: list[ResponseContent] | None = None
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None


class InputTokensDetails(BaseType):
    cached_tokens: int | None = None


class OutputTokensDetails(BaseType):
    reasoning_tokens: int | None = None


class ResponseUsage(BaseType):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: InputTokensDetails | None = None
    output_tokens_details: OutputTokensDetails | None = None


class Response(BaseType):
    id: str | None = None
    object: str = "response"
    created_at: int | None = None
    completed_at: int | None = None
    status: str | None = None
    model: str | None = None
    output: list[ResponseOutputItem] = []
    usage: ResponseUsage | None = None
    incomplete_details: dict[str, Any] | None = None
    error: Any = None
    timings: Timings | None = None

    @property
    def output_text(self) -> str:
        """The text of every ``output_text`` part of the output's messages, joined."""
        return "".join(
            part.text or ""
            for item in self.output
            if item.type == "message"
            for part in item.content or ()
            if part.type == "output_text"
        )

    @property
    def finish_reason(self) -> str | None:
        """Why generation ended, in chat's words: "stop", "length" (an incomplete response
        cut by max_output_tokens) or the status otherwise."""
        if self.status == "completed":
            return "stop"
        if self.status == "incomplete":
            reason = (self.incomplete_details or {}).get("reason")
            return "length" if reason == "max_output_tokens" else str(reason or "incomplete")
        return self.status


class ResponseStreamEvent(BaseType):
    """One event of a streamed response: ``type`` names it (``response.created``,
    ``response.output_text.delta`` with its ``delta``, ..., ``response.completed`` with the
    whole ``response``)."""

    type: str
    sequence_number: int | None = None
    response: Response | None = None
    item_id: str | None = None
    output_index: int | None = None
    content_index: int | None = None
    delta: str | None = None
    text: str | None = None
    item: ResponseOutputItem | None = None
    timings: Timings | None = None


class ResponseAccumulator:
    """The whole response a stream adds up to: the one ``response.completed`` carries (with
    the timings llama-server sends beside it), else what the deltas gave."""

    __slots__ = ("_final", "_text", "_first")

    def __init__(self) -> None:
        self._final: Response | None = None
        self._first: Response | None = None
        self._text: list[str] = []

    def add(self, event: ResponseStreamEvent) -> None:
        if event.type == "response.output_text.delta" and event.delta:
            self._text.append(event.delta)
        elif event.response is not None:
            if self._first is None:
                self._first = event.response
            if event.type in RESPONSE_LAST_EVENTS:
                final = event.response
                if final.timings is None and event.timings is not None:
                    final = final.model_copy(update={"timings": event.timings})
                self._final = final

    def completion(self) -> Response:
        if self._final is not None:
            return self._final
        text = "".join(self._text)
        first = self._first
        return Response.model_validate(
            {
                "id": None if first is None else first.id,
                "model": None if first is None else first.model,
                "status": "in_progress",
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }
                ]
                if text
                else [],
            }
        )


# --- Anthropic's Messages API ---------------------------------------------------------


class MessageContentBlock(BaseType):
    """A ``text`` block (``text``), a ``thinking`` block (``thinking``) or a ``tool_use``
    block (``id``, ``name``, ``input``)."""

    type: str = "text"
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class MessageUsage(BaseType):
    """Anthropic's counts: ``input_tokens`` leaves out what the cache served
    (``cache_read_input_tokens``); ``prompt_tokens`` is both."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return (
            self.input_tokens
            + (self.cache_read_input_tokens or 0)
            + (self.cache_creation_input_tokens or 0)
        )


class Message(BaseType):
    id: str | None = None
    type: str = "message"
    role: str = "assistant"
    content: list[MessageContentBlock] = []
    model: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: MessageUsage | None = None
    timings: Timings | None = None

    @property
    def text(self) -> str:
        """The text of every ``text`` block, joined."""
        return "".join(block.text or "" for block in self.content if block.type == "text")

    @property
    def finish_reason(self) -> str | None:
        """``stop_reason`` in chat's words: "stop", "length", "tool_calls" (or as sent)."""
        return _STOP_REASONS.get(self.stop_reason or "", self.stop_reason)


_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class MessageStreamEvent(BaseType):
    """One event of a streamed message: ``message_start`` (the ``message``),
    ``content_block_start``/``_delta``/``_stop`` (``index``, ``content_block``, ``delta``),
    ``message_delta`` (``delta.stop_reason``, ``usage``), ``message_stop``."""

    type: str
    message: Message | None = None
    index: int | None = None
    content_block: MessageContentBlock | None = None
    delta: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    timings: Timings | None = None


class MessageAccumulator:
    """The whole message a stream adds up to: ``message_start``'s message, each block's
    deltas joined (text, thinking, a tool's input JSON), ``message_delta``'s stop reason
    and the counts its usage sends (a null count keeps the earlier one)."""

    __slots__ = ("_message", "_blocks", "_stop_reason", "_stop_sequence", "_usage", "_timings")

    def __init__(self) -> None:
        self._message: Message | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] = {}
        self._timings: Timings | None = None

    def add(self, event: MessageStreamEvent) -> None:
        kind = event.type
        if kind == "content_block_delta" and event.delta is not None:
            block = self._blocks.setdefault(event.index or 0, {"type": "text", "pieces": []})
            piece = event.delta.get("text") or event.delta.get("thinking")
            if piece is None:
                piece = event.delta.get("partial_json")
            if piece and not isinstance(piece, str):
                raise _malformed(f"a content_block_delta carries {piece!r}, not text")
            if piece:
                block["pieces"].append(piece)
        elif kind == "content_block_start" and event.content_block is not None:
            # A delta that came before its block's start keeps its text.
            index = event.index or 0
            earlier = self._blocks.get(index, {}).get("pieces", [])
            self._blocks[index] = {
                **event.content_block.model_dump(exclude_none=True),
                "pieces": earlier,
            }
        elif kind == "message_start" and event.message is not None:
            self._message = event.message
            if event.message.usage is not None:
                self._usage.update(event.message.usage.model_dump(exclude_none=True))
        elif kind == "message_delta":
            delta = event.delta or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._stop_sequence = delta.get("stop_sequence") or self._stop_sequence
            # Anthropic's delta usage has nullable counts: a null says nothing new, so
            # it keeps what message_start said (which dropped its nulls alike).
            sent = {k: v for k, v in (event.usage or {}).items() if v is not None}
            usage = {**self._usage, **sent}
            try:
                MessageUsage.model_validate(usage)
            except ValidationError as exc:
                raise _malformed(f"a message_delta's usage is not counts: {exc}") from None
            self._usage = usage
        if event.timings is not None:
            self._timings = event.timings

    def completion(self) -> Message:
        blocks = []
        for _, kept in sorted(self._blocks.items()):
            block = dict(kept)
            text = "".join(block.pop("pieces"))
            kind = block.get("type", "text")
            if kind == "tool_use":
                block["input"] = _json_or_text(text) if text else block.get("input")
            elif kind == "thinking":
                block["thinking"] = (block.get("thinking") or "") + text
            else:
                block["text"] = (block.get("text") or "") + text
            blocks.append(block)
        base = self._message.model_dump(exclude_none=True) if self._message else {}
        return Message.model_validate(
            {
                **base,
                "content": blocks,
                "stop_reason": self._stop_reason,
                "stop_sequence": self._stop_sequence,
                "usage": self._usage or None,
                "timings": self._timings,
            }
        )


def _malformed(what: str) -> APIResponseError:
    return APIResponseError(f"malformed message event from the server: {what}")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
