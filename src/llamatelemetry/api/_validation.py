"""Argument checks that run before any byte is sent.

A bad argument costs the user a clear ``TypeError``/``ValueError`` naming the argument and
what to pass instead, rather than a 400 (or worse, a silently wrong generation) from the server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ROLES",
    "MAX_TOKEN_IDS",
    "check_messages",
    "check_int",
    "check_number",
    "check_text",
    "check_texts",
    "check_stop",
    "check_token_ids",
    "check_bool",
    "encode_json",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKEN_IDS = 1 << 20  # far beyond any context window; a longer list is a bug, not a prompt


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {_type_name(value)}")
    return value


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """An int within bounds, or None (meaning: the server's default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {_type_name(value)} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(
    name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None
) -> float | None:
    """A finite int or float within bounds, or None (meaning: the server's default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {_type_name(value)} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_text(name: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {_type_name(value)}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty")
    _check_utf8(name, value)
    return value


def check_texts(name: str, value: Any, *, allow_empty_items: bool = False) -> list[str]:
    """A non-empty list of strings (a bare str is refused: it would be split into characters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of str, not {_type_name(value)}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    for i, item in enumerate(value):
        check_text(f"{name}[{i}]", item, allow_empty=allow_empty_items)
    return list(value)


def check_stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise TypeError(f"stop must be a str or a list of str, not {_type_name(value)}")
    for i, item in enumerate(value):
        check_text(f"stop[{i}]", item)
    return list(value)


def check_token_ids(name: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of int token ids, not {_type_name(value)}")
    if len(value) > MAX_TOKEN_IDS:
        raise ValueError(f"{name} has {len(value)} ids; at most {MAX_TOKEN_IDS} are accepted")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{name}[{i}] must be an int token id, not {_type_name(item)}")
        if item < 0:
            raise ValueError(f"{name}[{i}] must be a non-negative token id, got {item}")
    return list(value)


def check_messages(messages: Any) -> list[Mapping[str, Any]]:
    """Chat messages: a non-empty list of ``{"role": ..., "content": ...}`` mappings."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"not {_type_name(messages)}"
        )
    if not messages:
        raise ValueError("messages must contain at least one message")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TypeError(f"{where} must be a dict with 'role' and 'content', "
                            f"not {_type_name(message)}")
        role = message.get("role")
        if not isinstance(role, str):
            raise TypeError(f"{where}['role'] must be a str, not {_type_name(role)}")
        if role not in ROLES:
            raise ValueError(f"{where}['role'] is {role!r}; use one of {sorted(ROLES)}")
        if "content" not in message:
            raise ValueError(f"{where} has no 'content'")
        content = message["content"]
        if content is None:
            if role != "assistant" or not message.get("tool_calls"):
                raise ValueError(f"{where}['content'] is None; only an assistant message "
                                 "with tool_calls may omit its content")
        elif isinstance(content, str):
            _check_utf8(f"{where}['content']", content)
        elif isinstance(content, Sequence) and not isinstance(content, bytes):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or "type" not in part:
                    raise TypeError(f"{where}['content'][{j}] must be a dict with a 'type' "
                                    "(e.g. {'type': 'text', 'text': ...})")
        else:
            raise TypeError(f"{where}['content'] must be a str or a list of content parts, "
                            f"not {_type_name(content)}")
    return list(messages)


def _check_utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} is not valid UTF-8 text (character {exc.start}: {value[exc.start]!r}); "
            "decode bytes with errors='replace' before sending"
        ) from None


def encode_json(body: Any) -> bytes:
    """Serialize a request body strictly: no NaN/inf, no lone surrogates, no unknown types."""
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"request contains a value JSON cannot carry (NaN or infinity): {exc}") from None
    except TypeError as exc:
        raise TypeError(f"request contains a value that is not JSON-serializable: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"request contains text that is not valid UTF-8 ({text[exc.start]!r}); "
            "decode bytes with errors='replace' before sending"
        ) from None
