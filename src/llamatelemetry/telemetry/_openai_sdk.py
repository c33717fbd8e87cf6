"""Telemetry for the openai SDK's calls: chat, completions, embeddings and the Responses
API, sync and async, streamed or not (the ``.stream()`` and ``parse`` helpers,
``with_raw_response`` and ``with_streaming_response`` included), through the same
``CallRecorder`` as this package's own client.

Every one of those calls goes through the client's public ``request(cast_to, options, *,
stream, stream_cls)`` (what its ``post``, the method the SDK documents for endpoints it has
no resource for, calls), looked up on the client at every call: a client whose resources
were made before instrumenting is seen too. Wrapping it on ``OpenAI`` and ``AsyncOpenAI``
sees the options' path (the operation), body and ``extra_body`` (the request's
parameters), the client's ``base_url`` (the server), and adds the trace context to the
headers of a copy of the options. A stream is built by the SDK from the
``stream_cls`` it is given: a subclass of the SDK's own ``Stream[T]`` (which the SDK
supports) whose chunks go to the recorder as the reader gets them, and which ends the
call exactly once, whatever way the reader leaves: exhausted, closed, left in a ``with``,
broken off by an exception, garbage collected. The reader gets the SDK's own stream
class and chunk objects. A raw response's stream is built when its reader parses it: the
call waits for that under the response, and ends cut short if the response goes unparsed.
A ``with_streaming_response`` answer that is not a stream is the caller's to read: its
span ends with the response's head.

A server is llama.cpp when an answer carries llama.cpp's ``timings``: its calls' spans
then say ``gen_ai.provider.name = "llama.cpp"`` and carry llama.cpp's attributes; any other
server's are plain GenAI spans named ``openai``. Knowing it costs nothing: the answer
says so, and the next calls to that base URL know it from the start. Until then a
stream's first-chunk and between-chunk points wait for its end, so that they carry the
server's kind its answer told.

Beside the official ``opentelemetry-instrumentation-openai-v2`` (whichever was turned on
first), a call has one span: that instrumentation's, which wraps the SDK's resource
methods and so is the current span when ``request`` runs. This package then adds to it
what only llama.cpp tells (its timings, cached tokens, draft acceptance) and records only
the server's figures; the client's duration and token counts are that instrumentation's
to count.

Under a framework's own span of the model call, kept out of the current context but named
in the request's trace context headers (OpenLLMetry's LangChain instrumentation does
this), the call's span is that span's child.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, get_origin

from opentelemetry import propagate, trace
from opentelemetry.context import Context, attach, detach

from ..api._internal import timings_of
from ._call_recorder import CallRecorder, RecordedCall

__all__ = ["SdkTelemetry", "OPERATIONS"]

log = logging.getLogger("llamatelemetry.telemetry")

#: The SDK's paths this telemetry records, and their GenAI operation.
OPERATIONS = {
    "/chat/completions": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
    "/responses": "chat",  # the Responses API: a chat, as the conventions name it
}
PROVIDER = "gen_ai.provider.name"
#: The header the SDK's ``with_raw_response`` and ``with_streaming_response`` set.
RAW_RESPONSE = "X-Stainless-Raw-Response"
LLAMA_CPP, OPENAI = "llama.cpp", "openai"
TRACEPARENT = "traceparent"

# The call whose stream the SDK is building, and its server, for the stream class to take.
_building: ContextVar[tuple[RecordedCall, str] | None] = ContextVar(
    "llamatelemetry.sdk_stream", default=None
)
# A raw response's stream is built later, when its reader parses it: the call waits for it
# under the response's httpx.Response (and ends, cut short, if that goes unparsed).
_waiting: weakref.WeakKeyDictionary[Any, tuple[RecordedCall, str]] = weakref.WeakKeyDictionary()


class SdkTelemetry:
    """A recorder, and which servers are llama.cpp, for the openai SDK's clients."""

    def __init__(self, recorder: CallRecorder) -> None:
        self.recorder = recorder
        self._llama: dict[str, bool] = {}  # base URL -> its answers carry llama.cpp timings

    def _begin(
        self, client: Any, options: Any, kwargs: dict[str, Any]
    ) -> tuple[RecordedCall | None, str, Any]:
        """The call's recording, its server, and the options to send it with (a copy of the
        SDK's, with the trace context in its headers)."""
        operation = OPERATIONS.get(getattr(options, "url", None))  # type: ignore[arg-type]
        if operation is None or getattr(options, "method", None) != "post":
            return None, "", options
        base_url = str(client.base_url)
        body = getattr(options, "json_data", None)
        request = dict(body) if isinstance(body, Mapping) else {}
        extra = getattr(options, "extra_json", None)
        if isinstance(extra, Mapping):
            request.update(extra)
        headers = getattr(options, "headers", None)
        if not isinstance(headers, Mapping):  # the SDK's NotGiven
            headers = None
        stream = bool(kwargs.get("stream"))
        request.setdefault("stream", stream)  # not sent when false, but known
        official = _official_span()
        if official is not None:  # openai-v2 is recording this call: add to its span
            recorded = self.recorder.join(
                official, operation, base_url=base_url, request=request, stream=stream
            )
        else:
            known = bool(self._llama.get(base_url))
            recorded = self.recorder.begin(
                operation,
                base_url=base_url,
                request=request,
                stream=stream,
                attributes={PROVIDER: LLAMA_CPP if known else OPENAI},
                labels_known=known,  # a first answer may still say llama.cpp
                parent=_named_parent(headers),
            )
        if recorded.recording:
            options = copy.copy(options)  # the caller's stays as it was
            options.headers = recorded.headers(headers)
            stream_cls = kwargs.get("stream_cls")
            if stream and stream_cls is not None:
                kwargs["stream_cls"] = _observed(stream_cls, self)
        return recorded, base_url, options

    def learned(self, base_url: str, answer: Any) -> dict[str, Any] | None:
        """What an answer tells of its server: llama.cpp's when it carries its timings."""
        if self._llama.get(base_url) or timings_of(answer) is None:
            return None
        self._llama[base_url] = True
        return {PROVIDER: LLAMA_CPP}

    def finished(self, recorded: RecordedCall, base_url: str, last: Any) -> None:
        """A stream was read to its end, ``last`` its last chunk: the Responses API's last
        event carries the whole response; a chat stream's last chunks say the rest."""
        answer = getattr(last, "response", None) if hasattr(last, "type") else None
        if answer is not None:
            timings = getattr(last, "timings", None)  # llama.cpp's, beside the response
            if timings is not None:
                answer = _WithTimings(answer, timings)
        told = answer if answer is not None else last
        recorded.end(answer, attributes=self.learned(base_url, told))

    def _end(
        self, recorded: RecordedCall, base_url: str, result: Any, options: Any, stream: bool
    ) -> Any:
        if isinstance(result, _Observed):
            return result  # the stream ends the call itself
        answer = result
        raw = _raw(options)
        if raw and stream:  # a raw response whose stream its reader builds later
            response = getattr(result, "http_response", None)
            if response is not None:
                _waiting[response] = (recorded, base_url)
                weakref.finalize(response, _unread, (recorded, base_url))
                return result
        if raw == "stream":  # with_streaming_response: its body is the caller's to read
            answer = None
        elif raw:  # with_raw_response: the SDK's raw response
            answer = _parsed(result)
        recorded.end(answer, attributes=self.learned(base_url, answer))
        return result

    def request(
        self, original: Callable[..., Any], client: Any, cast_to: Any, options: Any,
        args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> Any:  # fmt: skip
        """The SDK client's ``request(cast_to, options, *, stream, stream_cls)``, observed."""
        recorded, base_url, options = self._begin(client, options, kwargs)
        if recorded is None or not recorded.recording:
            return original(client, cast_to, options, *args, **kwargs)
        with _sending(recorded, base_url):
            result = original(client, cast_to, options, *args, **kwargs)
        return self._end(recorded, base_url, result, options, bool(kwargs.get("stream")))

    async def arequest(
        self, original: Callable[..., Any], client: Any, cast_to: Any, options: Any,
        args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> Any:  # fmt: skip
        recorded, base_url, options = self._begin(client, options, kwargs)
        if recorded is None or not recorded.recording:
            return await original(client, cast_to, options, *args, **kwargs)
        with _sending(recorded, base_url):
            result = await original(client, cast_to, options, *args, **kwargs)
        return self._end(recorded, base_url, result, options, bool(kwargs.get("stream")))


@contextmanager
def _sending(recorded: RecordedCall, base_url: str) -> Iterator[None]:
    """While the SDK sends the call: its span is the current one, a stream the SDK builds
    takes the call, and an error ends it."""
    token = attach(recorded.context)
    building = _building.set((recorded, base_url))
    try:
        yield
    except BaseException as error:
        recorded.end(error=error)
        raise
    finally:
        _building.reset(building)
        detach(token)


def _named_parent(headers: Mapping[str, Any] | None) -> Context | None:
    """The context of the span a framework named as this request's parent, by putting its
    trace context in the request's headers itself (OpenLLMetry's LangChain instrumentation
    does, for the span it makes of the model call and keeps out of the current context):
    this call's span nests under it. None when the headers name none."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    if TRACEPARENT not in lowered:
        return None
    named = propagate.extract(lowered)
    span_context = trace.get_current_span(named).get_span_context()
    if not span_context.is_valid:
        return None
    return named


# The official instrumentation's tracers: its own (``openai_v2``), or the shared GenAI
# handler it uses in its newer mode (then only while it is on).
OPENAI_V2_SCOPE = "opentelemetry.instrumentation.openai_v2"
GENAI_HANDLER_SCOPE = "opentelemetry.util.genai.handler"


def _official_span() -> Any:
    """The span the official openai-v2 instrumentation opened around this SDK call, when
    it is the current one; else None."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    name = getattr(getattr(span, "instrumentation_scope", None), "name", None)
    if name == OPENAI_V2_SCOPE or (name == GENAI_HANDLER_SCOPE and _openai_v2_on()):
        return span
    return None


def _openai_v2_on() -> bool:
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ImportError:
        return False
    return bool(OpenAIInstrumentor().is_instrumented_by_opentelemetry)  # type: ignore[no-untyped-call]


def _raw(options: Any) -> str:
    """How the SDK was asked to answer: ``""`` parsed, ``"true"`` a raw response
    (``with_raw_response``), ``"stream"`` a response to read (``with_streaming_response``)."""
    headers = getattr(options, "headers", None)
    value = headers.get(RAW_RESPONSE) if isinstance(headers, Mapping) else None
    return value if isinstance(value, str) else ""


def _parsed(result: Any) -> Any:
    """A raw response's answer, parsed (the SDK keeps what it parsed, so the caller's
    ``parse()`` costs nothing more)."""
    try:
        return result.parse()
    except Exception:  # noqa: BLE001 - the caller meets it when they parse
        return None


class _Observed:
    """The marker of the stream classes ``_observed`` makes."""


#: The Responses API's last events: a reader who stops at one has read the whole answer.
LAST_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})


