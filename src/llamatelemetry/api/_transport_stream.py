"""A connection on an asyncio transport, and the time each of its reads' bytes arrived.

httpcore reaches the socket under asyncio through anyio: each read enters a cancel scope,
resumes the transport's reading and pauses it again (two ``epoll_ctl`` calls), and the
bytes wait in the kernel until a task asks for them. Under load that is most of a streamed
chunk's cost, and it hides when the answer came: a chunk that arrived while the event loop
was busy with other streams is only seen when its task next runs.

`AsyncioStream` is an httpcore network stream on an ``asyncio.Protocol`` that keeps
reading (up to `READ_BUFFER` bytes held, then it pauses until they are read) and stamps
each piece of data with ``time.perf_counter()`` as the loop hands it over.
`AsyncioStream.arrived` is the stamp of the newest bytes a ``read`` returned. Timeouts and
failures map to httpcore's exceptions as its anyio backend maps them. It carries TLS, and
plain TCP where the kernel does not stamp received bytes (`SocketStream` does elsewhere).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Any

import httpcore

from ._socket_waits import (
    READ_BUFFER,
    Piece,
    ReadWait,
    bounded,
    closes,
    settle,
    socket_readable,
    take,
)

__all__ = ["AsyncioStream", "Protocol"]

_clock = time.perf_counter


class Protocol(asyncio.Protocol):
    """What asyncio gives a connection: bytes with their arrival time, the end, a failure."""

    __slots__ = ("buffered", "closed", "eof", "error", "paused", "pieces", "transport", "wait",
                 "writable")  # fmt: skip

    def __init__(self) -> None:
        self.pieces: collections.deque[Piece] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.closed = False
        self.error: Exception | None = None
        self.writable: asyncio.Future[bool] | None = None  # a write waiting for room
        self.paused = False  # the transport holds more than it wants to: writes wait
        self.transport: asyncio.Transport | None = None
        self.wait = ReadWait()  # a read's, for data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append((data, _clock(), None))
        self.buffered += len(data)
        if self.buffered > READ_BUFFER and self.transport is not None:
            self.transport.pause_reading()
        self.wait.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.wait.wake()
        return True  # keep the transport open: writing may go on (httpcore closes it)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self.error = exc
        self.wait.wake()
        settle(self.writable)
        self.wait.cancel()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        settle(self.writable)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection; ``arrived``: when the newest bytes ``read`` returned reached this
    process (``perf_counter``), 0.0 before the first.

    A connection whose request said ``Connection: close`` (every stream's: it is never
    pooled) reads from its socket all along, so that every chunk is stamped as it comes.
    Any other stops reading from its socket whenever it has handed over all it read, as
    httpcore's own backend does: a kept-alive connection idle in the pool is then not
    watched by the event loop, which a forked child shares (its inherited copy of the
    loop would otherwise read the parent's answers off the shared socket)."""

    __slots__ = ("_held", "_protocol", "_transport", "arrived", "lag")

    def __init__(self, transport: asyncio.Transport, protocol: Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held = False  # the connection ends with this answer: keep reading
        self.arrived = 0.0
        self.lag: float | None = None  # (no kernel stamp: always None)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not (protocol.pieces or protocol.eof or protocol.closed):
            self._transport.resume_reading()  # (nothing to do when it is reading)
            await protocol.wait.wait(asyncio.get_running_loop(), timeout)
        if not protocol.pieces:  # the end, or the failure that ended it
            error = protocol.error
            if error is not None:
                raise httpcore.ReadError(str(error) or type(error).__name__)
            return b""
        data, self.arrived, self.lag = take(protocol.pieces, max_bytes)
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
        if not self._held and closes(buffer):
            self._held = True
            self._transport.resume_reading()
        self._transport.write(buffer)
        if protocol.paused and not protocol.closed:
            # a wait of this write's own: a cancelled one leaves nothing behind
            writable = protocol.writable = asyncio.get_running_loop().create_future()
            try:
                if not await bounded(writable, timeout):
                    raise httpcore.WriteTimeout("the request could not be written in time")
            finally:
                protocol.writable = None
            if protocol.closed:
                error = protocol.error
                raise httpcore.WriteError(str(error) if error else "the connection closed")

    async def aclose(self) -> None:
        self._protocol.wait.cancel()
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
            return socket_readable(transport.get_extra_info("socket"))
        return None
