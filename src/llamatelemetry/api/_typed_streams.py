"""Streams of typed chunks over Server-Sent Events.

``ChunkDecoder`` holds everything a stream does besides I/O (SSE framing, JSON, error
events, the end marker), so the sync ``Stream`` and the async twin only move bytes.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import httpx
from pydantic import ValidationError

from .._closing import AsyncClosing, Closing
from . import _deadline_backend
from ._api_errors import (
    APIError,
    APIResponseError,
    APITimeoutError,
    ConcurrentIterationError,
    EventLoopError,
    ForkError,
    StreamError,
    StreamInterruptedError,
)
from ._calls_and_callers import Accumulator, ObservableStream, StreamFormat, StreamObserver
from ._content_decoding import acontent, content
from ._sse import DEFAULT_MAX_EVENT_BYTES, EventTooLargeError, SSEDecoder
from ._transport_errors import translate_transport_error

if TYPE_CHECKING:
    from ._responses_and_messages import Message, MessageStreamEvent, Response, ResponseStreamEvent
    from ._types import ChatCompletion, ChatCompletionChunk

__all__ = [
    "ChunkDecoder",
    "Stream",
    "AsyncStream",
    "close_soon",
]

log = logging.getLogger("llamatelemetry")


T = TypeVar("T")


class ChunkDecoder(Generic[T]):
    """Bytes in, typed chunks out; raises on error events and tracks completion."""

    __slots__ = ("_format", "_sse", "done", "error")

    def __init__(
        self, format: StreamFormat[T], max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self._format = format
        self._sse = SSEDecoder(max_event_bytes)
        self.done = False
        self.error: APIError | None = None  # raised once the chunks before it are delivered

    def feed(self, data: bytes) -> list[T]:
        """The chunks ``data`` completes; an error event ends decoding and is kept in
        ``error`` so that the chunks before it are not lost."""
        chunks: list[T] = []
        try:
            self._feed(data, chunks)
        except APIError as exc:
            self.error = exc
            self.done = True
        return chunks

    def _feed(self, data: bytes, chunks: list[T]) -> None:
        if self.done:
            return
        parse_json = self._format.parse_json
        if parse_json is not None:
            payloads = self._sse.feed_data_only(data)
            if payloads is not None:
                for payload in payloads:
                    if payload == b"[DONE]":
                        self.done = True
                        return
                    if payload and b'"error"' not in payload:  # error events go the long way
                        try:
                            chunks.append(parse_json(payload))
                            continue
                        except ValueError:  # pydantic's ValidationError, bad JSON included
                            pass
                    self._event(payload.decode("utf-8", errors="replace"), None, chunks)
                    if self.done:
                        return
                return
        too_large: EventTooLargeError | None = None
        try:
            events = self._sse.feed(data)
        except EventTooLargeError as exc:  # the events before it are still delivered
            events, too_large = exc.events, exc
        for event in events:
            self._event(event.data, event.event, chunks)
            if self.done:
                return
        if too_large is not None:
            raise APIResponseError(f"the stream was ended: {too_large}") from None

    def _event(self, payload: str, name: str | None, chunks: list[T]) -> None:
        """One event's data: a chunk appended, the end marked, or the error raised."""
        if payload == "[DONE]":
            self.done = True
            return
        if not payload:
            return
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            raise APIResponseError(
                f"stream event is not JSON: {payload[:200]!r}", body=payload
            ) from None
        if name == "error" or (isinstance(obj, dict) and "error" in obj):
            raise _stream_error(obj)
        try:
            chunk = self._format.parse(obj)
        except (ValidationError, TypeError, ValueError) as exc:
            raise APIResponseError(
                f"stream chunk has an unexpected shape: {exc}", body=obj
            ) from None
        chunks.append(chunk)
        if self._format.ends_with_done or not isinstance(obj, dict):
            return
        last_types = self._format.last_types
        if obj.get("type") in last_types if last_types else obj.get("stop"):
            self.done = True

    def finish(self) -> None:
        """Called at end of input: a stream that never said it was complete is an error."""
        if not self.done:
            if self._format.ends_with_done:
                marker = "data: [DONE]"
            elif self._format.last_types:
                marker = "an event " + " or ".join(sorted(self._format.last_types))
            else:
                marker = 'a chunk with "stop": true'
            raise StreamInterruptedError(
                f"the connection closed before the end of the stream ({marker} never arrived); "
                "the output is incomplete"
            )


