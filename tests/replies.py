"""Answers a hostile server gives where a real one would answer: the shapes, kept in one
place."""

from __future__ import annotations

from typing import Any

#: A whole chat completion of one token, "ok".
CHAT: dict[str, Any] = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
