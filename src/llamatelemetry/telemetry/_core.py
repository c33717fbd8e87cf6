"""One place that turns a client call into a span and metric points.

``Telemetry.execute(client, call, send)`` wraps any transport's ``_execute``: the
instrumented client calls it directly, the instrumentor patches it in. It never lets a
telemetry failure reach the caller: instrumentation must not break what it observes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from .._version import __version__
from ..api._base import BaseClient, Call
from ..api._streaming import AsyncStream, Stream
from ._attributes import (
    PROVIDER,
    request_attributes,
    response_attributes,
    server_attributes,
    span_name,
)
from ._messages import input_messages, output_messages, stream_output_messages
from ._metrics import GenAIMetrics, metric_point

__all__ = ["Telemetry", "CAPTURE_CONTENT_ENV"]

log = logging.getLogger("llamatelemetry.telemetry")

T = TypeVar("T")
C = TypeVar("C", bound=BaseClient)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SCOPE = "llamatelemetry"


def capture_from_env() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=64)
def _server(base_url: str) -> dict[str, Any]:
    return server_attributes(base_url)


def _fail(span: Span, attributes: dict[str, Any], error: BaseException) -> None:
    attributes["error.type"] = type(error).__qualname__
    span.set_attribute("error.type", attributes["error.type"])
    if isinstance(error, Exception):  # not GeneratorExit, KeyboardInterrupt, cancellation
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


@dataclasses.dataclass(slots=True)
class _Operation:
    span: Span
    context: Context  # the caller's context with the span in it: for children and exemplars
    attributes: dict[str, Any]
    started: float


class Telemetry:
    """Tracer, metrics and content policy of one instrumented surface."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool | None = None,
        provider_name: str = PROVIDER,
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self.metrics = GenAIMetrics(get_meter(SCOPE, __version__, meter_provider=meter_provider))
        self.capture_content = capture_from_env() if capture_content is None else capture_content
        self.provider_name = provider_name

    def _begin(self, base_url: str, call: Call[Any]) -> _Operation | None:
        """Start the call's span (the transport, running inside it, sends ``traceparent``)."""
        try:
            attributes = request_attributes(call.operation, call.body, self.provider_name)
            attributes.update(_server(base_url))
            span = self.tracer.start_span(
                span_name(call.operation, attributes.get("gen_ai.request.model")),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
            if self.capture_content:
                messages = input_messages(call.body)
                if messages is not None:
                    span.set_attribute("gen_ai.input.messages", messages)
            return _Operation(
                span, trace.set_span_in_context(span), attributes, time.perf_counter()
            )
        except Exception:  # noqa: BLE001 - telemetry must never break the call
            log.debug("could not start a span for %s", call.path, exc_info=True)
            return None

    def _settle(self, op: _Operation, result: T) -> T:
        if isinstance(result, (Stream, AsyncStream)):
            result._observer = _StreamTelemetry(self, op)
        else:
            self._finish(op, result=result)
        return result

    def execute(self, client: C, call: Call[T], send: Callable[[C, Call[T]], T]) -> T:
        """Run ``send(client, call)`` (a sync transport's own ``_execute``) inside the
        call's span."""
        op = self._begin(client.base_url, call)
        if op is None:
            return send(client, call)
        token = attach(op.context)
        try:
            result = send(client, call)
        except BaseException as error:
            detach(token)
            self._finish(op, error=error)
            raise
        detach(token)
        return self._settle(op, result)

    async def execute_async(
        self, client: C, call: Call[T], send: Callable[[C, Call[T]], Awaitable[T]]
    ) -> T:
        """The same for an async transport; the span is the current one only in this task,
        so concurrent calls are siblings under their caller, never nested in each other."""
        op = self._begin(client.base_url, call)
        if op is None:
            return await send(client, call)
        token = attach(op.context)
        try:
            result = await send(client, call)
        except BaseException as error:
            detach(token)
            self._finish(op, error=error)
            raise
        detach(token)
        return self._settle(op, result)

    def _finish(
        self,
        op: _Operation,
        *,
        result: Any = None,
        error: BaseException | None = None,
        extra: Mapping[str, Any] | None = None,
        output: str | None = None,
    ) -> None:
        """End the span and record the metrics, exactly once per operation."""
        span, attributes = op.span, op.attributes
        try:
            duration = time.perf_counter() - op.started
            final = response_attributes(result) if result is not None else {}
            if extra:
                final.update(extra)
            span.set_attributes(final)
            attributes.update(final)
            if error is not None:
                _fail(span, attributes, error)
            if self.capture_content:
                if output is None and result is not None:
                    output = output_messages(result)
                if output is not None:
                    span.set_attribute("gen_ai.output.messages", output)
            self.metrics.record(attributes, duration, op.context)
        except Exception:  # noqa: BLE001
            log.debug("could not record telemetry", exc_info=True)
        finally:
            try:
                span.end()
            except Exception:  # noqa: BLE001 - a faulty span processor is not the caller's problem
                log.debug("a span processor failed", exc_info=True)


class _StreamTelemetry:
    """Keeps a stream's span open while the user iterates; ends it exactly once."""

    __slots__ = (
        "_telemetry",
        "_op",
        "_last",
        "_first",
        "_last_chunk",
        "_reasons",
        "_text",
        "_point",
    )

    def __init__(self, telemetry: Telemetry, op: _Operation) -> None:
        self._telemetry = telemetry
        self._op = op
        self._first: float | None = None
        self._last = op.started
        self._last_chunk: Any = None  # ids, usage and timings come with the last chunks
        self._reasons: list[str] = []
        self._text: list[str] | None = [] if telemetry.capture_content else None
        self._point = metric_point(op.attributes)

    def on_chunk(self, chunk: Any) -> None:
        try:
            now = time.perf_counter()
            first = self._first is None
            if first:
                self._first = now
            self._telemetry.metrics.record_chunk(
                now - self._last, self._point, self._op.context, first=first
            )
            self._last = now
            self._last_chunk = chunk
            choices = getattr(chunk, "choices", None)
            if choices and choices[0].finish_reason:
                self._reasons.append(choices[0].finish_reason)
            if self._text is not None:
                piece = _piece_of(chunk)
                if piece:
                    self._text.append(piece)
        except Exception:  # noqa: BLE001
            log.debug("could not observe a stream chunk", exc_info=True)

    def on_close(self, error: BaseException | None, *, complete: bool) -> None:
        # Read once at the end rather than per chunk: the usage chunk comes last (after the
        # finish reason), and a native stream's last chunk carries its stop and timings.
        extra = response_attributes(self._last_chunk) if self._last_chunk is not None else {}
        if self._reasons:
            extra["gen_ai.response.finish_reasons"] = self._reasons
        if self._first is not None:
            extra["gen_ai.response.time_to_first_chunk"] = self._first - self._op.started
        if error is None and not complete:
            extra["llama_cpp.stream.closed_early"] = True
        output = None
        if self._text is not None:
            output = stream_output_messages(
                "".join(self._text), self._reasons, failed=error is not None
            )
        self._telemetry._finish(self._op, error=error, extra=extra, output=output)


def _piece_of(chunk: Any) -> str | None:
    choices = getattr(chunk, "choices", None)
    if choices:
        delta = getattr(choices[0], "delta", None)
        if delta is not None:
            return delta.content  # type: ignore[no-any-return]
        return getattr(choices[0], "text", None)
    content = getattr(chunk, "content", None)
    return content if isinstance(content, str) else None
