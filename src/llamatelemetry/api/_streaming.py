"""Streams of typed chunks over Server-Sent Events.

``ChunkDecoder`` holds everything a stream does besides I/O (SSE framing, JSON, error
events, the end marker), so the sync ``Stream`` and the async twin only move bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from ._errors import APIResponseError, StreamError, StreamInterruptedError
from ._sse import SSEDecoder
from ._transport_errors import translate_transport_error

__all__ = ["StreamFormat", "ChunkDecoder", "Stream", "StreamObserver"]

log = logging.getLogger("llamatelemetry")

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

    __slots__ = ("_format", "_sse", "done")

    def __init__(self, format: StreamFormat[T]) -> None:
        self._format = format
        self._sse = SSEDecoder()
        self.done = False

    def feed(self, data: bytes) -> list[T]:
        chunks: list[T] = []
        if self.done:
            return chunks
        for event in self._sse.feed(data):
            payload = event.data
            if payload == "[DONE]":
                self.done = True
                break
            if not payload:
                continue
            try:
                obj = json.loads(payload)
            except ValueError:
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
        return chunks

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


class Stream(Generic[T]):
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
        self._iterator = self._iterate()
        self._closed = False
        self._error: BaseException | None = None
        self._observer = observer

    def _iterate(self) -> Iterator[T]:
        observer = self._observer
        try:
            for data in self.response.iter_bytes():
                for chunk in self._decoder.feed(data):
                    if observer is not None:
                        observer.on_chunk(chunk)
                    yield chunk
                if self._decoder.done:
                    return
            self._decoder.finish()
        except httpx.TransportError as exc:
            self._error = translate_transport_error(exc, streaming=True)
            raise self._error from exc
        except GeneratorExit:  # closed early (close(), garbage collection): not an error
            raise
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self.close()

    def __iter__(self) -> Iterator[T]:
        return self._iterator

    def __next__(self) -> T:
        return next(self._iterator)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the connection; safe to call any number of times."""
        if self._closed:
            return
        self._closed = True
        try:
            self.response.close()
        finally:
            if self._observer is not None:
                self._observer.on_close(self._error, complete=self._decoder.done)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def until_done(self) -> list[T]:
        """Consume the rest of the stream and return its chunks."""
        return list(self)