def _stream_error(obj: Any) -> StreamError:
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        message = str(err.get("message") or err)
        code = err.get("code")
        return StreamError(
            message,
            code=code if isinstance(code, int) else None,
            type=err.get("type") if isinstance(err.get("type"), str) else None,
            body=obj,
        )
    return StreamError(str(err), body=obj)


class _Step(enum.Enum):
    READ = "read"  # nothing decoded is waiting: read more bytes
    END = "end"  # the end marker was reached and every chunk delivered
    CLOSED = "closed"


class _StreamState(Generic[T]):
    """Everything a stream does besides I/O, shared by ``Stream`` and ``AsyncStream``."""

    __slots__ = (
        "decoder",
        "pending",
        "closed",
        "error",
        "complete",
        "observer",
        "deadline",
        "forks",
        "accumulator",
    )

    def __init__(
        self,
        format: StreamFormat[T],
        observer: StreamObserver | None,
        deadline: float | None = None,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.decoder = ChunkDecoder(format, max_event_bytes)
        self.deadline = deadline  # monotonic time by which the whole stream must be read
        self.forks = _deadline_backend.forks
        self.pending: deque[T] = deque()
        self.closed = False
        self.error: BaseException | None = None
        self.complete = False
        self.observer = observer
        self.accumulator: Accumulator | None = (
            None if format.accumulator is None else format.accumulator()
        )

    def next_step(self) -> T | _Step:
        """The next chunk to hand out, or what the transport must do first."""
        if self.pending:
            chunk = self.pending.popleft()
            if self.accumulator is not None:
                self.accumulator.add(chunk)
            if self.observer is not None:
                self.observer.on_chunk(chunk)
            return chunk
        if self.closed:
            return _Step.CLOSED
        if self.decoder.done:
            if self.decoder.error is not None:
                raise self.decoder.error
            self.complete = True
            return _Step.END
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.timed_out()
        if self.forks != _deadline_backend.forks:  # not a byte of the parent's connection
            raise ForkError(
                "this stream was opened before os.fork(): its connection is the "
                "parent's; read it in the parent, or open it in the child"
            )
        return _Step.READ

    def timed_out(self) -> APITimeoutError:
        return APITimeoutError(
            "the stream's total_timeout passed before its end; the output is incomplete"
        )

    def receive(self, data: bytes | None) -> None:
        """Bytes read from the body, or None at its end (an error without the end marker)."""
        if data is None:
            self.decoder.finish()
        else:
            self.pending.extend(self.decoder.feed(data))

    def failure(self, exc: BaseException) -> BaseException:
        """The error the user sees for ``exc``; remembered for the observer."""
        if isinstance(exc, httpx.TimeoutException) and _deadline_backend.has_passed(self.deadline):
            error: BaseException = self.timed_out()
        elif isinstance(exc, httpx.TransportError):
            error = translate_transport_error(exc, streaming=True)
        elif isinstance(exc, httpx.DecodingError):
            error = APIResponseError(f"the stream's bytes could not be decoded: {exc}")
        else:
            error = exc
        self.error = error
        return error

    def begin_close(self) -> bool:
        """Mark closed; False when it already was (close is idempotent)."""
        if self.closed:
            return False
        self.closed = True
        self.pending.clear()
        return True

    def final(self) -> Any:
        if self.accumulator is None:
            raise TypeError(
                "this stream has no final answer to give (it is a completion stream): "
                "read its chunks with until_done()"
            )
        return self.accumulator.completion()

    def notify_closed(self) -> None:
        if self.observer is not None:
            self.observer.on_close(self.error, complete=self.complete)


_CONCURRENT = (
    "this stream is being read by another thread or task: a stream's chunks can go "
    "to one reader only (read it in one place and hand the chunks on)"
)


class Stream(ObservableStream, Closing, Generic[T]):
    """An iterator of typed chunks that owns its HTTP response.

    Iterate it, use it as a context manager, or ``close()`` it when you stop early: its
    connection is released either way (a stream's connection is not reused: llama-server
    closes it after the answer). An abandoned stream is closed when it is garbage-collected.
    One stream is read by one thread or task at a time (``ConcurrentIterationError``).
    """

    def __init__(
        self,
        response: httpx.Response,
        format: StreamFormat[T],
        *,
        observer: StreamObserver | None = None,
        deadline: float | None = None,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.response = response
        self._state = _StreamState(format, observer, deadline, max_event_bytes)
        self._reads: Iterator[bytes] | None = None
        self._reading = threading.Lock()

    def observe(self, observer: StreamObserver) -> None:
        """Have ``observer`` told of every chunk handed out and, exactly once, of the end
        (one observer per stream: a second replaces the first). The hook telemetry uses."""
        self._state.observer = observer

    @property
    def accumulator(self) -> Accumulator | None:
        """What folds the chunks into the whole answer (its ``completion()`` is what they
        add up to so far), or None for a stream whose chunks add up to nothing."""
        return self._state.accumulator

    def __next__(self) -> T:
        if not self._reading.acquire(blocking=False):
            raise ConcurrentIterationError(_CONCURRENT)
        try:
            return self._next()
        finally:
            self._reading.release()

    def _next(self) -> T:
        # A plain state machine, not a generator: a generator would hold ``self`` in a
        # reference cycle, and an abandoned stream would then wait for the cycle collector
        # before releasing its connection and ending its span.
        state = self._state
        while True:
            try:
                step = state.next_step()
                if step is _Step.READ:
                    if self._reads is None:
                        self._reads = content(self.response, own_connection=True)
                    if state.deadline is None:
                        state.receive(next(self._reads, None))
                    else:  # every socket wait of this read is bounded by the time left
                        token = _deadline_backend.call_deadline.set(state.deadline)
                        try:
                            state.receive(next(self._reads, None))
                        finally:
                            _deadline_backend.call_deadline.reset(token)
                    continue
            except ForkError:
                state.begin_close()  # the parent's response is not touched from here
                raise
            except BaseException as exc:
                if state.closed and isinstance(exc, Exception):
                    # close() from another thread broke the read: the stream was stopped,
                    # no network failure happened
                    raise StopIteration from None
                error = state.failure(exc)
                self.close()
                if error is exc:
                    raise
                raise error from exc
            if step is _Step.END:  # the connection closes (streams ask for Connection: close)
                self.close()
                raise StopIteration
            if step is _Step.CLOSED:
                raise StopIteration
            return step

    def __iter__(self) -> Iterator[T]:
        return self

    @property
    def closed(self) -> bool:
        return self._state.closed

    def close(self) -> None:
        """Release the connection; safe to call any number of times."""
        if not self._state.begin_close():
            return
        try:
            self.response.close()
        finally:
            self._state.notify_closed()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None and not state.closed:
            self.close()

    def until_done(self) -> list[T]:
        """Consume the rest of the stream and return its chunks."""
        return list(self)

    @overload
    def get_final_completion(self: Stream[ChatCompletionChunk]) -> ChatCompletion: ...
    @overload
    def get_final_completion(self: Stream[ResponseStreamEvent]) -> Response: ...
    @overload
    def get_final_completion(self: Stream[MessageStreamEvent]) -> Message: ...
    def get_final_completion(self) -> Any:
        """What the whole stream adds up to: a chat stream's ``ChatCompletion`` (content,
        ``reasoning_content``, tool calls merged by index, finish reason, usage, timings), a
        Responses stream's ``Response``, a Messages stream's ``Message``. Reads what is left
        of the stream first, so it can be called before, during or after iterating; a stream
        closed early gives what had arrived."""
        for _ in self:
            pass
        return self._state.final()


_closing_tasks: set[asyncio.Task[None]] = set()


def close_soon(aclose: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """From ``__del__``, where nothing can be awaited: run ``aclose()`` on the running
    loop, if there is one, holding the task so it is not destroyed while pending."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(aclose())
    _closing_tasks.add(task)
    task.add_done_callback(_closing_tasks.discard)


class AsyncStream(ObservableStream, AsyncClosing, Generic[T]):
    """The async twin of :class:`Stream`: ``async for``, ``async with``, ``aclose()``.

    A task cancelled while it waits for the next chunk closes the response before the
    cancellation propagates, so the connection and the server's slot are freed.
    """

    def __init__(
        self,
        response: httpx.Response,
        format: StreamFormat[T],
        *,
        observer: StreamObserver | None = None,
        deadline: float | None = None,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.response = response
        self._state = _StreamState(format, observer, deadline, max_event_bytes)
        self._reads: AsyncIterator[bytes] | None = None
        self._reading = False
        self._loop = asyncio.get_running_loop()

    def observe(self, observer: StreamObserver) -> None:
        """Have ``observer`` told of every chunk handed out and, exactly once, of the end
        (one observer per stream: a second replaces the first). The hook telemetry uses."""
        self._state.observer = observer

    @property
    def accumulator(self) -> Accumulator | None:
        """What folds the chunks into the whole answer (its ``completion()`` is what they
        add up to so far), or None for a stream whose chunks add up to nothing."""
        return self._state.accumulator

    async def __anext__(self) -> T:
        if self._reading:  # no await between the check and the set: tasks cannot interleave
            raise ConcurrentIterationError(_CONCURRENT)
        self._reading = True
        try:
            return await self._next()
        finally:
            self._reading = False

    async def _next(self) -> T:
        state = self._state
        while True:
            try:
                step = state.next_step()
                if step is _Step.READ:
                    if asyncio.get_running_loop() is not self._loop:
                        raise EventLoopError(
                            "this stream was opened on another event loop (an asyncio.run() "
                            "that has ended?): read it on the loop that opened it"
                        )
                    if self._reads is None:
                        self._reads = acontent(self.response, own_connection=True)
                    if state.deadline is None:
                        state.receive(await anext(self._reads, None))
                    else:
                        token = _deadline_backend.call_deadline.set(state.deadline)
                        try:
                            state.receive(await anext(self._reads, None))
                        finally:
                            _deadline_backend.call_deadline.reset(token)
                    continue
            except (ForkError, EventLoopError):
                state.begin_close()  # a response of another process or loop is left alone
                raise
            except BaseException as exc:
                if state.closed and isinstance(exc, Exception):
                    raise StopAsyncIteration from None  # aclose() from another task
                error = state.failure(exc)
                await self.aclose()
                if error is exc:
                    raise
                raise error from exc
            if step is _Step.END:
                await self.aclose()
                raise StopAsyncIteration
            if step is _Step.CLOSED:
                raise StopAsyncIteration
            return step

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    @property
    def closed(self) -> bool:
        return self._state.closed

    async def aclose(self) -> None:
        """Release the connection; safe to call any number of times."""
        if not self._state.begin_close():
            return
        try:
            await self.response.aclose()
        finally:
            self._state.notify_closed()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is None or not state.begin_close():
            return
        # Garbage-collected unclosed: end the telemetry now, and close the response on
        # the running loop when there is one (there is no awaiting in __del__).
        state.notify_closed()
        close_soon(self.response.aclose)

    async def until_done(self) -> list[T]:
        return [chunk async for chunk in self]

    @overload
    async def get_final_completion(
        self: AsyncStream[ChatCompletionChunk],
    ) -> ChatCompletion: ...
    @overload
    async def get_final_completion(self: AsyncStream[ResponseStreamEvent]) -> Response: ...
    @overload
    async def get_final_completion(self: AsyncStream[MessageStreamEvent]) -> Message: ...
    async def get_final_completion(self) -> Any:
        """The async twin of :meth:`Stream.get_final_completion`."""
        async for _ in self:
            pass
        return self._state.final()
