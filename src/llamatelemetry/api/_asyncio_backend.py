"""httpcore's network backend on asyncio's own transports, and the time each byte arrived.

httpcore reaches the socket under asyncio through anyio: each read enters a cancel scope,
resumes the transport's reading and pauses it again (two ``epoll_ctl`` calls), and the
bytes wait in the kernel until a task asks for them. Under load that is most of a streamed
chunk's cost, and it hides when the answer came: a chunk that arrived while the event loop
was busy with other streams is only seen when its task next runs.

`AsyncioBackend` implements httpcore's public ``AsyncNetworkBackend`` on an
``asyncio.Protocol`` that keeps reading (up to `READ_BUFFER` bytes held, then it pauses
until they are read) and stamps each piece of data with ``time.perf_counter()`` as the loop
hands it over. `AsyncioStream.arrived` is the stamp of the newest bytes a ``read`` returned:
what the load generator times a token by. Timeouts and failures map to httpcore's
exceptions as its anyio backend maps them. Under any other event loop (trio), the backend
it wraps does the work.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore

__all__ = ["READ_BUFFER", "AsyncioBackend", "AsyncioStream"]

#: The most unread bytes a connection holds before it stops reading from its socket.
READ_BUFFER = 1 << 20

_clock = time.perf_counter


class _Protocol(asyncio.Protocol):
    """What asyncio gives a connection: bytes with their arrival time, the end, a failure."""

    __slots__ = ("buffered", "closed", "deadline", "eof", "error", "paused", "pieces", "timer",
                 "transport", "waiter", "writable")  # fmt: skip

    def __init__(self) -> None:
        self.pieces: collections.deque[tuple[bytes, float]] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.closed = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[bool] | None = None  # a read waiting for data
        self.writable: asyncio.Future[bool] | None = None  # a write waiting for room
        self.paused = False  # the transport holds more than it wants to: writes wait
        self.transport: asyncio.Transport | None = None
        self.deadline: float | None = None  # (loop time) when the waiting read times out
        self.timer: asyncio.TimerHandle | None = None  # the one that checks it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append((data, _clock()))
        self.buffered += len(data)
        if self.buffered > READ_BUFFER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # keep the transport open: writing may go on (httpcore closes it)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self.error = exc
        self._wake()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(True)
        self.unbound()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(True)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def bound(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Have the waiting read (``waiter``) end, False, if ``timeout`` seconds pass first.

        One timer serves all of a connection's reads, as a streamed answer's are one per
        chunk: a read moves the deadline, and the timer, when it fires before it, sets
        itself again for it. A new timer is needed only for a deadline earlier than the
        timer's own (a shrinking total timeout's)."""
        if timeout is None:
            self.deadline = None
            return
        deadline = self.deadline = loop.time() + max(timeout, 0.0)
        timer = self.timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = loop.call_at(deadline, self._check, loop)

    def unbound(self) -> None:
        """Cancel the read timer (the connection is done with)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # no read waits, or none with a timeout: the next read sets one again
        if loop.time() >= deadline:
            waiter.set_result(False)
        else:
            self.timer = loop.call_at(deadline, self._check, loop)


async def _bounded(future: asyncio.Future[bool], timeout: float | None) -> bool:
    """Wait for ``future`` (set True when what it waits for came) for at most ``timeout``
    seconds: False if the time ran out first. A timer, not a task."""
    if timeout is None:
        return await future
    handle = asyncio.get_running_loop().call_later(max(timeout, 0.0), _expire, future)
    try:
        return await future
    finally:
        handle.cancel()


def _closes(buffer: bytes) -> bool:
    """Whether ``buffer`` is a request's head that says ``Connection: close``."""
    head, found, _ = buffer[:16384].partition(b"\r\n\r\n")
    return bool(found) and b"\r\nconnection: close\r\n" in head.lower() + b"\r\n"


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection; ``arrived``: when the newest bytes ``read`` returned reached this
    process (``perf_counter``), 0.0 before the first.

    A connection whose request said ``Connection: close`` (every stream's: it is never
    pooled) reads from its socket all along, so that every chunk is stamped as it comes.
    Any other stops reading from its socket whenever it has handed over all it read, as
    httpcore's own backend does: a kept-alive connection idle in the pool is then not
    watched by the event loop, which a forked child shares (its inherited copy of the
    loop would otherwise read the parent's answers off the shared socket)."""

    __slots__ = ("_held", "_protocol", "_transport", "arrived")

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held = False  # the connection ends with this answer: keep reading
        self.arrived = 0.0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not (protocol.pieces or protocol.eof or protocol.closed):
            self._transport.resume_reading()  # (nothing to do when it is reading)
            loop = asyncio.get_running_loop()
            waiter = protocol.waiter = loop.create_future()
            protocol.bound(loop, timeout)
            try:
                if not await waiter:
                    raise httpcore.ReadTimeout("no bytes within the read timeout")
            finally:
                protocol.waiter = None
        if not protocol.pieces:  # the end, or the failure that ended it
            error = protocol.error
            if error is not None:
                raise httpcore.ReadError(str(error) or type(error).__name__)
            return b""
        data, self.arrived = protocol.pieces.popleft()
        if len(data) > max_bytes:
            protocol.pieces.appendleft((data[max_bytes:], self.arrived))
            data = data[:max_bytes]
        protocol.buffered -= len(data)
        if not protocol.closed:
            if not protocol.pieces and not self._held:
                self._transport.pause_reading()  # all handed over: read again when asked
            elif protocol.buffered <= READ_BUFFER:
                self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.closed or self._transport.is_closing():
            error = protocol.error
            raise httpcore.WriteError(str(error) if error else "the connection is closed")
        if not self._held and _closes(buffer):
            self._held = True
            self._transport.resume_reading()
        self._transport.write(buffer)
        if protocol.paused and not protocol.closed:
            # a wait of this write's own: a cancelled one leaves nothing behind
            writable = protocol.writable = asyncio.get_running_loop().create_future()
            try:
                if not await _bounded(writable, timeout):
                    raise httpcore.WriteTimeout("the request could not be written in time")
            finally:
                protocol.writable = None
            if protocol.closed:
                error = protocol.error
                raise httpcore.WriteError(str(error) if error else "the connection closed")

    async def aclose(self) -> None:
        self._protocol.unbound()
        transport = self._transport
        # TLS ends without its close_notify exchange (as httpcore's own backend ends it):
        # a close that waited for the server could outlive the event loop.
        if transport.get_write_buffer_size() or transport.get_extra_info("ssl_object"):
            transport.abort()
        else:
            transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                ),
                timeout,
            )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout("the TLS handshake took too long") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        # The same protocol: the TLS transport hands it the decrypted bytes from now on.
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection with bytes held, an end or a failure is one the server
            # has done with; so is one whose socket has any of these the loop has not yet
            # taken (a close just sent, say).
            protocol = self._protocol
            if protocol.pieces or protocol.eof or protocol.closed:
                return True
            return _socket_readable(transport.get_extra_info("socket"))
        return None


def _socket_readable(sock: Any) -> bool:
    """Whether a read of ``sock`` would not wait (bytes, an end, an error), or it is gone."""
    if sock is None:
        return True
    try:
        fileno = sock.fileno()
        if fileno < 0:
            return True
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
    except AttributeError:  # no poll() on this system
        return bool(select.select([sock], [], [], 0)[0])


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """asyncio's transports where the running loop is asyncio's; ``fallback`` elsewhere."""

    def __init__(self, fallback: httpcore.AsyncNetworkBackend) -> None:
        self._fallback = fallback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not _on_asyncio():
            return await self._fallback.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    _Protocol, host, port, local_addr=local, happy_eyeballs_delay=0.25
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
        except OSError as exc:
            transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._fallback.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        if _on_asyncio():
            await asyncio.sleep(seconds)
        else:
            await self._fallback.sleep(seconds)


def _on_asyncio() -> bool:
    """Whether this runs under asyncio (not trio, nor trio hosted by an asyncio loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    try:
        import sniffio
    except ImportError:
        return True
    try:
        return bool(sniffio.current_async_library() == "asyncio")
    except sniffio.AsyncLibraryNotFoundError:
        return True