class _Watch:
    """One SDK stream's call: each chunk to the recorder, and the call's end, once."""

    __slots__ = ("recorded", "base_url", "telemetry", "last")

    def __init__(self, building: tuple[RecordedCall, str], telemetry: SdkTelemetry) -> None:
        self.recorded, self.base_url = building
        self.telemetry = telemetry
        self.last: Any = None

    def chunk(self, item: Any) -> None:
        self.recorded.chunk(item)
        self.last = item

    def done(self) -> None:
        self.telemetry.finished(self.recorded, self.base_url, self.last)

    def failed(self, error: BaseException) -> None:
        self.recorded.end(error=error, complete=False)

    def left(self) -> None:
        """The reader left (closed the stream, broke out of it, dropped it): cut short,
        unless it had the last event already."""
        if getattr(self.last, "type", None) in LAST_EVENTS:
            self.done()
        else:
            self.recorded.end(complete=False)


@lru_cache(maxsize=256)
def _observed(stream_cls: type, telemetry: SdkTelemetry) -> type:
    """A subclass of the SDK's ``stream_cls`` (``Stream[ChatCompletionChunk]``, ...) whose
    chunks go to the call being recorded, which it ends exactly once."""
    asynchronous = hasattr(get_origin(stream_cls) or stream_cls, "__anext__")  # Stream[T]
    base: Any = stream_cls

    def watch(kwargs: Mapping[str, Any]) -> _Watch | None:
        building = _call_of(kwargs.get("response"))
        return None if building is None else _Watch(building, telemetry)

    if asynchronous:

        class AsyncObserved(base, _Observed):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._llamatelemetry = watch(kwargs)
                super().__init__(*args, **kwargs)

            async def __stream__(self) -> Any:  # the SDK's own, watched
                watching = self._llamatelemetry
                if watching is None:
                    async for item in super().__stream__():
                        yield item
                    return
                try:
                    async for item in super().__stream__():
                        watching.chunk(item)
                        yield item
                except GeneratorExit:  # closed or collected before its end
                    watching.left()
                    raise
                except BaseException as error:
                    watching.failed(error)
                    raise
                watching.done()

            async def close(self) -> None:
                _left(self)
                await super().close()

            def __del__(self) -> None:
                _left(self)
                _base_del(super())

        return AsyncObserved

    class Observed(base, _Observed):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._llamatelemetry = watch(kwargs)
            super().__init__(*args, **kwargs)

        def __stream__(self) -> Any:  # the SDK's own, watched
            watching = self._llamatelemetry
            if watching is None:
                yield from super().__stream__()
                return
            try:
                for item in super().__stream__():
                    watching.chunk(item)
                    yield item
            except GeneratorExit:  # closed or collected before its end
                watching.left()
                raise
            except BaseException as error:
                watching.failed(error)
                raise
            watching.done()

        def close(self) -> None:
            _left(self)
            super().close()

        def __del__(self) -> None:
            _left(self)
            _base_del(super())

    return Observed


class _WithTimings:
    """A Responses stream's final response, read with the timings llama.cpp sends beside
    it on the last event (the caller's objects stay untouched)."""

    def __init__(self, response: Any, timings: Any) -> None:
        self.response = response
        self.timings = timings

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)


def _call_of(response: Any) -> tuple[RecordedCall, str] | None:
    """The call a stream being built belongs to: the one being sent, or the raw
    response's that waits for its reader to parse it."""
    building = _building.get()
    if building is None and response is not None:
        try:
            building = _waiting.pop(response, None)
        except TypeError:  # not weakly referenceable: no call waits on it
            return None
    return building


def _base_del(base: Any) -> None:
    """The SDK stream's own ``__del__``, should a release give it one."""
    delete = getattr(base, "__del__", None)
    if delete is not None:
        delete()


def _left(stream: Any) -> None:
    """The reader left an observed stream (closed it, or dropped it): its call ends there
    if it has not ended."""
    watching = getattr(stream, "_llamatelemetry", None)
    if watching is not None:
        watching.left()


def _unread(building: tuple[RecordedCall, str]) -> None:
    """A raw response whose stream was never parsed is gone: its call ends, cut short."""
    building[0].end(complete=False)
