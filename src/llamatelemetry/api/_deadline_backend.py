"""What the client sees of the socket under httpx: whether an attempt's request left whole,
on a reused connection or a new one, and a call's wall-clock deadline on every socket wait.
Both come from a network backend wrapped around httpcore's, told about the current call
through context variables (per thread, per asyncio task).

httpx bounds each connect, read, write and pool wait on its own, so a server that trickles
one byte per read, or a stream of keep-alive comments, can hold a call forever. The call's
deadline lives in a context variable; the network backend wrapped around httpcore's bounds
every socket operation by the time left, so a ``total_timeout`` fires on time even in the
middle of a response's headers.

httpx has no public way to give its pool a network backend: the wrapper replaces the pool's
``_network_backend``. Before the first client gets it, a check proves on the installed
httpx and httpcore that the pool then really goes through it: three requests in memory (a
new connection, the same one kept alive, a request whose writing fails) must come back as
they do without the wrapper, with the wrapper seeing each connection and failed write and
bounding every socket wait by the deadline. If not, no pool gets the wrapper, and one
WARNING on the ``llamatelemetry`` logger says what is lost.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

from .._fastpath import FastPath, in_new_loop
from . import _memory_backend
from ._asyncio_backend import AsyncioBackend, AsyncioStream, SocketStream
from ._socket_stream import read_stamped, stamp_received
from ._wire_times import wire_times

__all__ = [
    "ASYNC_BACKEND",
    "SYNC_BACKEND",
    "AttemptTrace",
    "call_deadline",
    "current_attempt",
    "deadline",
    "remaining",
    "install_deadline_backend",
]

log = logging.getLogger("llamatelemetry")
_clock = time.perf_counter

# The monotonic time by which the current call must be over, or None.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "llamatelemetry_deadline", default=None
)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """A wall-clock limit on every call made in the block, by either client, in this thread
    or task: together they must end within ``seconds`` (a stream opened in the block, its
    last chunk included), or raise ``APITimeoutError``. Nested blocks keep the earlier end.

    ```python
    with deadline(2.0):
        client.metrics.get()
        client.slots.list()
    ```
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"seconds must be a positive finite number, got {seconds!r}")
    end = time.monotonic() + seconds
    outer = call_deadline.get()
    token = call_deadline.set(end if outer is None or end < outer else outer)
    try:
        yield
    finally:
        call_deadline.reset(token)


class AttemptTrace:
    """What the network backend saw of one attempt: did it open a new connection, and did
    writing the request fail before its last byte?

    A request whose writing failed never arrived whole, so no server acted on it: that, on
    a reused keep-alive connection, is the one failure the client may resend for free.
    Only a pool the library built has the backend that notes this; without it (a user's
    ``http_client``) nothing is noted and nothing is resent for free.
    """

    __slots__ = ("new_connection", "write_failed")

    def __init__(self) -> None:
        self.new_connection = False
        self.write_failed = False


# How many times this process is a forked child: a stream opened under another count holds
# its parent's connection.
forks = 0


def _count_fork() -> None:
    global forks
    forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)

# The attempt the current call is making, for the network backend to note what it sees.
current_attempt: contextvars.ContextVar[AttemptTrace | None] = contextvars.ContextVar(
    "llamatelemetry_attempt", default=None
)


def _note_new_connection() -> None:
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.new_connection = True


def _note_write_failed() -> None:
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.write_failed = True


def has_passed(end: float | None) -> bool:
    """Whether the deadline ``end`` has passed (a socket wait bounded by it returns a hair
    early or late of it, hence the grace)."""
    return end is not None and time.monotonic() >= end - 0.002


def remaining(timeout: float | None, kind: type[Exception]) -> float | None:
    """``timeout`` bounded by the current deadline; raises ``kind`` once it has passed."""
    end = call_deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise kind("the call's total_timeout passed")
    return left if timeout is None or left < timeout else timeout


