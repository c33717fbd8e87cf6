"""In-memory HTTP exchanges through httpx's own clients, for the self-checks of the fast
paths that reach into httpx and httpcore (``_stream_body``, ``_deadline_backend``).

The client and its pool are httpx's, built as usual; only the network backend under the
pool is replaced, by one that answers from a script instead of a socket. The requests go to
port 0 of the loopback address, where nothing can listen: a pool that ignored the
replacement would fail at once on its own backend, having reached no one.
"""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

__all__ = ["AsyncMemoryBackend", "MemoryBackend", "URL", "async_client", "client", "pool_of"]

URL = "http://127.0.0.1:0/"
# Far longer than a probe may take: a timeout seen below the pool is the one given to it.
TIMEOUT = 86400.0


class _Connection:
    """One scripted connection: for each request, in order, the reads that answer it (b""
    once they are all read: the server closed), or None for a request whose writing fails."""

    def __init__(self, answers: list[list[bytes] | None]) -> None:
        self._answers = list(answers)
        self._reads: list[bytes] = []
        self.timeouts: list[tuple[str, float | None]] = []  # (operation, timeout) seen
        self.closed = False

    def write(self, data: bytes, timeout: float | None) -> None:
        self.timeouts.append(("write", timeout))
        if data and not self._reads:  # a request's head (the probes send no bodies)
            answer = self._answers.pop(0) if self._answers else None
            if answer is None:
                raise httpcore.WriteError("the probe's connection refuses this request")
            self._reads = list(answer)

    def read(self, timeout: float | None) -> bytes:
        self.timeouts.append(("read", timeout))
        return self._reads.pop(0) if self._reads else b""

    def extra(self, info: str) -> Any:
        return False if info == "is_readable" else None


class _Backend:
    def __init__(self, connections: list[list[list[bytes] | None]]) -> None:
        self._scripts = list(connections)
        self.opened: list[_Connection] = []
        self.connect_timeouts: list[float | None] = []

    def _connect(self, timeout: float | None) -> _Connection:
        self.connect_timeouts.append(timeout)
        if not self._scripts:
            raise httpcore.ConnectError("the probe has no more connections")
        connection = _Connection(self._scripts.pop(0))
        self.opened.append(connection)
        return connection


class _Stream(httpcore.NetworkStream):
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.connection.read(timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.connection.write(buffer, timeout)

    def close(self) -> None:
        self.connection.closed = True

    def get_extra_info(self, info: str) -> Any:
        return self.connection.extra(info)


class MemoryBackend(_Backend, httpcore.NetworkBackend):
    """A network backend whose connections follow ``connections``, one script each."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._connect(timeout))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._connect(timeout))

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the probe never waits")


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.connection.read(timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.connection.write(buffer, timeout)

    async def aclose(self) -> None:
        self.connection.closed = True

    def get_extra_info(self, info: str) -> Any:
        return self.connection.extra(info)


class AsyncMemoryBackend(_Backend, httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(self._connect(timeout))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(self._connect(timeout))

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the probe never waits")


def pool_of(http: httpx.Client | httpx.AsyncClient) -> Any:
    """The connection pool of a client on httpx's own transport (None if there is none)."""
    return getattr(getattr(http, "_transport", None), "_pool", None)


def client(backend: MemoryBackend) -> httpx.Client:
    """httpx's client and pool over ``backend`` (its requests go to ``URL``)."""
    http = httpx.Client(
        transport=httpx.HTTPTransport(verify=False), timeout=TIMEOUT, trust_env=False
    )
    try:
        _replace_backend(http, backend)
    except BaseException:
        http.close()
        raise
    return http


def async_client(backend: AsyncMemoryBackend) -> httpx.AsyncClient:
    http = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(verify=False), timeout=TIMEOUT, trust_env=False
    )
    _replace_backend(http, backend)  # nothing to close yet: no connection was made
    return http


def _replace_backend(http: httpx.Client | httpx.AsyncClient, backend: Any) -> None:
    pool = pool_of(http)
    if not hasattr(pool, "_network_backend"):
        raise LookupError("httpx's client has no connection pool with a network backend")
    pool._network_backend = backend
