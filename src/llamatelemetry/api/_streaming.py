"""Streams of typed chunks over Server-Sent Events.

``ChunkDecoder`` holds everything a stream does besides I/O (SSE framing, JSON, error
events, the end marker), so the sync ``Stream`` and the async twin only move bytes.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from .._closing import Closing
from ._errors import APIError, APIResponseError, StreamError, StreamInterruptedError
from ._sse import SSEDecoder
from ._transport_errors import translate_transport_error

__all__ = ["StreamFormat", "ChunkDecoder", "Stream", "StreamObserver"]

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
        self._decoder = ChunkDecoder(format)
        self._pending: deque[T] = deque()
        self._reads: Iterator[bytes] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._complete = False
        self._observer = observer

    def __next__(self) -> T:
        # A plain state machine, not a generator: a generator would hold ``self`` in a
        # reference cycle, and an abandoned stream would then wait for the cycle collector
        # before releasing its connection and ending its span.
        while True:
            if self._pending:
                chunk = self._pending.popleft()
                if self._observer is not None:
                    self._observer.on_chunk(chunk)
                return chunk
            if self._closed:
                raise StopIteration
            decoder = self._decoder
            if decoder.done:
                if decoder.error is not None:
                    self._fail(decoder.error)
                self._complete = True
                self._drain()
                self.close()
                raise StopIteration
            try:
                if self._reads is None:
                    self._reads = self.response.iter_bytes()
                data = next(self._reads, None)
                if data is None:
                    decoder.finish()  # raises: the body ended before the end marker
                else:
                    self._pending.extend(decoder.feed(data))
            except httpx.TransportError as exc:
                self._fail(translate_transport_error(exc, streaming=True), exc)
            except httpx.DecodingError as exc:
                self._fail(APIResponseError(f"the stream's bytes could not be decoded: {exc}"), exc)
            except BaseException as exc:
                self._fail(exc)

    def _fail(self, error: BaseException, cause: BaseException | None = None) -> NoReturn:
        self._error = error
        self.close()
        if cause is not None:
            raise error from cause
        raise error

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
        return self._closed

    def close(self) -> None:
        """Release the connection; safe to call any number of times."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        try:
            self.response.close()
        finally:
            if self._observer is not None:
                self._observer.on_close(self._error, complete=self._complete)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def until_done(self) -> list[T]:
        """Consume the rest of the stream and return its chunks."""
        return list(self)
