"""One place that turns a client call into a span and metric points.

``Telemetry.execute(client, call, send)`` wraps any client's ``execute_call`` (the
``Caller`` seam of the api layer): the instrumented client calls it directly, the
instrumentor patches it in. It never lets a telemetry failure reach the caller:
instrumentation must not break what it observes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, TypeVar

from opentelemetry import propagate, trace
from opentelemetry._logs import LoggerProvider, LogRecord, get_logger
from opentelemetry.context import Context, attach, detach
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from .._version import __version__
from ..api import Timings
from ..api._internal import (
    AsyncCaller,
    Call,
    Caller,
    ObservableStream,
    current_deadline,
)
from ._attributes import (
    PROVIDER,
    request_attributes,
    response_attributes,
    server_attributes,
    span_name,
)
from ._capture import ContentCapture, capture_mode, emit_event
from ._messages import (
    input_messages,
    output_messages,
    stream_output_messages,
    system_instructions,
    tool_definitions,
)
from ._metrics import GenAIMetrics, metric_point
from ._warmth import MODEL_OPERATIONS, Probe, Warmth, probe_budget

__all__ = ["Telemetry", "SCHEMA_URL", "INFERENCE_EVENT"]

log = logging.getLogger("llamatelemetry.telemetry")

T = TypeVar("T")
C = TypeVar("C", bound=Caller)
A = TypeVar("A", bound=AsyncCaller)

SCOPE = "llamatelemetry"
# The semantic conventions our attribute, metric and event names were checked against.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
INFERENCE_EVENT = "gen_ai.client.inference.operation.details"
# The operations that are inferences (the event is theirs); the others are llama.cpp's
# utility endpoints (tokenize, health, slots, ...).
_INFERENCES = frozenset({"chat", "text_completion"})


@lru_cache(maxsize=64)
def _server(base_url: str) -> dict[str, Any]:
    return server_attributes(base_url)


def _fail(span: Span, attributes: dict[str, Any], error: BaseException) -> None:
    attributes["error.type"] = type(error).__qualname__
    span.set_attribute("error.type", attributes["error.type"])
    if isinstance(error, Exception):  # not GeneratorExit, KeyboardInterrupt, cancellation
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


_unmeasured: ContextVar[bool] = ContextVar("llamatelemetry.unmeasured", default=False)


@contextmanager
def unmeasured() -> Iterator[None]:
    """Calls begun in this block (and in the tasks it starts) are traced as usual but add
    no point to the GenAI metrics: for requests that are not measurements, such as a load
    generator's warm-ups and calibration, which would skew the histograms."""
    token = _unmeasured.set(True)
    try:
        yield
    finally:
        _unmeasured.reset(token)


@dataclasses.dataclass(slots=True)
class _Operation:
    span: Span
    context: Context  # the caller's context with the span in it: for children and exemplars
    attributes: dict[str, Any]
    started: float
    body: Any  # the request's, for the content the event carries
    base_url: str
    measured: bool = True  # False: begun inside `unmeasured`, so no metric points


