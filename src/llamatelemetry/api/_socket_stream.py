"""A TCP connection the event loop reads straight off its socket, each read stamped with
the time the kernel received its bytes.

An asyncio transport reads with ``recv()``: when the bytes reached the machine is lost,
and what a busy event loop reads, it reads late. Under load, a burst of first tokens
waits behind every task the loop has already scheduled, and each reads tens of
milliseconds late. With ``SO_TIMESTAMPNS`` (Linux), every ``recvmsg()`` also returns the
kernel's receive time of the newest bytes it hands over: `SocketStream.arrived` is that
time on ``time.perf_counter``'s clock, and `SocketStream.lag` how long after it the
event loop took them (the generator's own delay, exactly). Where the kernel gives no
stamp, ``arrived`` is the loop's own reading time and ``lag`` None.

Bytes that wait together in the socket take one stamp, the newest's (the kernel merges
them): a token the loop reads only after the next one came is timed as the next one.

Plain TCP only, on the loop's public socket methods (``sock_connect``, ``add_reader``,
``add_writer``); TLS goes over an asyncio transport (`AsyncioStream`), from the same
connected socket. Reading follows `AsyncioStream`: a connection whose request said
``Connection: close`` reads all along; any other only while a read waits or bytes come
faster than they are read, so that an idle pooled connection is not watched by the loop
(which a forked child shares).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterable
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
from ._transport_stream import AsyncioStream, Protocol

__all__ = [
    "HAPPY_EYEBALLS_DELAY", "KERNEL_STAMPS", "READ_SIZE", "SocketStream", "connect",
    "read_stamped", "stamp_received", "stamped",
]  # fmt: skip

#: Whether this system stamps received bytes (``SO_TIMESTAMPNS``: Linux).
KERNEL_STAMPS = sys.platform.startswith("linux") and hasattr(socket, "CMSG_SPACE")
#: The most bytes one ``recvmsg`` takes.
READ_SIZE = 1 << 16
#: Seconds an address has to connect before the next one is tried as well (asyncio's
#: own connections and RFC 8305 wait 0.25 s).
HAPPY_EYEBALLS_DELAY = 0.25
#: A read this long after its stamp measures the clocks' offset again first (the wall
#: clock may have been set back since, which would read every stamp that much early).
_LONG_LAG = 0.05

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", _SO_TIMESTAMPNS)
_STAMP_SPACE = socket.CMSG_SPACE(16) if KERNEL_STAMPS else 0
_TIMESPEC = struct.Struct("@qq")
#: A stamp further back than this is not believed (the wall clock was set meanwhile).
_OLDEST_STAMP = 60.0
_clock = time.perf_counter


class SocketStream(httpcore.AsyncNetworkStream):
    """One TCP connection; ``arrived``: when the kernel received the newest bytes ``read``
    returned (``perf_counter``; 0.0 before the first read), ``lag``: how long after that
    the event loop read them (None when the kernel gave no stamp: ``arrived`` is then the
    loop's own reading time)."""

    __slots__ = ("_buffered", "_closed", "_end", "_fd", "_held", "_loop", "_pieces",
                 "_reading", "_room", "_sock", "_wait", "arrived", "lag")  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._pieces: collections.deque[Piece] = collections.deque()
        self._buffered = 0
        self._end: OSError | bool = False  # True: the server's end; an error: a failure
        self._closed = False
        self._reading = False  # the loop watches the socket for bytes
        self._held = False  # the connection ends with this answer: keep reading
        self._wait = ReadWait()  # a read's, for bytes
        self._room: asyncio.Future[bool] | None = None  # a write waiting for room
        self.arrived = 0.0
        self.lag: float | None = None
        stamp_received(sock)  # (where it cannot, the loop's reading time stands in)

    # -- reading --------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(READ_SIZE, _STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._ended(exc)
            return
        if not data:
            self._ended(True)
            return
        self._pieces.append(stamped(data, ancillary))
        self._buffered += len(data)
        if self._buffered > READ_BUFFER:
            self._stop_reading()
        self._wait.wake()

    def _ended(self, end: OSError | bool) -> None:
        self._end = end
        self._stop_reading()
        self._wait.wake()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not (self._pieces or self._end or self._closed):
            self._start_reading()
            await self._wait.wait(self._loop, timeout)
        if not self._pieces:  # the end, or the failure that ended it
            end = self._end
            if isinstance(end, OSError):
                raise httpcore.ReadError(str(end) or type(end).__name__)
            if self._closed and not end:
                raise httpcore.ReadError("the connection is closed")
            return b""
        data, self.arrived, self.lag = take(self._pieces, max_bytes)
        self._buffered -= len(data)
        if not self._end:
            if not self._pieces and not self._held:
                self._stop_reading()  # all handed over: read again when asked
            elif self._buffered <= READ_BUFFER:
                self._start_reading()
        return data

    # -- writing --------------------------------------------------------------------------

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._closed:
            raise httpcore.WriteError("the connection is closed")
        if not self._held and closes(buffer):
            self._held = True
            self._start_reading()
        loop = self._loop
        deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
        view = memoryview(buffer)
        while True:
            try:
                view = view[self._sock.send(view) :]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc
            if not view:
                return
            # no room: wait for some (a wait of this write's own, undone when it ends)
            room = self._room = loop.create_future()
            loop.add_writer(self._fd, settle, room)
            try:
                left = None if deadline is None else deadline - loop.time()
                if not await bounded(room, left):
                    raise httpcore.WriteTimeout("the request could not be written in time")
            finally:
                self._room = None
                if not self._closed:
                    loop.remove_writer(self._fd)
            if self._closed:
                raise httpcore.WriteError("the connection closed")

    # -- the rest -------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._stop_reading()
        self._closed = True
        self._wait.cancel()
        self._loop.remove_writer(self._fd)
        self._sock.close()
        self._wait.wake()
        settle(self._room)  # a write waiting for room: the connection is gone

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # The connected socket goes to an asyncio transport, which TLS needs; this stream
        # lets it go (no byte is read ahead: the server speaks after the client's hello).
        self._stop_reading()
        self._wait.cancel()
        self._closed = True
        try:
            transport, protocol = await self._loop.create_connection(Protocol, sock=self._sock)
        except OSError as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return await AsyncioStream(transport, protocol).start_tls(
            ssl_context, server_hostname, timeout
        )

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        try:
            if info == "client_addr":
                return sock.getsockname()
            if info == "server_addr":
                return sock.getpeername()
        except OSError:
            return None
        if info == "socket":
            return sock
        if info == "is_readable":
            # An idle connection with bytes held, an end or a failure is one the server
            # has done with; so is one whose socket has any of these not yet read.
            if self._pieces or self._end or self._closed:
                return True
            return socket_readable(sock)
        return None


def stamped(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> Piece:
    """``data`` just read with its ``recvmsg`` ancillary data: when the kernel received
    it (the loop's reading time, and no lag, without a stamp)."""
    taken = _clock()
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(value)
            wall = seconds + nanoseconds * 1e-9
            stamp = wall - _wall_offset(taken)
            if taken - stamp > _LONG_LAG:  # late, or the wall clock was set back: measure
                stamp = wall - _wall_offset(taken, again=True)
            if stamp > taken - _OLDEST_STAMP:  # (not after it was read, however rounded)
                arrived = min(stamp, taken)
                return data, arrived, taken - arrived
    return data, taken, None


def stamp_received(sock: socket.socket) -> bool:
    """Have the kernel stamp what ``sock`` receives from now on; False where it cannot."""
    if not KERNEL_STAMPS:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def read_stamped(sock: socket.socket, max_bytes: int, timeout: float | None) -> Piece:
    """A blocking read of a plain TCP socket (as httpcore's own: ``timeout`` seconds at
    most, its failures as httpcore's), stamped as `SocketStream` stamps its reads."""
    try:
        sock.settimeout(timeout)
        data, ancillary, _, _ = sock.recvmsg(max_bytes, _STAMP_SPACE)
    except TimeoutError as exc:  # (socket.timeout)
        raise httpcore.ReadTimeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc
    return stamped(data, ancillary)


_offset = [0.0, -_OLDEST_STAMP]  # wall clock - perf_counter, and when it was measured


def _wall_offset(now: float, again: bool = False) -> float:
    """The wall clock's reading minus ``perf_counter``'s (the kernel stamps by the wall
    clock), measured again each second (or ``again``): of three pairs of readings, the
    closest pair (a pair the scheduler parted would shift every stamp by the time between
    them)."""
    if not again and now - _offset[1] < 1.0:
        return _offset[0]
    best = None
    for _ in range(3):
        before = _clock()
        wall = time.time()
        after = _clock()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    assert best is not None
    _offset[0], _offset[1] = best[1], now
    return best[1]


async def connect(
    host: str,
    port: int,
    local_address: str | None,
    socket_options: Iterable[Any] | None,
) -> SocketStream:
    """A `SocketStream` to ``host``, its addresses raced as happy eyeballs races them (RFC
    8305, as asyncio's own connections do): the next address is tried once the one
    before has failed or taken `HAPPY_EYEBALLS_DELAY` seconds, the first connection
    made wins, and the others are closed. No delay (``TCP_NODELAY``) on writes, as
    asyncio's transports have it. Unbounded: the caller bounds it."""
    loop = asyncio.get_running_loop()
    try:
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        addresses: list[tuple[Any, ...]] = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                             "", (host, port))]  # fmt: skip
    except ValueError:
        addresses = list(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    waiting = iter(addresses)
    racing: set[asyncio.Task[socket.socket]] = set()
    failures: list[str] = []

    def start_next() -> None:
        for info in waiting:
            racing.add(loop.create_task(_attempt(loop, info, local_address, socket_options)))
            return

    start_next()
    try:
        while racing:
            done, _ = await asyncio.wait(
                racing, timeout=HAPPY_EYEBALLS_DELAY, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the attempts so far are slow: another joins them
                start_next()
                continue
            racing.difference_update(done)
            made = [t.result() for t in done if t.exception() is None]
            if made:
                for extra in made[1:]:
                    extra.close()
                return SocketStream(loop, made[0])
            failures.extend(str(t.exception()) for t in done)
            start_next()  # a failure starts the next at once
    finally:
        for task in racing:  # the losers: cancelled, and any that connected meanwhile closed
            task.cancel()
        for outcome in await asyncio.gather(*racing, return_exceptions=True):
            if isinstance(outcome, socket.socket):
                outcome.close()
    raise OSError(f"no connection to {host}:{port}: " + ("; ".join(failures) or "no address"))


async def _attempt(
    loop: asyncio.AbstractEventLoop,
    info: tuple[Any, ...],
    local_address: str | None,
    socket_options: Iterable[Any] | None,
) -> socket.socket:
    """One address's connection (its socket closed if it fails, or is cancelled)."""
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        if local_address:
            sock.bind((local_address, 0))
        await loop.sock_connect(sock, address)
    except OSError as exc:
        sock.close()
        raise OSError(f"{address[0]}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock
