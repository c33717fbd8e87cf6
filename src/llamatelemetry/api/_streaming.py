"""Streams of typed chunks over Server-Sent Events.

``ChunkDecoder`` holds everything a stream does besides I/O (SSE framing, JSON, error
events, the end marker), so the sync ``Stream`` and the async twin only move bytes.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from .._closing import AsyncClosing, Closing
from ._errors import APIError, APIResponseError, StreamError, StreamInterruptedError
from ._sse import SSEDecoder
from ._transport_errors import translate_transport_error

__all__ = [
    "StreamFormat", "ChunkDecoder", "Stream", "AsyncStream", "StreamObserver", "close_soon",
]

log = logging.getLogger("llamatelemetry")

_DRAIN_LIMIT = 64 * 1024  # bytes read after the end marker before giving up on reuse

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamFormat(Generic[T]):
    """How one endpoint streams: the chunk type, and how the stream says it is complete.

    OpenAI-style endpoints end with ``data: [DONE]``; llama.cpp's native endpoints end with
    a chunk whose ``stop`` is true.
    """

    parse: Callable[[Any], T]
    ends_with_done: bool = True


class ChunkDecoder(Generic[T]):
    """Bytes in, typed chunks out; raises on error events and tracks completion."""

    __slots__ = ("_format", "_sse", "done", "error")

    def __init__(self, format: StreamFormat[T]) -> None:
        self._format = format
        self._sse = SSEDecoder()
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
        for event in self._sse.feed(data):
            payload = event.data
            if payload == "[DONE]":
                self.done = True
                break
            if not payload:
                continue
            try:
                obj = json.loads(payload)
            except (ValueError, RecursionError):
                raise APIResponseError(
                    f"stream event is not JSON: {payload[:200]!r}", body=payload
                ) from None
            if event.event == "error" or (isinstance(obj, dict) and "error" in obj):
                raise _stream_error(obj)
            try:
                chunk = self._format.parse(obj)
            except (ValidationError, TypeError, ValueError) as exc:
                raise APIResponseError(
                    f"stream chunk has an unexpected shape: {exc}", body=obj
                ) from None
            chunks.append(chunk)
            if not self._format.ends_with_done and isinstance(obj, dict) and obj.get("stop"):
                self.done = True
                break

    def finish(self) -> None:
        """Called at end of input: a stream that never said it was complete is an error."""
        if not self.done:
            marker = "data: [DONE]" if self._format.ends_with_done else 'a chunk with "stop": true'
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


class StreamObserver(Protocol):
    """Told of every chunk and, exactly once, of the end: what telemetry hooks into."""

    def on_chunk(self, chunk: Any) -> None: ...

    def on_close(self, error: BaseException | None, *, complete: bool) -> None: ...


class _Step(enum.Enum):
    READ = "read"  # nothing decoded is waiting: read more bytes
    END = "end"  # the end marker was reached and every chunk delivered
    CLOSED = "closed"


class _StreamState(Generic[T]):
    """Everything a stream does besides I/O, shared by ``Stream`` and ``AsyncStream``."""

    __slots__ = ("decoder", "pending", "closed", "error", "complete", "observer")

    def __init__(self, format: StreamFormat[T], observer: StreamObserver | None) -> None:
        self.decoder = ChunkDecoder(format)
        self.pending: deque[T] = deque()
        self.closed = False
        self.error: BaseException | None = None
        self.complete = False
        self.observer = observer

    def next_step(self) -> T | _Step:
        """The next chunk to hand out, or what the transport must do first."""
        if self.pending:
            chunk = self.pending.popleft()
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
        return _Step.READ

    def receive(self, data: bytes | None) -> None:
        """Bytes read from the body, or None at its end (an error without the end marker)."""
        if data is None:
            self.decoder.finish()
        else:
            self.pending.extend(self.decoder.feed(data))

    def failure(self, exc: BaseException) -> BaseException:
        """The error the user sees for ``exc``; remembered for the observer."""
        if isinstance(exc, httpx.TransportError):
            error: BaseException = translate_transport_error(exc, streaming=True)
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

    def notify_closed(self) -> None:
        if self.observer is not None:
            self.observer.on_close(self.error, complete=self.complete)


class Stream(Closing, Generic[T]):
    """An iterator of typed chunks that owns its HTTP response.

    Iterate it, use it as a context manager, or ``close()`` it when you stop early: the
    connection goes back to the pool (or is dropped, when the server is still sending)
    either way. An abandoned stream is closed when it is garbage-collected.
    """

    def __init__(
        self,
        response: httpx.Response,
        format: StreamFormat[T],
        *,
        observer: StreamObserver | None = None,
    ) -> None:
        self.response = response
        self._state = _StreamState(format, observer)
        self._reads: Iterator[bytes] | None = None

    @property
    def _observer(self) -> StreamObserver | None:
        return self._state.observer

    @_observer.setter
    def _observer(self, observer: StreamObserver | None) -> None:
        self._state.observer = observer

    def __next__(self) -> T:
        # A plain state machine, not a generator: a generator would hold ``self`` in a
        # reference cycle, and an abandoned stream would then wait for the cycle collector
        # before releasing its connection and ending its span.
        state = self._state
        while True:
            try:
                step = state.next_step()
                if step is _Step.READ:
                    if self._reads is None:
                        self._reads = self.response.iter_bytes()
                    state.receive(next(self._reads, None))
                    continue
            except BaseException as exc:
                error = state.failure(exc)
                self.close()
                if error is exc:
                    raise
                raise error from exc
            if step is _Step.END:
                self._drain()
                self.close()
                raise StopIteration
            if step is _Step.CLOSED:
                raise StopIteration
            return step

    def _drain(self) -> None:
        """Read the few bytes after the end marker (the chunked-body terminator) so the
        connection goes back to the pool instead of being dropped."""
        if self._reads is None:
            return
        left = _DRAIN_LIMIT
        try:
            for data in self._reads:
                left -= len(data)
                if left < 0:
                    return
        except httpx.HTTPError:
            return

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


class AsyncStream(AsyncClosing, Generic[T]):
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
    ) -> None:
        self.response = response
        self._state = _StreamState(format, observer)
        self._reads: AsyncIterator[bytes] | None = None

    @property
    def _observer(self) -> StreamObserver | None:
        return self._state.observer

    @_observer.setter
    def _observer(self, observer: StreamObserver | None) -> None:
        self._state.observer = observer

    async def __anext__(self) -> T:
        state = self._state
        while True:
            try:
                step = state.next_step()
                if step is _Step.READ:
                    if self._reads is None:
                        self._reads = self.response.aiter_bytes()
                    state.receive(await anext(self._reads, None))
                    continue
            except BaseException as exc:
                error = state.failure(exc)
                await self.aclose()
                if error is exc:
                    raise
                raise error from exc
            if step is _Step.END:
                await self._drain()
                await self.aclose()
                raise StopAsyncIteration
            if step is _Step.CLOSED:
                raise StopAsyncIteration
            return step

    async def _drain(self) -> None:
        if self._reads is None:
            return
        left = _DRAIN_LIMIT
        try:
            async for data in self._reads:
                left -= len(data)
                if left < 0:
                    return
        except httpx.HTTPError:
            return

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