class Telemetry:
    """Tracer, metrics and content policy of one instrumented surface."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        capture_content: bool | str | ContentCapture | None = None,
        provider_name: str = PROVIDER,
    ) -> None:
        self.tracer = trace.get_tracer(
            SCOPE, __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        self.metrics = GenAIMetrics(
            get_meter(SCOPE, __version__, meter_provider=meter_provider, schema_url=SCHEMA_URL)
        )
        self.capture = capture_mode(capture_content)
        self.capture_content = self.capture.on_span  # content on spans
        self.events = (
            get_logger(SCOPE, __version__, logger_provider=logger_provider, schema_url=SCHEMA_URL)
            if emit_event(self.capture)
            else None
        )
        # Output text is gathered only when something will show it.
        self.wants_output = self.capture_content or (
            self.events is not None and self.capture.on_event
        )
        self.provider_name = provider_name
        self.warmth = Warmth()

    def _begin(
        self, base_url: str, call: Call[Any], state: dict[str, Any]
    ) -> tuple[_Operation | None, Call[Any]]:
        """Start the call's span; the call to send carries its W3C ``traceparent``."""
        span: Span | None = None
        try:
            attributes = request_attributes(
                call.operation, call.body, self.provider_name, call.defaulted
            )
            attributes.update(_server(base_url))
            if state:
                attributes.update(state)
            span = self.tracer.start_span(
                span_name(call.operation, attributes.get("gen_ai.request.model")),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
            if self.capture_content:
                _set_content(span, call.body)
            context = trace.set_span_in_context(span)
            headers = dict(call.headers) if call.headers else {}
            propagate.inject(headers, context=context)
            if headers:
                call = dataclasses.replace(call, headers=headers)
            op = _Operation(
                span, context, attributes, time.perf_counter(), call.body, base_url,
                not _unmeasured.get(),
            )  # fmt: skip
            return op, call
        except Exception:  # noqa: BLE001 - telemetry must never break the call
            log.debug("could not start a span for %s", call.path, exc_info=True)
            if span is not None:
                _end(span)  # the call goes on unobserved; its span must not stay open
            return None, call

    def _settle(self, op: _Operation, result: T) -> T:
        if isinstance(result, ObservableStream):
            accumulator = result.accumulator
            final = None if accumulator is None else accumulator.completion
            result.observe(_StreamTelemetry(self, op, final))
        else:
            self._finish(op, result=result)
        return result

    def execute(self, client: C, call: Call[T], send: Callable[[C, Call[T]], T]) -> T:
        """Run ``send(client, call)`` (a sync client's ``send_call``, or the ``execute_call``
        an instrumentor wrapped) inside the call's span."""
        asked = self._asking(client, call)
        state: dict[str, Any] = {}
        if asked is not None:
            probe, started = asked
            try:
                step = next(probe)
                while True:
                    step = probe.send(client.send_call(step))
            except StopIteration as stop:
                state = stop.value
            except Exception:  # noqa: BLE001 - the call itself will meet any trouble
                self._ask_failed(client)
            call = _rest_of_limit(client, call, started)
        op, call = self._begin(client.base_url, call, state)
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
        self, client: A, call: Call[T], send: Callable[[A, Call[T]], Awaitable[T]]
    ) -> T:
        """The same for an async transport; the span is the current one only in this task,
        so concurrent calls are siblings under their caller, never nested in each other."""
        asked = self._asking(client, call)
        state: dict[str, Any] = {}
        if asked is not None:
            probe, started = asked
            try:
                step = next(probe)
                while True:
                    step = probe.send(await client.send_call(step))
            except StopIteration as stop:
                state = stop.value
            except Exception:  # noqa: BLE001 - the call itself will meet any trouble
                self._ask_failed(client)
            call = _rest_of_limit(client, call, started)
        op, call = self._begin(client.base_url, call, state)
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

    def _asking(self, client: Caller | AsyncCaller, call: Call[Any]) -> tuple[Probe, float] | None:
        """What to ask the server before ``call`` (see ``_warmth``), and when it started."""
        if call.operation not in MODEL_OPERATIONS:
            return None
        bound = _time_limit(client, call)
        budget = probe_budget(bound, current_deadline())
        return self.warmth.probe(client.base_url, call, budget), time.monotonic()

    def _ask_failed(self, client: Caller | AsyncCaller) -> None:
        log.debug("could not ask %s about its model", client.base_url, exc_info=True)
        self.warmth.failed(client.base_url)

    def _finish(
        self,
        op: _Operation,
        *,
        result: Any = None,
        error: BaseException | None = None,
        extra: Mapping[str, Any] | None = None,
        output: str | None = None,
        last: Any = None,
    ) -> None:
        """End the span and record the metrics, exactly once per operation."""
        span, attributes = op.span, op.attributes
        try:
            duration = time.perf_counter() - op.started
            self.warmth.done(op.base_url, attributes["gen_ai.operation.name"])
            final = response_attributes(result) if result is not None else {}
            if extra:
                final.update(extra)
            span.set_attributes(final)
            attributes.update(final)
            if error is not None:
                _fail(span, attributes, error)
            if output is None and result is not None and self.wants_output:
                output = output_messages(result)
            if self.capture_content and output is not None:
                span.set_attribute("gen_ai.output.messages", output)
            timings = getattr(result if result is not None else last, "timings", None)
            if not isinstance(timings, Timings):
                timings = None
            if op.measured:
                self.metrics.record(attributes, duration, op.context, timings)
            if self.events is not None and attributes["gen_ai.operation.name"] in _INFERENCES:
                self._emit(op, attributes, output)
        except Exception:  # noqa: BLE001
            log.debug("could not record telemetry", exc_info=True)
        finally:
            _end(span)

    def _emit(self, op: _Operation, attributes: dict[str, Any], output: str | None) -> None:
        """The inference's operation-details event: the span's GenAI attributes and, when
        content goes to events, the messages as structured values."""
        assert self.events is not None
        values = dict(attributes)
        if self.capture.on_event:
            for key, text in (
                ("gen_ai.input.messages", input_messages(op.body)),
                ("gen_ai.output.messages", output),
                ("gen_ai.system_instructions", system_instructions(op.body)),
                ("gen_ai.tool.definitions", tool_definitions(op.body)),
            ):
                if text is not None:
                    values[key] = json.loads(text)
        self.events.emit(
            LogRecord(event_name=INFERENCE_EVENT, attributes=values, context=op.context)
        )


