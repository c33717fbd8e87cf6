"""``CallRecorder``: spans, GenAI metrics and events from the facts of a call, for any
client.

A client tells the recorder what happens to a call, and nothing else: ``begin`` just
before the request is sent (the operation, the request's parameters, the server), then,
for a stream, ``chunk`` for every chunk as the reader gets it, and ``end`` once, with the
answer or the error. The recorder turns that into one CLIENT span with the GenAI
attributes and llama.cpp's own (timings, cached tokens, draft acceptance), the GenAI
client and server histograms, the time to the first chunk and between chunks, and the
opt-in content and operation-details event. ``LlamaCppClient``'s telemetry is one user of
it; any other client (an SDK's, a framework's) feeds it the same way:

```python
from llamatelemetry.telemetry import CallRecorder

recorder = CallRecorder(tracer_provider=..., meter_provider=...)
call = recorder.begin("chat", base_url="http://127.0.0.1:8080",
                      request={"model": "m", "messages": [...], "max_tokens": 64})
headers = call.headers()  # W3C traceparent for the outgoing request
try:
    answer = send(request, headers)  # any client
except Exception as error:
    call.end(error=error)
    raise
call.end(answer)
```

Answers are read by their attributes, in the OpenAI shapes (``id``, ``model``,
``choices[].finish_reason``, ``usage.prompt_tokens`` or ``input_tokens``...), so the
openai SDK's objects and this package's alike; llama.cpp's ``timings`` may be this
package's :class:`~llamatelemetry.api.Timings` or the plain dict an SDK keeps of a field it
does not know. A failure inside the recorder never reaches the caller: instrumentation
must not break what it observes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry._logs import LoggerProvider, LogRecord, get_logger
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from .._version import __version__
from ..api._internal import timings_of
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

__all__ = ["CallRecorder", "RecordedCall", "INFERENCE_EVENT", "SCHEMA_URL", "unmeasured"]

log = logging.getLogger("llamatelemetry.telemetry")

SCOPE = "llamatelemetry"
# The semantic conventions our attribute, metric and event names were checked against.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
INFERENCE_EVENT = "gen_ai.client.inference.operation.details"
# The operations that are inferences (the event is theirs); the others are llama.cpp's
# utility endpoints (tokenize, health, slots, ...).
_INFERENCES = frozenset({"chat", "text_completion"})
# What this package adds to another instrumentation's span of the same call: what only
# llama.cpp (and this package's reading of it) tells.
_LLAMA_ONLY = ("llama_cpp.", "gen_ai.usage.cache_read.", "llamatelemetry.")

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


# A stream's times between chunks reach the metrics at its end, and on the way once a
# second has passed and at least GAP_BATCH are held (a point's cost is mostly per batch).
GAP_BATCH = 64
GAP_EVERY_S = 1.0

_server_cache: dict[str, dict[str, Any]] = {}


def _server(base_url: str) -> dict[str, Any]:
    found = _server_cache.get(base_url)
    if found is None:
        if len(_server_cache) >= 64:
            _server_cache.clear()
        found = _server_cache[base_url] = server_attributes(base_url)
    return found


class CallRecorder:
    """The tracer, the GenAI metrics and the content policy of one instrumented surface.

    Keyword arguments: ``tracer_provider``, ``meter_provider``, ``logger_provider`` (for
    the operation-details event; each defaults to the global one), ``capture_content``
    (``True``, ``"SPAN_ONLY"``, ``"EVENT_ONLY"``, ``"SPAN_AND_EVENT"``; default:
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), ``provider_name`` (the
    ``gen_ai.provider.name`` of every span; ``"llama.cpp"``).
    """

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

    def begin(
        self,
        operation: str,
        *,
        base_url: str,
        request: Mapping[str, Any] | None = None,
        stream: bool = False,
        defaulted: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        labels_known: bool = True,
        parent: Context | None = None,
    ) -> RecordedCall:
        """Start recording a call that is about to be sent; its span starts now, as a child
        of the current span.

        ``operation``: the GenAI operation (``chat``, ``text_completion``, ``embeddings``,
        or a llama.cpp endpoint's: ``tokenize``, ``rerank``, ...); ``base_url``: the
        server's (``server.address``/``server.port``); ``request``: the request body, whose
        parameters (model, max_tokens, temperature, ...) become ``gen_ai.request.*``;
        ``stream``: the answer comes in chunks; ``defaulted``: the body's fields the client
        filled in rather than the caller; ``attributes``: more span attributes (they also
        reach the metric points when they are among theirs); ``labels_known=False``: the
        answer may still change the metric points' labels (``end(attributes=...)``: the
        server's kind, learnt from it), so a stream's time to first chunk and between
        chunks are recorded at its end, under the final labels; ``parent``: the context
        whose span is this one's parent, when not the current one.
        """
        span: Span | None = None
        try:
            values = request_attributes(operation, request, self.provider_name, tuple(defaulted))
            values.update(_server(base_url))
            if attributes:
                values.update(attributes)
            span = self.tracer.start_span(
                span_name(operation, values.get("gen_ai.request.model")),
                parent,
                kind=SpanKind.CLIENT,
                attributes=values,
            )
            if self.capture_content:
                _set_content(span, request)
            return RecordedCall(
                self, span, values, request, base_url, stream, hold=not labels_known
            )
        except Exception:  # noqa: BLE001 - telemetry must never break the call
            log.debug("could not start a span for %s", operation, exc_info=True)
            if span is not None:
                _end(span)  # the call goes on unobserved; its span must not stay open
            return RecordedCall(self, None, {}, request, base_url, stream)

    def join(
        self,
        span: Span,
        operation: str,
        *,
        base_url: str,
        request: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> RecordedCall:
        """Record a call that another instrumentation already made a span for (the
        official openai-v2, around the same SDK call): no second span and no second count
        of the client's figures; llama.cpp's attributes go onto that span, and the
        server's figures (time to first token, per output token, draft acceptance) to the
        metrics. The span is the other instrumentation's to end."""
        try:
            # Our points are the server's, and only llama.cpp's answers give them.
            values = request_attributes(operation, request, PROVIDER)
            values.update(_server(base_url))
            return RecordedCall(self, span, values, request, base_url, stream, borrowed=True)
        except Exception:  # noqa: BLE001
            log.debug("could not join a span for %s", operation, exc_info=True)
            return RecordedCall(self, None, {}, request, base_url, stream)


class RecordedCall:
    """One call being recorded (from :meth:`CallRecorder.begin`): tell it of each chunk
    of a streamed answer and, once, of the end. Every method is safe to call on a call
    whose recording could not start (it then does nothing)."""

    __slots__ = (
        "_recorder",
        "_span",
        "_attributes",
        "_request",
        "_base_url",
        "_stream",
        "_started",
        "_measured",
        "_client_points",
        "_borrowed",
        "_ended",
        "context",
        # streams
        "_first",
        "_last",
        "_last_chunk",
        "_reasons",
        "_text",
        "_point",
        "_first_content",
        "_gaps",
        "_gaps_since",
        "_events",
        "_hold",
    )

    def __init__(
        self,
        recorder: CallRecorder,
        span: Span | None,
        attributes: dict[str, Any],
        request: Any,
        base_url: str,
        stream: bool,
        borrowed: bool = False,
        hold: bool = False,
    ) -> None:
        self._recorder = recorder
        self._span = span
        # Another instrumentation's span for this same call: ours adds to it and never ends
        # it, and records only what that one does not (the server's figures).
        self._borrowed = borrowed
        self._attributes = attributes
        self._request = request
        self._base_url = base_url
        self._stream = stream
        self._ended = span is None
        #: The caller's context with this call's span in it: make it current while the
        #: request is sent, so the transport's own spans are children of this one.
        self.context: Context = trace.set_span_in_context(span) if span is not None else Context()
        self._measured = not _unmeasured.get()
        self._client_points = self._measured and not borrowed  # duration, tokens, chunks
        self._started = time.perf_counter()
        self._first: float | None = None
        self._last = self._started
        self._last_chunk: Any = None  # ids, usage and timings come with the last chunks
        self._reasons: list[str] = []
        self._text: list[str] | None = [] if stream and recorder.wants_output else None
        self._point: dict[str, Any] | None = None
        self._first_content: float | None = None  # the answer's, after any thinking
        # Times between chunks, handed to the metrics in batches: one queued entry for
        # many points.
        self._gaps: list[float] = []
        self._gaps_since = self._started
        self._events: bool | None = None  # typed events (Responses, Messages)? at chunk 1
        self._hold = hold  # stream points wait for the end, whose labels are final

    @property
    def needs_answer(self) -> bool:
        """For a stream: its chunks do not say the whole answer themselves (typed events,
        or no chunk yet), so ``end`` should be given the answer they add up to."""
        return getattr(self._last_chunk, "choices", None) is None

    @property
    def recording(self) -> bool:
        """False when the call's recording could not start, or has ended."""
        return not self._ended

    def headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """``headers`` with the call's trace context added (W3C ``traceparent`` with the
        default propagators), for the outgoing request."""
        found = dict(headers) if headers else {}
        if self._span is not None:  # (set_span_in_context and inject: the public path)
            try:
                propagate.inject(found, context=self.context)
            except Exception:  # noqa: BLE001
                log.debug("could not add the trace context to a request", exc_info=True)
        return found

    def chunk(self, chunk: Any) -> None:
        """A chunk of a streamed answer has reached the reader: a chat or completion chunk
        (``choices``), a llama.cpp native chunk (``content``), or a typed event of the
        Responses or Messages APIs, of which only those that carry generated text count as
        chunks for the time to first chunk and between chunks."""
        if self._ended:
            return
        try:
            choices = getattr(chunk, "choices", None)
            events = self._events
            if events is None:
                events = self._events = choices is None and isinstance(
                    getattr(chunk, "type", None), str
                )
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
                if self._client_points and not self._hold:
                    self._point = metric_point(self._attributes)
                    self._recorder.metrics.record_first_chunk(
                        now - self._last, self._point, self.context
                    )
            else:
                gaps = self._gaps
                gaps.append(now - self._last)
                if (
                    len(gaps) >= GAP_BATCH
                    and now - self._gaps_since >= GAP_EVERY_S
                    and not self._hold
                ):
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
        if self._client_points and self._point is not None:
            self._recorder.metrics.record_chunk_gaps(gaps, self._point, self.context)

    def end(
        self,
        answer: Any = None,
        *,
        error: BaseException | None = None,
        complete: bool = True,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """The call is over: ``answer`` is what it returned (for a stream, the whole
        answer its chunks add up to when the client keeps one, else None: the last chunk
        says the rest), ``error`` what it raised (the span's status is then ERROR);
        ``complete=False``: the reader left a stream before its end; ``attributes``: what
        the answer told of the call (the server's kind, say), for the span and the metric
        points. Ends the span and records the metrics; only the first call counts."""
        if self._ended:
            return
        self._ended = True
        if attributes:
            try:
                self._attributes.update(attributes)
                if not self._borrowed:  # another instrumentation's span says its own
                    assert self._span is not None
                    self._span.set_attributes(attributes)
            except Exception:  # noqa: BLE001
                log.debug("could not add a call's attributes", exc_info=True)
        if self._stream:
            self._end_stream(answer, error, complete)
        else:
            self._finish(answer, error, None, None, answer)

    def _end_stream(self, answer: Any, error: BaseException | None, complete: bool) -> None:
        extra: dict[str, Any] = {}
        try:
            if self._hold and self._client_points and self._first is not None:
                self._point = metric_point(self._attributes)  # the final labels
                self._recorder.metrics.record_first_chunk(
                    self._first - self._started, self._point, self.context
                )
            if self._gaps:
                self._record_gaps()
            # Read once at the end rather than per chunk: the usage chunk comes last (after
            # the finish reason), and a native stream's last chunk carries its stop and
            # timings.
            last = answer if answer is not None else self._last_chunk
            if last is not None:
                extra = response_attributes(last, timings_of(last))
            if self._reasons:
                extra["gen_ai.response.finish_reasons"] = self._reasons
            if self._first is not None:
                extra["gen_ai.response.time_to_first_chunk"] = self._first - self._started
            if self._first_content is not None:  # later than the first chunk when it thought
                extra["llama_cpp.stream.time_to_first_content"] = (
                    self._first_content - self._started
                )
            if error is None and not complete:
                extra["llama_cpp.stream.closed_early"] = True
            output = None
            if self._text is not None:
                reasons = self._reasons or list(extra.get("gen_ai.response.finish_reasons", ()))
                output = stream_output_messages(
                    "".join(self._text), reasons, failed=error is not None
                )
        except Exception:  # noqa: BLE001
            log.debug("could not read a stream's end", exc_info=True)
            last, output = None, None
        self._finish(None, error, extra, output, last)

    def _finish(
        self,
        result: Any,
        error: BaseException | None,
        extra: Mapping[str, Any] | None,
        output: str | None,
        last: Any,
    ) -> None:
        """End the span (ours, not a joined one) and record the metrics, exactly once per
        call."""
        span, attributes, recorder = self._span, self._attributes, self._recorder
        assert span is not None
        try:
            duration = time.perf_counter() - self._started
            timings = timings_of(last)
            final = response_attributes(result, timings) if result is not None else {}
            if extra:
                final.update(extra)
            attributes.update(final)
            if self._borrowed:  # another instrumentation's span, which it ends itself:
                # what only llama.cpp tells onto it, the server's figures to the metrics
                span.set_attributes({k: v for k, v in final.items() if k.startswith(_LLAMA_ONLY)})
                if self._measured and timings is not None:
                    recorder.metrics.record(
                        attributes, duration, self.context, timings, client=False
                    )
                return
            span.set_attributes(final)
            if error is not None:
                _fail(span, attributes, error)
            if output is None and result is not None and recorder.wants_output:
                output = output_messages(result)
            if recorder.capture_content and output is not None:
                span.set_attribute("gen_ai.output.messages", output)
            if self._measured:
                recorder.metrics.record(attributes, duration, self.context, timings)
            if recorder.events is not None and attributes["gen_ai.operation.name"] in _INFERENCES:
                self._emit(output)
        except Exception:  # noqa: BLE001
            log.debug("could not record telemetry", exc_info=True)
        finally:
            if not self._borrowed:
                _end(span)

    def _emit(self, output: str | None) -> None:
        """The inference's operation-details event: the span's GenAI attributes and, when
        content goes to events, the messages as structured values."""
        recorder = self._recorder
        assert recorder.events is not None
        values = dict(self._attributes)
        if recorder.capture.on_event:
            body = self._request
            for key, text in (
                ("gen_ai.input.messages", input_messages(body)),
                ("gen_ai.output.messages", output),
                ("gen_ai.system_instructions", system_instructions(body)),
                ("gen_ai.tool.definitions", tool_definitions(body)),
            ):
                if text is not None:
                    values[key] = json.loads(text)
        recorder.events.emit(
            LogRecord(event_name=INFERENCE_EVENT, attributes=values, context=self.context)
        )


def _fail(span: Span, attributes: dict[str, Any], error: BaseException) -> None:
    attributes["error.type"] = type(error).__qualname__
    span.set_attribute("error.type", attributes["error.type"])
    if isinstance(error, Exception):  # not GeneratorExit, KeyboardInterrupt, cancellation
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


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
