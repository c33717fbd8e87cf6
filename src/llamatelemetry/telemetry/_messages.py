"""Captured message content in the GenAI conventions' shape (opt-in only).

``gen_ai.input.messages`` and ``gen_ai.output.messages`` are JSON arrays of
``{"role", "parts": [...]}`` messages (outputs add ``finish_reason``), whose parts are
``text``, ``tool_call`` and ``tool_call_response`` (``reasoning`` for a model's thoughts),
so a GenAI-aware backend can render them. The OpenAI-style requests and responses of
llama-server are translated here; other part kinds pass through under their own type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_CONTENT_CHARS",
    "input_messages",
    "output_messages",
    "stream_output_messages",
    "system_instructions",
    "tool_definitions",
]

MAX_CONTENT_CHARS = 16_384
_TRUNCATED = "…"
# Part fields that hold free text, shortened (never cut mid-JSON) when a value is too long.
_TEXT_FIELDS = ("content", "response", "arguments")

Message = dict[str, Any]


def input_messages(body: Any) -> str | None:
    """The request's messages (chat) or prompt (completion, infill), or None."""
    if not isinstance(body, Mapping):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) and isinstance(body.get("input"), list):
        messages = body["input"]  # the Responses API's input items
    if isinstance(messages, list):
        return _bounded([_chat_message(m) for m in messages if isinstance(m, Mapping)])
    prompt = body.get("prompt", body.get("input"))
    if prompt is None:
        return None
    return _bounded([{"role": "user", "parts": _prompt_parts(prompt)}])


def system_instructions(body: Any) -> str | None:
    """Instructions given apart from the chat history (the Responses API's
    ``instructions``, the Messages API's ``system``), as the conventions' parts. System
    messages *in* the history stay in ``gen_ai.input.messages``, as the conventions say."""
    if not isinstance(body, Mapping):
        return None
    for key in ("instructions", "system"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return _bounded_parts(_text_parts(value))
        if isinstance(value, list) and value:
            return _bounded_parts(_content_parts(value))
    return None


def tool_definitions(body: Any) -> str | None:
    """The request's ``tools``, as sent (a JSON array of tool definitions)."""
    if not isinstance(body, Mapping):
        return None
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    text = _dumps(tools)
    if len(text) > MAX_CONTENT_CHARS:  # the first tools, whole
        text = _dumps(tools[: _fitting(tools[::-1])])
    return text if len(text) <= MAX_CONTENT_CHARS else "[]"


def output_messages(result: Any) -> str | None:
    """One output message per choice of a typed response (or the text of a native one)."""
    choices = getattr(result, "choices", None)
    if choices:
        out = []
        for choice in choices:
            message = getattr(choice, "message", None)
            if message is not None:
                parts = _text_parts(getattr(message, "reasoning_content", None), "reasoning")
                parts += _text_parts(message.content)
                parts += [_tool_call(call) for call in message.tool_calls or ()]
            else:
                parts = _text_parts(getattr(choice, "text", None))
            out.append(
                {
                    "role": "assistant",
                    "parts": parts,
                    "finish_reason": _finish_reason(choice.finish_reason),
                }
            )
        return _bounded(out)
    content = getattr(result, "content", None)
    for name in ("output_text", "text"):  # a Response, a Message
        if not isinstance(content, str) and isinstance(getattr(result, name, None), str):
            content = getattr(result, name)
    if isinstance(content, str):
        return _bounded(
            [
                {
                    "role": "assistant",
                    "parts": _text_parts(content),
                    "finish_reason": _finish_reason(getattr(result, "finish_reason", None)),
                }
            ]
        )
    return None


def stream_output_messages(text: str, reasons: list[str], failed: bool) -> str:
    """A stream's one message, from the text it yielded; a stream left before its end has
    no finish reason (``""``), one that failed has ``"error"``."""
    reason = _finish_reason(reasons[0]) if reasons else ("error" if failed else "")
    return _bounded([{"role": "assistant", "parts": _text_parts(text), "finish_reason": reason}])


def _chat_message(message: Mapping[str, Any]) -> Message:
    role = message.get("role") or "user"
    content = message.get("content")
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}
        ]
    else:
        parts = _content_parts(content)
    parts += [
        _tool_call(call) for call in message.get("tool_calls") or () if isinstance(call, Mapping)
    ]
    return {"role": role, "parts": parts}


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content)
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": part.get("text")})
        elif isinstance(part, Mapping):
            # image_url, input_audio, ...: named, but their payload (often base64) is not
            # copied into a span
            parts.append({"type": str(part.get("type"))})
        else:
            parts.extend(_text_parts(part))
    return parts


def _prompt_parts(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [{"type": "tokens", "content": prompt}]  # a prompt given as token ids
    if isinstance(prompt, list):
        return [part for item in prompt for part in _prompt_parts(item)]
    return _text_parts(prompt)


def _text_parts(text: Any, kind: str = "text") -> list[dict[str, Any]]:
    if text is None or text == "":
        return []
    return [{"type": kind, "content": text if isinstance(text, str) else str(text)}]


def _tool_call(call: Any) -> dict[str, Any]:
    """From a request's dict or a typed ``ToolCall`` (both answer ``.get``)."""
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # kept as the text the model produced
    return {
        "type": "tool_call",
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": arguments,
    }


def _finish_reason(reason: Any) -> str:
    if not reason:
        return ""
    return "tool_call" if reason == "tool_calls" else str(reason)


def _bounded_parts(parts: list[dict[str, Any]]) -> str:
    """Parts (not messages) within ``MAX_CONTENT_CHARS``, shortened as messages are."""
    messages = json.loads(_bounded([{"role": "system", "parts": parts}]))
    return _dumps(messages[0]["parts"] if messages else [])


def _dumps(messages: list[Any]) -> str:
    return json.dumps(messages, ensure_ascii=False, default=str)


def _bounded(messages: list[Message]) -> str:
    """JSON within ``MAX_CONTENT_CHARS`` that still parses: long texts are shortened first,
    then the oldest messages are left out."""
    text = _dumps(messages)
    if len(text) <= MAX_CONTENT_CHARS:
        return text
    fields = [
        (part, key)
        for message in messages
        for part in message["parts"]
        for key in _TEXT_FIELDS
        if isinstance(part.get(key), str)
    ]
    budget = max(64, MAX_CONTENT_CHARS // (2 * max(1, len(fields))))
    for part, key in fields:
        if len(part[key]) > budget:
            part[key] = part[key][:budget] + _TRUNCATED
    text = _dumps(messages)
    if len(text) > MAX_CONTENT_CHARS:  # the newest messages that fit, whole
        text = _dumps(messages[len(messages) - _fitting(messages) :])
    return text if len(text) <= MAX_CONTENT_CHARS else "[]"


def _fitting(items: list[Any]) -> int:
    """How many of ``items``, taken from the end, fit in ``MAX_CONTENT_CHARS`` as one JSON
    array (at least one): each is serialized once, where leaving them out one at a time
    and serializing the rest again would take seconds for a long conversation. The
    array's length is exact: ``[`` + the items joined by ``, `` + ``]``."""
    length, count = 2, 0
    for item in reversed(items):
        length += len(_dumps(item)) + (2 if count else 0)
        if length > MAX_CONTENT_CHARS and count:
            break
        count += 1
    return count