def _time_limit(client: Caller | AsyncCaller, call: Call[Any]) -> float | None:
    """The wall-clock limit the call runs under: its own ``total_timeout``, else the client's."""
    return call.total_timeout if call.total_timeout is not None else client.total_timeout


def _rest_of_limit(client: Caller | AsyncCaller, call: Call[T], started: float) -> Call[T]:
    """The call with what its time limit leaves after the ask: asking never lengthens it."""
    bound = _time_limit(client, call)
    spent = time.monotonic() - started
    if bound is None or spent < 0.001:
        return call
    return dataclasses.replace(call, total_timeout=max(bound - spent, 0.001))


def _end(span: Span) -> None:
    try:
        span.end()
    except Exception:  # noqa: BLE001 - a faulty span processor is not the caller's problem
        log.debug("a span processor failed", exc_info=True)


def _set_content(span: Span, body: Any) -> None:
    """The request's content on the span, as JSON strings (opt-in)."""
    for key, text in (
        ("gen_ai.input.messages", input_messages(body)),
        ("gen_ai.system_instructions", system_instructions(body)),
        ("gen_ai.tool.definitions", tool_definitions(body)),
    ):
        if text is not None:
            span.set_attribute(key, text)


# A stream's times between chunks reach the metrics at its end, and on the way once a
# second has passed and at least GAP_BATCH are held (a point's cost is mostly per batch).
GAP_BATCH = 64
GAP_EVERY_S = 1.0


