"""What an HTTP answer becomes: the parsed result of a success, or the error of a failure
(with the server's own message and its retry advice)."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from ._api_errors import APIResponseError, APIStatusError, status_error
from ._calls_and_callers import Call

__all__ = ["answer_error", "not_a_stream", "parse_answer"]

T = TypeVar("T")


def not_a_stream(call: Call[Any], response: httpx.Response) -> APIResponseError | None:
    """A 200 to a streaming request that is not an event stream (a server that ignored
    ``stream``, a proxy's page) is a wrong answer, not a broken connection."""
    kind = response.headers.get("content-type", "")
    if "text/event-stream" in kind:
        return None
    return APIResponseError(
        f"{call.method} {call.path} asked for a stream but the server answered "
        f"{response.status_code} with {kind or 'no content type'}, not text/event-stream",
        status_code=response.status_code,
        method=call.method,
        url=str(response.request.url),
    )


def answer_error(response: httpx.Response, body: bytes) -> APIStatusError:
    message, type_, parsed = _error_details(response, body)
    request = response.request
    return status_error(
        response.status_code,
        message,
        type_,
        parsed,
        method=request.method,
        url=str(request.url),
        retry_after=_retry_after(response.headers),
    )


def parse_answer(call: Call[T], response: httpx.Response, body: bytes) -> T:
    try:
        if call.text:
            data: Any = body.decode(response.encoding or "utf-8", errors="replace")
        else:
            data = json.loads(body)
    except (ValueError, RecursionError):
        kind = response.headers.get("content-type", "no content type")
        raise APIResponseError(
            f"{call.method} {call.path} answered {response.status_code} with {kind}, "
            f"not JSON: {_excerpt(body)!r}",
            status_code=response.status_code,
            body=_excerpt(body),
            method=call.method,
            url=str(response.request.url),
        ) from None
    try:
        return call.parse(data)
    except (
        ValidationError,
        LookupError,
        TypeError,
        ValueError,
        AttributeError,
        ArithmeticError,
    ) as exc:
        raise APIResponseError(
            f"{call.method} {call.path} answered with an unexpected shape: {exc}",
            status_code=response.status_code,
            body=data,
            method=call.method,
            url=str(response.request.url),
        ) from None


def _retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        try:
            return float(email.utils.mktime_tz(parsed) - time.time())
        except (ValueError, OverflowError):  # a date out of any range: no usable advice
            return None


def _excerpt(body: bytes, limit: int = 500) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > limit else "")


def _error_details(response: httpx.Response, body: bytes) -> tuple[str, str | None, Any]:
    """The server's own message and type, from llama.cpp's ``{"error": {...}}`` or whatever
    a proxy in between sent (plain text, an HTML page). The message always says something:
    where the server said nothing (``{"error": ""}``, ``{"error": null}``, ``{"error": {}}``,
    an error object whose ``message`` or ``detail`` is empty or null, an empty body), it is
    the status and its reason. An error object with neither key is shown as it is."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if err is None:
            return _or_status("", response), None, parsed
        if isinstance(err, dict):
            if "message" in err or "detail" in err:
                message = err.get("message") or err.get("detail") or ""
            else:
                message = json.dumps(err)[:500]
            type_ = err.get("type")
            return _or_status(str(message), response), _type_name(type_), parsed
        if isinstance(err, str):
            return _or_status(err, response), None, parsed
    text = _excerpt(body).strip()
    content_type = response.headers.get("content-type", "")
    if "html" in content_type or text.lower().startswith(("<!doctype", "<html")):
        start, end = text.lower().find("<title>"), text.lower().find("</title>")
        title = text[start + 7 : end].strip() if 0 <= start < end else ""
        shown = f": {title}" if title else ""
        text = f"HTML error page{shown} (from a proxy in front of llama-server?)"
    return _or_status(text, response), None, parsed if parsed is not None else text


def _or_status(message: str, response: httpx.Response) -> str:
    """``message``, or, where it is blank or an empty JSON value, what the status says."""
    if message.strip() and message.strip() not in ("{}", "[]", '""', "null"):
        return message
    reason = response.reason_phrase or "no reason given"
    return f"the server sent no error message ({response.status_code} {reason})"


def _type_name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
