"""Argument checks that run before any byte is sent.

A bad argument costs the user a clear ``TypeError``/``ValueError`` naming the argument and
what to pass instead, rather than a 400 (or worse, a silently wrong generation) from the server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

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
    "check_json",
    "encode_json",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKEN_IDS = 1 << 20  # far beyond any context window; a longer list is a bug, not a prompt
MAX_TOKEN_ID = 2**31 - 1  # llama_token is an int32: a larger id would wrap around on the server


def _type_name(value: Any) -> str:
    return type(value).__name__


def _show_int(value: int) -> str:
    # str() of an int beyond 4300 digits raises; no message needs all those digits anyway
    return str(value) if value.bit_length() <= 128 else f"an int of {value.bit_length()} bits"


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
        raise ValueError(f"{name} must be >= {minimum}, got {_show_int(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_show_int(value)}")
    return value


def check_number(
    name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None
) -> float | None:
    """A finite int or float within bounds, or None (meaning: the server's default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {_type_name(value)} ({value!r})")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: the server would read infinity
        finite = False
    if not finite:
        shown = repr(value) if isinstance(value, float) else "an int too large for a float"
        raise ValueError(f"{name} must be a finite number, got {shown}")
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
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
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
            raise ValueError(f"{name}[{i}] must be a non-negative token id, got {_show_int(item)}")
        if item > MAX_TOKEN_ID:
            raise ValueError(
                f"{name}[{i}] is {_show_int(item)}, larger than any token id "
                f"(at most {MAX_TOKEN_ID})"
            )
    return list(value)


def check_messages(messages: Any) -> list[Mapping[str, Any]]:
    """Chat messages: a non-empty list of ``{"role": ..., "content": ...}`` mappings."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"not {_type_name(messages)}"
        )
    if not messages:
        raise ValueError(
            "messages must contain at least one message, "
            "e.g. [{'role': 'user', 'content': 'Hello'}]"
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TypeError(
                f"{where} must be a dict with 'role' and 'content', not {_type_name(message)}"
            )
        if "role" not in message:
            raise ValueError(f"{where} has no 'role'; add one of {sorted(ROLES)}")
        role = message["role"]
        if not isinstance(role, str):
            raise TypeError(f"{where}['role'] must be a str, not {_type_name(role)}")
        if role not in ROLES:
            raise ValueError(f"{where}['role'] is {role!r}; use one of {sorted(ROLES)}")
        has_tool_calls = role == "assistant" and bool(message.get("tool_calls"))
        if "content" not in message:
            if has_tool_calls:  # OpenAI and llama.cpp allow it: the calls are the content
                continue
            raise ValueError(f"{where} has no 'content'; add its text as 'content': '...'")
        content = message["content"]
        if content is None:
            if not has_tool_calls:
                raise ValueError(
                    f"{where}['content'] is None; pass the text as a str "
                    "(only an assistant message with tool_calls may omit it)"
                )
        elif isinstance(content, str):
            _check_utf8(f"{where}['content']", content)
        elif isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
            for j, part in enumerate(content):
                _check_part(f"{where}['content'][{j}]", part)
        else:
            raise TypeError(
                f"{where}['content'] must be a str or a list of content parts, "
                f"not {_type_name(content)}"
            )
    return list(messages)


def _check_part(where: str, part: Any) -> None:
    """One content part: ``{"type": "text", "text": ...}``, ``{"type": "image_url", ...}``, ..."""
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise TypeError(
            f"{where} must be a dict with a 'type' (e.g. {{'type': 'text', 'text': ...}})"
        )
    if part["type"] == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise TypeError(f"{where}['text'] must be a str, not {_type_name(text)}")
        _check_utf8(f"{where}['text']", text)


def _check_utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} is not valid UTF-8 text (character {exc.start}: {value[exc.start]!r}); "
            "decode bytes with errors='replace' before sending"
        ) from None


def _find_unencodable(
    value: Any, where: str, parents: tuple[int, ...] = ()
) -> tuple[type[Exception], str] | None:
    """Where a value JSON cannot carry hides in ``value``, and what to say about it."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return ValueError, (
            f"{where} is {value!r}, which JSON cannot carry (NaN or infinity); pass a finite number"
        )
    if isinstance(value, str):
        try:
            _check_utf8(where, value)
        except ValueError as exc:
            return ValueError, str(exc)
        return None
    if id(value) in parents:
        return ValueError, f"{where} contains itself (a circular reference); JSON cannot carry it"
    if isinstance(value, dict):
        inner = (*parents, id(value))
        for key, item in value.items():
            if key is not None and not isinstance(key, (str, int, float, bool)):
                return TypeError, (
                    f"{where} has a key of type {_type_name(key)} ({key!r}); "
                    "JSON object keys must be str"
                )
            problem = _find_unencodable(key, f"{where} key {key!r}", inner)
            if problem is None:
                problem = _find_unencodable(item, f"{where}[{key!r}]", inner)
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        inner = (*parents, id(value))
        for i, item in enumerate(value):
            problem = _find_unencodable(item, f"{where}[{i}]", inner)
            if problem is not None:
                return problem
        return None
    if isinstance(value, BaseModel):
        return _find_unencodable(_model_as_json(value), where, parents)
    return TypeError, (
        f"{where} has type {_type_name(value)}, which JSON cannot carry; "
        "pass a str, number, bool, None, list or dict"
    )


def _model_as_json(value: Any) -> Any:
    """A typed answer's part sent back (``message.tool_calls`` in the next request's
    messages) goes as the JSON it came as."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    return json.dumps(
        value,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
        default=_model_as_json,
    )


def check_json(name: str, value: Any) -> Any:
    """A value that will go into a request body as is: refuse what JSON cannot carry,
    naming where it is (``name['key'][0]``)."""
    try:
        _dumps(value).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        problem = _find_unencodable(value, name) if not isinstance(exc, RecursionError) else None
        if problem is None:
            raise ValueError(f"{name} cannot be sent as JSON: {exc}") from None
        raise problem[0](problem[1]) from None
    return value


def encode_json(body: Any) -> bytes:
    """Serialize a request body strictly: no NaN/inf, no lone surrogates, no unknown types.

    The error names the field at fault (``messages[0]['content']``, ``tools[1]``, ...).
    """
    try:
        return _dumps(body).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        failure = exc
    problem = None
    if isinstance(body, dict) and not isinstance(failure, RecursionError):
        for key, item in body.items():
            problem = _find_unencodable(item, str(key), (id(body),))
            if problem is not None:
                break
    elif not isinstance(failure, RecursionError):
        problem = _find_unencodable(body, "request body")
    if problem is not None:
        raise problem[0](f"request field {problem[1]}") from None
    if isinstance(failure, TypeError):
        raise TypeError(
            f"request contains a value that is not JSON-serializable: {failure}"
        ) from None
    raise ValueError(f"request cannot be sent as JSON: {failure}") from None
