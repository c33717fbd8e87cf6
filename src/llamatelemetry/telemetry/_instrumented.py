"""``InstrumentedLlamaCppClient``: a LlamaCppClient whose every call is a CLIENT span."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from .._version import __version__
from ..api._base import Call
from ..api._client import LlamaCppClient
from ..api._streaming import Stream
from ..api._types import ChatCompletion
from ._attributes import (
    PROVIDER,
    request_attributes,
    response_attributes,
    server_attributes,
    span_name,
)

__all__ = ["InstrumentedLlamaCppClient", "CAPTURE_CONTENT_ENV"]

T = TypeVar("T")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
MAX_CONTENT_CHARS = 16_384


def _capture_from_env() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def _content(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CONTENT_CHARS else text[: MAX_CONTENT_CHARS - 1] + "…"


def _fail(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


class _StreamSpan:
    """Keeps a stream's span open while the user iterates; ends it exactly once."""

    __slots__ = ("_span", "_started", "_first", "_attributes", "_text", "_capture")

    def __init__(self, span: Span, started: float, capture: bool) -> None:
        self._span = span
        self._started = started
        self._first: float | None = None
        self._attributes: dict[str, Any] = {}
        self._text: list[str] = []
        self._capture = capture

    def on_chunk(self, chunk: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._attributes.update(response_attributes(chunk))
        if self._capture:
            choices = getattr(chunk, "choices", None)
            if choices:
                delta = getattr(choices[0], "delta", None)
                piece = delta.content if delta is not None else getattr(choices[0], "text", None)
            else:
                piece = getattr(chunk, "content", None)
            if piece:
                self._text.append(piece)

    def on_close(self, error: BaseException | None, *, complete: bool) -> None:
        span = self._span
        span.set_attributes(self._attributes)
        if self._first is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", self._first - self._started)
        if self._capture and self._text:
            span.set_attribute("gen_ai.output.messages", _content(
                [{"role": "assistant", "parts": [{"type": "text", "content": "".join(self._text)}]}]
            ))
        if error is not None:
            _fail(span, error)
        elif not complete:
            span.set_attribute("llama_cpp.stream.closed_early", True)
        span.end()


class InstrumentedLlamaCppClient(LlamaCppClient):
    """A :class:`LlamaCppClient` with OpenTelemetry: one CLIENT span per call, named
    ``"{operation} {model}"``, carrying the GenAI request, response and usage attributes and
    llama.cpp's timings; outgoing requests carry W3C ``traceparent``.

    Message content is recorded only with ``capture_content=True`` or
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool | None = None,
        provider_name: str = PROVIDER,
        **options: Any,
    ) -> None:
        super().__init__(base_url, api_key, **options)
        self._tracer = trace.get_tracer("llamatelemetry", __version__,
                                        tracer_provider=tracer_provider)
        self._server_attributes = server_attributes(self.base_url)
        self._capture = _capture_from_env() if capture_content is None else capture_content
        self._provider = provider_name

    def chat_completions(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Chat from a raw request dict (the spec's plural form): ``{"messages": [...], ...}``."""
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload must be a dict of request fields, not {type(payload).__name__}")
        if "messages" not in payload:
            raise ValueError("payload needs 'messages': a list of {'role', 'content'} dicts")
        if payload.get("stream"):
            raise ValueError("chat_completions returns a whole response; use "
                             "chat.completions.create(..., stream=True) to stream")
        return self.chat.completions.create(**payload)  # type: ignore[no-any-return]

    def _build_request(self, call: Call[Any]) -> httpx.Request:
        request = super()._build_request(call)
        propagate.inject(request.headers)  # joins a traced server to the caller's trace
        return request

    def _execute(self, call: Call[T]) -> T:
        attributes = request_attributes(call.operation, call.body, self._provider)
        attributes.update(self._server_attributes)
        name = span_name(call.operation, attributes.get("gen_ai.request.model"))
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        if self._capture and isinstance(call.body, Mapping) and "messages" in call.body:
            span.set_attribute("gen_ai.input.messages", _content(call.body["messages"]))
        started = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False):
                result = super()._execute(call)
        except BaseException as error:
            _fail(span, error)
            span.end()
            raise
        if isinstance(result, Stream):
            result._observer = _StreamSpan(span, started, self._capture)
            return result
        span.set_attributes(response_attributes(result))
        if self._capture and isinstance(result, ChatCompletion) and result.choices:
            message = result.choices[0].message
            span.set_attribute("gen_ai.output.messages", _content(
                [{"role": message.role, "parts": [{"type": "text", "content": message.content}]}]
            ))
        span.end()
        return result