class _Stream(httpcore.NetworkStream):
    """Also notes, for a call that asks (`wire_times`), when its request's first byte was
    written and when its answer's newest bytes came: on a plain TCP socket where the
    kernel stamps what it receives (Linux), read with the stamps (`read_stamped`); else
    when a read returned them."""

    __slots__ = ("_stamped", "_stream")

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._stamped: socket.socket | None = None  # the socket, once asked to stamp

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        times = wire_times.get()
        sock = self._stamped
        if times is None or sock is None:
            data = self._stream.read(max_bytes, remaining(timeout, httpcore.ReadTimeout))
            if times is not None and data:
                times.came(_clock(), None)
            return data
        data, arrived, lag = read_stamped(sock, max_bytes, remaining(timeout, httpcore.ReadTimeout))
        if data:
            times.came(arrived, lag)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        times = wire_times.get()
        if times is not None and times.sent is None and buffer:
            if self._stamped is None:
                self._stamped = _plain_socket(self._stream)
            times.sent = _clock()
        try:
            self._stream.write(buffer, remaining(timeout, httpcore.WriteTimeout))
        except httpcore.WriteError:
            _note_write_failed()
            raise

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._stream.start_tls(
                ssl_context, server_hostname, remaining(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _plain_socket(stream: httpcore.NetworkStream) -> socket.socket | None:
    """The plain TCP socket under ``stream``, asked to stamp what it receives; None over
    TLS (its bytes are the TLS layer's to read), or where the kernel does not stamp."""
    sock = stream.get_extra_info("socket")
    if (
        not isinstance(sock, socket.socket)
        or sock.type != socket.SOCK_STREAM
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or stream.get_extra_info("ssl_object") is not None
        or callable(getattr(sock, "cipher", None))  # an SSL socket, gevent's too
    ):
        return None
    return sock if stamp_received(sock) else None


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        _note_new_connection()
        if call_deadline.get() is None:
            return _Stream(
                self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
            )
        # Under a deadline, each address gets the time left: the socket module would give
        # each of a name's addresses the whole timeout, and look the name up unbounded.
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in _resolve(host, port):
            try:
                return _Stream(
                    self._backend.connect_tcp(
                        address,
                        port,
                        remaining(timeout, httpcore.ConnectTimeout),
                        local_address,
                        socket_options,
                    )
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        _note_new_connection()
        return _Stream(
            self._backend.connect_unix_socket(
                path, remaining(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, looked up within the deadline (in a helper thread, since
    ``getaddrinfo`` cannot be interrupted)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    found: list[Any] = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    thread = threading.Thread(target=look_up, name="llamatelemetry-resolve", daemon=True)
    thread.start()
    thread.join(remaining(None, httpcore.ConnectTimeout))
    if not found:
        raise httpcore.ConnectTimeout(f"looking up {host} took longer than the time left")
    if isinstance(found[0], OSError):
        raise httpcore.ConnectError(str(found[0]))
    return list(dict.fromkeys(str(info[4][0]) for info in found[0]))


class _AsyncStream(httpcore.AsyncNetworkStream):
    """Also notes, for a call that asks (`wire_times`), when its request's first byte was
    written and when the answer's newest bytes came (the stream's own stamp, when it keeps
    one: `AsyncioStream.arrived`)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, remaining(timeout, httpcore.ReadTimeout))
        times = wire_times.get()
        if times is not None and data:
            stream = self._stream
            if isinstance(stream, (SocketStream, AsyncioStream)):
                times.came(stream.arrived, stream.lag)
            else:
                times.came(_clock(), None)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        times = wire_times.get()
        if times is not None and times.sent is None and buffer:
            times.sent = _clock()
        try:
            await self._stream.write(buffer, remaining(timeout, httpcore.WriteTimeout))
        except httpcore.WriteError:
            _note_write_failed()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(
            await self._stream.start_tls(
                ssl_context, server_hostname, remaining(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        _note_new_connection()
        return _AsyncStream(
            await self._backend.connect_tcp(
                host,
                port,
                remaining(timeout, httpcore.ConnectTimeout),
                local_address,
                socket_options,
            )
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        _note_new_connection()
        return _AsyncStream(
            await self._backend.connect_unix_socket(
                path, remaining(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def install_deadline_backend(http: httpx.Client | httpx.AsyncClient) -> bool:
    """Wrap the network backend of a client's connection pool (one the library built, before
    its first connection); False when the transport is not httpx's own, or when the check
    found that its pool would not use the wrapper."""
    path = ASYNC_BACKEND if isinstance(http, httpx.AsyncClient) else SYNC_BACKEND
    return path.trusted and _install(http, native=True)


def _install(http: httpx.Client | httpx.AsyncClient, native: bool = False) -> bool:
    """Wrap the pool's backend; ``native``: under asyncio, the connections go through
    asyncio's own transports (`AsyncioBackend`) instead of httpcore's default."""
    pool = _memory_backend.pool_of(http)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _AsyncBackend(AsyncioBackend(backend) if native else backend)
    elif isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _Backend(backend)
    else:
        return False
    return True


# --- the self-check ------------------------------------------------------------------------

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# One connection: an answer, a second one (in two reads) on the same connection kept alive,
# then a request whose writing fails.
_SCRIPT: list[list[list[bytes] | None]] = [[[_ANSWER], [_ANSWER[:20], _ANSWER[20:]], None]]
_SEEN = [(True, False), (False, False), (False, True)]  # (new connection, write failed)
_DEADLINE = 3600.0  # far under the probe client's timeouts, far over what the probe takes
Exchange = tuple[list[str], list[tuple[bool, bool]], list["float | None"]]


class _Probe:
    """One probe request's attempt, noted as an attempt of a call is."""

    def __init__(self) -> None:
        self.trace = AttemptTrace()

    def __enter__(self) -> None:
        self._token = current_attempt.set(self.trace)

    def __exit__(self, *exc: object) -> None:
        current_attempt.reset(self._token)


def _result(outcomes: list[str], probes: list[_Probe], backend: Any) -> Exchange:
    waits = [*backend.connect_timeouts]
    for connection in backend.opened:
        waits += [timeout for _, timeout in connection.timeouts]
    return outcomes, [(p.trace.new_connection, p.trace.write_failed) for p in probes], waits


def _exchange(wrapped: bool) -> Exchange:
    backend = _memory_backend.MemoryBackend(_SCRIPT)
    outcomes: list[str] = []
    probes = [_Probe() for _ in _SEEN]
    with _memory_backend.client(backend) as http, deadline(_DEADLINE):
        if wrapped and not _install(http):
            return ["no pool to wrap"], [], []
        for probe in probes:
            try:
                with probe:
                    outcomes.append(http.get(_memory_backend.URL).text)
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)
    return _result(outcomes, probes, backend)


async def _aexchange(wrapped: bool) -> Exchange:
    backend = _memory_backend.AsyncMemoryBackend(_SCRIPT)
    outcomes: list[str] = []
    probes = [_Probe() for _ in _SEEN]
    async with _memory_backend.async_client(backend) as http:
        with deadline(_DEADLINE):
            if wrapped and not _install(http):
                return ["no pool to wrap"], [], []
            for probe in probes:
                try:
                    with probe:
                        outcomes.append((await http.get(_memory_backend.URL)).text)
                except httpx.HTTPError as exc:
                    outcomes.append(type(exc).__name__)
    return _result(outcomes, probes, backend)


def _compare(plain: Exchange, wrapped: Exchange) -> str | None:
    if plain[0][:2] != ["ok", "ok"]:
        return f"the probe's pool did not use the backend it was given: {plain[0]}"
    if wrapped[0] != plain[0]:
        return f"answers through the wrapper {wrapped[0]}, without it {plain[0]}"
    if wrapped[1] != _SEEN:
        return f"the wrapper saw {wrapped[1]} (new connection, write failed), not {_SEEN}"
    if any(wait is None or wait > _DEADLINE for wait in wrapped[2]):
        return f"socket waits not bounded by the deadline: {wrapped[2]}"
    return None


def _check() -> str | None:
    return _compare(_exchange(False), _exchange(True))


async def _acheck() -> str | None:
    return _compare(await _aexchange(False), await _aexchange(True))


LOST = (
    "total_timeout no longer cuts an answer that trickles in (each socket wait is still "
    "bounded by the time left when its attempt began), and a request whose writing failed "
    "on a reused connection is no longer resent for free"
)
SYNC_BACKEND = FastPath("the deadline backend under httpx's pool (sync)", _check, log, LOST)
ASYNC_BACKEND = FastPath(
    "the deadline backend under httpx's pool (async)", lambda: in_new_loop(_acheck), log, LOST
)
