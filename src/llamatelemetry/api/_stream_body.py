"""A streamed answer's body read straight from its connection.

A token of llama-server's stream arrives in a network read of its own, and httpx hands
each read through five generators, httpcore's event loop and h11's state machine: about
three quarters of the CPU a chunk costs the client (measured: 65 µs of a read's CPU
against 19 µs for the socket alone). A stream's connection is never reused (streams ask
for ``Connection: close``), so once the headers are in, its body can be read from
httpcore's network stream (the same one, with the client's deadline on every read), its
framing undone here, and the response closed as usual, which closes the connection.

This reaches into httpx's and httpcore's objects (the h11 connection holds the bytes
read with the headers). When anything is not exactly as expected (another transport,
HTTP/2, a trace hook, a newer httpx) the body is read through httpx as before. And before
the first body is read this way, a check proves it on the installed versions: a few
answers (chunked, with a length, until the close, cut short) are read in memory both ways,
through httpx's own client and pool, and must give the same bytes, the same error and a
closed connection. If they do not, every body is read through httpx, and one DEBUG line on
the ``llamatelemetry`` logger says why.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import h11
import httpcore
import httpx

from .._fastpath import FastPath, in_new_loop
from . import _memory_backend

__all__ = [
    "ASYNC_PATH",
    "SYNC_PATH",
    "ChunkedFraming",
    "Framing",
    "LengthFraming",
    "UntilCloseFraming",
    "abody",
    "body",
]

log = logging.getLogger("llamatelemetry")

READ_BYTES = 64 * 1024  # as httpcore
MAX_LINE = 100 * 1024  # bytes of an incomplete line held: h11's limit in httpcore

# httpcore's errors as httpx raises them (what httpx's own mapping does for its streams).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    for core, mapped in _ERRORS:
        if isinstance(exc, core):
            return mapped(str(exc), request=request)
    return exc


def _incomplete(detail: str) -> httpx.RemoteProtocolError:
    # h11's words, so the error reads as it did when httpx read the body
    return httpx.RemoteProtocolError(
        f"peer closed connection without sending complete message body ({detail})"
    )


class Framing:
    """Sans-IO: the bytes of the connection in, the bytes of the body out."""

    done = False
    # An error found after body bytes of the same read: raised once they are delivered.
    error: httpx.RemoteProtocolError | None = None

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> None:
        """The peer closed the connection: an error unless the body was complete."""


class UntilCloseFraming(Framing):
    """No length and no chunks (HTTP/1.0 style): the body ends when the connection does."""

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> None:
        self.done = True


class LengthFraming(Framing):
    __slots__ = ("_left", "_length")

    def __init__(self, length: int) -> None:
        self._length = length
        self._left = length
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        if len(data) >= self._left:
            data = data[: self._left]
            self.done = True
        self._left -= len(data)
        return data

    def end(self) -> None:
        if not self.done:
            got = self._length - self._left
            raise _incomplete(f"received {got} bytes, expected {self._length}")


class ChunkedFraming(Framing):
    """``Transfer-Encoding: chunked``, read as h11 reads it: a size line of 1 to 20 hex
    digits (extensions ignored), the data, CRLF; a zero size, then trailer lines up to a
    blank line, checked as h11 checks them. An incomplete line may hold at most
    ``MAX_LINE`` bytes (h11's limit in httpcore), and one that arrives in many reads is
    appended and searched once, not once a read."""

    __slots__ = ("_buffer", "_left", "_scan", "_state", "done", "error")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._buffer = bytearray()  # bytes not framed yet: an incomplete line, a split CRLF
        self._scan = 0  # where in _buffer the search for a line end resumes
        self._left = 0  # bytes of the current chunk's data still to come
        self._state = self._SIZE
        self.error = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            raise self.error
        if self.done:
            return b""
        if self._state == self._SIZE and not self._buffer:
            # The usual read: one whole chunk, "<size>\r\n<data>\r\n".
            end = data.find(b"\r\n", 0, 64)
            if end > 0 and data.endswith(b"\r\n"):
                size = _chunk_size(data[:end])
                if size and end + 4 + size == len(data):
                    return data[end + 2 : -2]
        out: list[bytes] = []
        try:
            self._frames(data, out)
        except httpx.RemoteProtocolError as exc:
            if not out:
                raise
            self.error = exc  # raised after the data before it is delivered, as h11 does
        return b"".join(out)

    def _frames(self, fresh: bytes, out: list[bytes]) -> None:
        data: bytes | bytearray = fresh
        if self._buffer:
            self._buffer += fresh
            data = self._buffer
        scan, self._scan = self._scan, 0
        i, n = 0, len(data)
        try:
            while i < n and not self.done:
                state = self._state
                if state == self._DATA:
                    take = min(self._left, n - i)
                    out.append(bytes(data[i : i + take]))
                    i += take
                    self._left -= take
                    if not self._left:
                        self._state = self._DATA_END
                elif state == self._DATA_END:
                    footer = bytes(data[i : i + 2])
                    if footer != b"\r\n"[: len(footer)]:
                        raise _protocol_error(f"malformed chunk footer: {footer!r}")
                    if len(footer) < 2:
                        break
                    i += 2
                    self._state = self._SIZE
                elif state == self._SIZE:
                    end = data.find(b"\r\n", max(i, scan))
                    if end < 0:
                        self._scan = max(0, n - i - 1)
                        break
                    line = bytes(data[i:end])
                    size = _chunk_size(line)
                    if size is None:
                        raise _protocol_error(f"illegal chunk header: {line[:40]!r}")
                    i = end + 2
                    if size == 0:
                        self._state = self._TRAILER
                    else:
                        self._left = size
                        self._state = self._DATA
                else:
                    if data[i : i + 1] == b"\n" or data[i : i + 2] == b"\r\n":
                        self.done = True  # no trailers
                        break
                    blank = _BLANK_LINE.search(data, max(i, scan))
                    if blank is None:
                        self._scan = max(0, n - i - 2)
                        break
                    _check_trailers(bytes(data[i : blank.start()]))
                    self.done = True
        finally:
            rest = n - i
            if rest > MAX_LINE and not self.done:
                raise _protocol_error("Receive buffer too long")
            if data is self._buffer:
                del self._buffer[:i]
            elif rest and not self.done:
                self._buffer = bytearray(data[i:])

    def end(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.done:
            raise _incomplete("incomplete chunked read")


def _check_trailers(block: bytes) -> None:
    """Trailer lines as h11 takes them: obsolete line folds joined, each a header line,
    then the fields validated as h11 validates an EndOfMessage's headers."""
    fields: list[tuple[bytes, bytes]] = []
    lines: list[bytes] = []
    for line in block.split(b"\n"):
        line = line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):  # an obsolete line fold continues the last line
            if not lines:
                raise _protocol_error("continuation line at start of trailers")
            lines[-1] += b" " + line.lstrip(b" \t")
        else:
            lines.append(line)
    for line in lines:
        if not _HEADER_LINE.fullmatch(line):
            raise _protocol_error(f"illegal trailer line: {line[:40]!r}")
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    try:
        h11.EndOfMessage(headers=fields)
    except h11.ProtocolError as exc:
        raise _protocol_error(f"bad trailers: {exc}") from None


# h11's grammar (its _abnf module), for chunk-size lines and trailer lines.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")
_HEADER_LINE = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
)
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _chunk_size(line: bytes) -> int | None:
    """The size of a chunk-size line (``1a;ext=v``), or None when it is not one."""
    match = _CHUNK_SIZE.fullmatch(line)
    return None if match is None else int(match.group(1), 16)


def _protocol_error(message: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(message)


def _taken_over(response: httpx.Response) -> tuple[Any, bytes, Framing] | None:
    """The network stream, the bytes h11 holds, and the body's framing; None when the body
    must be read through httpx."""
    if response.is_stream_consumed or response.num_bytes_downloaded:
        return None
    if "trace" in response.request.extensions:  # its hooks see httpcore read the body
        return None
    if response.status_code in (204, 304) or response.request.method == "HEAD":
        return None  # no body whatever the headers say: httpx knows what to do
    network = response.extensions.get("network_stream")
    # httpx's bound stream > httpx's response stream > httpcore's pool stream > the
    # connection's own stream > the connection
    connection = getattr(
        getattr(
            getattr(getattr(response.stream, "_stream", None), "_httpcore_stream", None),
            "_stream",
            None,
        ),
        "_connection",
        None,
    )
    state = getattr(connection, "_h11_state", None)
    if (
        network is None
        or not isinstance(state, h11.Connection)
        or getattr(connection, "_network_stream", None) is not network
        or state.their_state is not h11.SEND_BODY
    ):
        return None
    held, _closed = state.trailing_data
    headers = response.headers
    if "chunked" in headers.get("transfer-encoding", "").lower():
        framing: Framing = ChunkedFraming()
    elif "content-length" in headers:
        try:
            framing = LengthFraming(int(headers["content-length"]))
        except ValueError:
            return None
    else:
        framing = UntilCloseFraming()
    return network, held, framing


class _Reading:
    """What the sync and async readers share: the bytes h11 held come first, then reads
    bounded by the request's read timeout, each undone by the framing."""

    __slots__ = ("_framing", "_held", "_network", "_request", "_timeout")

    def __init__(self, response: httpx.Response, network: Any, held: bytes, framing: Framing):
        self._network = network
        self._held = held
        self._framing = framing
        self._request = response.request
        self._timeout = response.request.extensions.get("timeout", {}).get("read")

    def _from_held(self) -> bytes:
        data, self._held = self._held, b""
        return self._from_read(data)

    def _from_read(self, data: bytes) -> bytes:
        """The body in ``data`` as read from the connection (b"" at its end)."""
        try:
            if not data:
                self._framing.end()  # raises unless the body was complete
                return b""
            return self._framing.feed(data)
        except httpx.TransportError as exc:
            exc.request = self._request  # as httpx's errors carry it: the method and URL
            raise

    def _raise_pending(self) -> None:
        """An error found after the bytes already delivered: before reading any more."""
        if self._framing.error is not None:
            self._from_read(b"")

    def _error(self, exc: Exception) -> Exception | None:
        """The httpx error for an error of httpcore's network stream (None: no such)."""
        mapped = _httpx_error(exc, self._request)
        return None if mapped is exc else mapped


class _Body(_Reading, Iterator[bytes]):
    __slots__ = ()

    def __next__(self) -> bytes:
        while not self._framing.done:
            if self._held:
                out = self._from_held()
            else:
                self._raise_pending()
                try:
                    data = self._network.read(READ_BYTES, self._timeout)
                except Exception as exc:
                    if (mapped := self._error(exc)) is None:
                        raise
                    raise mapped from exc
                out = self._from_read(data)
            if out:
                return out
        raise StopIteration


class _AsyncBody(_Reading, AsyncIterator[bytes]):
    __slots__ = ()

    async def __anext__(self) -> bytes:
        while not self._framing.done:
            if self._held:
                out = self._from_held()
            else:
                self._raise_pending()
                try:
                    data = await self._network.read(READ_BYTES, self._timeout)
                except Exception as exc:
                    if (mapped := self._error(exc)) is None:
                        raise
                    raise mapped from exc
                out = self._from_read(data)
            if out:
                return out
        raise StopAsyncIteration


def body(response: httpx.Response) -> Iterator[bytes]:
    """The raw (still encoded) body of a streamed response, read from its connection when
    that can be done, else through httpx."""
    taken = _taken_over(response)
    if (
        taken is None
        or not isinstance(response.stream, httpx.SyncByteStream)
        or not SYNC_PATH.trusted
    ):
        return response.iter_raw()
    response.is_stream_consumed = True  # httpx refuses a second read, as after iter_raw
    return _Body(response, *taken)


def abody(response: httpx.Response) -> AsyncIterator[bytes]:
    taken = _taken_over(response)
    if (
        taken is None
        or not isinstance(response.stream, httpx.AsyncByteStream)
        or not ASYNC_PATH.trusted
    ):
        return response.aiter_raw()
    response.is_stream_consumed = True
    return _AsyncBody(response, *taken)


# --- the self-check ------------------------------------------------------------------------


def _answer(headers: bytes, data: bytes, *cuts: int) -> list[bytes]:
    """An answer's reads: its head with ``data`` up to the first cut, then the pieces. The
    connection closes after it, as after a stream."""
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
    head += headers + b"\r\n"
    return [head + pieces[0], *pieces[1:]]


_CHUNKED = b"4\r\nHell\r\n1;ext=1\r\no\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n"
_DATA = b"data: {}\n\n" * 3
# Bytes read with the head, a size line and CRLFs split between reads, extensions, trailers,
# a length, the end at the close, and an answer cut short in the middle of a chunk.
_ANSWERS = [
    _answer(b"Transfer-Encoding: chunked\r\n", _CHUNKED, 6, 17, 19, 28, 50),
    _answer(b"Content-Length: %d\r\n" % len(_DATA), _DATA, 4, 20),
    _answer(b"", _DATA, 11, 12),
    _answer(b"Transfer-Encoding: chunked\r\n", _CHUNKED[:25], 9),
]
Outcome = tuple[bytes, "str | None", bool, "set[float | None]"]
_proven = _taken_over  # the function itself, whatever a test puts in its name


def _outcome(out: list[bytes], error: str | None, backend: Any) -> Outcome:
    """What a reading gave: the bytes, the error, whether its connection was closed, and
    the timeouts its reads were given."""
    connection = backend.opened[-1]
    reads = {timeout for what, timeout in connection.timeouts if what == "read"}
    return b"".join(out), error, connection.closed, reads


def _read(http: httpx.Client, backend: Any, direct: bool) -> Outcome | None:
    response = http.send(http.build_request("GET", _memory_backend.URL), stream=True)
    out: list[bytes] = []
    error = None
    try:
        taken = _proven(response) if direct else None
        if direct and taken is None:
            return None
        reader = _Body(response, *taken) if taken is not None else response.iter_raw()
        for data in reader:
            out.append(data)
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    finally:
        response.close()
    return _outcome(out, error, backend)


async def _aread(http: httpx.AsyncClient, backend: Any, direct: bool) -> Outcome | None:
    response = await http.send(http.build_request("GET", _memory_backend.URL), stream=True)
    out: list[bytes] = []
    error = None
    try:
        taken = _proven(response) if direct else None
        if direct and taken is None:
            return None
        reader = _AsyncBody(response, *taken) if taken is not None else response.aiter_raw()
        async for data in reader:
            out.append(data)
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    finally:
        await response.aclose()
    return _outcome(out, error, backend)


def _compare(results: list[tuple[Outcome | None, Outcome | None]]) -> str | None:
    for direct, through_httpx in results:
        if direct is None:
            return "the connection of a response is not where it was"
        if direct != through_httpx:
            return f"read from the connection: {direct!r}; through httpx: {through_httpx!r}"
    return None


def _check() -> str | None:
    backend = _memory_backend.MemoryBackend([[answer] for answer in _ANSWERS for _ in (1, 2)])
    with _memory_backend.client(backend) as http:
        return _compare(
            [(_read(http, backend, True), _read(http, backend, False)) for _ in _ANSWERS]
        )


async def _acheck() -> str | None:
    backend = _memory_backend.AsyncMemoryBackend([[answer] for answer in _ANSWERS for _ in (1, 2)])
    async with _memory_backend.async_client(backend) as http:
        results = []
        for _ in _ANSWERS:
            results.append((await _aread(http, backend, True), await _aread(http, backend, False)))
        return _compare(results)


SYNC_PATH = FastPath("reading a stream's body from its connection (sync)", _check, log)
ASYNC_PATH = FastPath(
    "reading a stream's body from its connection (async)", lambda: in_new_loop(_acheck), log
)