class _StreamTelemetry:
    """Keeps a stream's span open while the user iterates; ends it exactly once.

    Chat and completion chunks say what they are themselves (the last ones carry usage,
    timings, finish reasons). The typed events of the Responses and Messages APIs are read
    through the stream's own accumulator at the end, and only events that carry generated
    text count as chunks for the time to first chunk and between chunks.
    """

    __slots__ = (
        "_telemetry",
        "_op",
        "_last",
        "_first",
        "_last_chunk",
        "_reasons",
        "_text",
        "_point",
        "_final",
        "_first_content",
        "_gaps",
        "_gaps_since",
    )

    def __init__(
        self, telemetry: Telemetry, op: _Operation, final: Callable[[], Any] | None = None
    ) -> None:
        self._telemetry = telemetry
        self._op = op
        self._first: float | None = None
        self._last = op.started
        self._last_chunk: Any = None  # ids, usage and timings come with the last chunks
        self._reasons: list[str] = []
        self._text: list[str] | None = [] if telemetry.wants_output else None
        self._point = metric_point(op.attributes)
        self._final = final
        self._first_content: float | None = None  # the answer's, after any thinking
        # Times between chunks, handed to the metrics in batches: one queued entry for
        # many points (see _bulk).
        self._gaps: list[float] = []
        self._gaps_since = op.started

    def on_chunk(self, chunk: Any) -> None:
        try:
            choices = getattr(chunk, "choices", None)
            events = choices is None and self._final is not None
            # The text is read only when something needs it: the chat hot path, once its
            # first answer chunk is seen and no content is captured, reads none.
            piece = (
                _piece_of(chunk, choices)
                if events or self._text is not None or self._first_content is None
                else None
            )
            if events and not piece:
                return  # an event without generated text (created, item added, ...)
            now = time.perf_counter()
            if self._first is None:
                self._first = now
                if self._op.measured:
                    self._telemetry.metrics.record_first_chunk(
                        now - self._last, self._point, self._op.context
                    )
            else:
                gaps = self._gaps
                gaps.append(now - self._last)
                if len(gaps) >= GAP_BATCH and now - self._gaps_since >= GAP_EVERY_S:
                    self._gaps_since = now
                    self._record_gaps()
            self._last = now
            self._last_chunk = chunk
            if piece and self._first_content is None:
                self._first_content = now
            for choice in choices or ():  # the first (iterated: no ChoiceList indexing)
                if choice.finish_reason:
                    self._reasons.append(choice.finish_reason)
                break
            if self._text is not None and piece:
                self._text.append(piece)
        except Exception:  # noqa: BLE001
            log.debug("could not observe a stream chunk", exc_info=True)

    def _record_gaps(self) -> None:
        gaps, self._gaps = self._gaps, []
        if self._op.measured:
            self._telemetry.metrics.record_chunk_gaps(gaps, self._point, self._op.context)

    def on_close(self, error: BaseException | None, *, complete: bool) -> None:
        if self._gaps:
            self._record_gaps()
        # Read once at the end rather than per chunk: the usage chunk comes last (after the
        # finish reason), and a native stream's last chunk carries its stop and timings.
        last, extra = self._last_chunk, {}
        if self._final is not None and getattr(last, "choices", None) is None:
            try:
                last = self._final()  # the events added up: a Response, a Message
            except Exception:  # noqa: BLE001
                log.debug("could not read a stream's final answer", exc_info=True)
        if last is not None:
            extra = response_attributes(last)
        if self._reasons:
            extra["gen_ai.response.finish_reasons"] = self._reasons
        if self._first is not None:
            extra["gen_ai.response.time_to_first_chunk"] = self._first - self._op.started
        if self._first_content is not None:  # later than the first chunk when it thought first
            extra["llama_cpp.stream.time_to_first_content"] = self._first_content - self._op.started
        if error is None and not complete:
            extra["llama_cpp.stream.closed_early"] = True
        output = None
        if self._text is not None:
            reasons = self._reasons or list(extra.get("gen_ai.response.finish_reasons", ()))
            output = stream_output_messages("".join(self._text), reasons, failed=error is not None)
        self._telemetry._finish(self._op, error=error, extra=extra, output=output, last=last)


def _piece_of(chunk: Any, choices: Any) -> str | None:
    if choices:
        delta = getattr(choices[0], "delta", None)
        if delta is not None:
            return delta.content  # type: ignore[no-any-return]
        return getattr(choices[0], "text", None)
    delta = getattr(chunk, "delta", None)
    if isinstance(delta, str):  # a Responses text delta
        return delta if getattr(chunk, "type", "").endswith("output_text.delta") else None
    if isinstance(delta, dict):  # a Messages content block delta
        text = delta.get("text")
        return text if isinstance(text, str) else None
    content = getattr(chunk, "content", None)
    return content if isinstance(content, str) else None
