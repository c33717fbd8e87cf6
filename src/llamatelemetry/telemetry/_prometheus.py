"""The Prometheus scrape endpoint of ``setup_telemetry(prometheus_port=...)``.

prometheus_client's own exposition, served by a small threaded WSGI server of ours so that
the endpoint knows when a scrape has been answered: a short-lived process (a benchmark, a
batch job) can wait for one last scrape before it exits, and its final figures reach
Prometheus instead of vanishing with it.

Slow clients hold nothing for long: a connection's request line and headers must arrive
within ``HEAD_LIMIT_S`` of its opening, and the whole connection (reading the request,
writing the answer) ends ``CONNECTION_LIMIT_S`` after it, however slowly its client sends
or reads (the handler's socket timeout is only per operation: a byte every few seconds
would renew it forever). One reaper thread shuts the sockets of connections past their
deadline. At most ``MAX_CONNECTIONS`` are served at once, one thread each; more are
closed as soon as they are accepted.
"""

from __future__ import annotations

import math
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["CONNECTION_LIMIT_S", "HEAD_LIMIT_S", "MAX_CONNECTIONS", "PrometheusEndpoint"]

HEAD_LIMIT_S = 30.0  # from a connection's opening to the end of its request's headers
CONNECTION_LIMIT_S = 120.0  # from a connection's opening to the end of its answer
MAX_CONNECTIONS = 64  # served at once, a thread each; more are closed when accepted

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close with a reset

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _bindable(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind ``host`` with (an IPv6 host needs AF_INET6)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, str(address[0])


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them, each cut at its
    deadline by one reaper thread."""

    daemon_threads = True  # a scrape in flight never holds the process at exit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Condition()
        # Each connection served: when it was accepted, and its deadline (None: cut).
        self._live: dict[socket.socket, tuple[float, float | None]] = {}
        self._stopping = False
        self.refused = 0  # closed when accepted: MAX_CONNECTIONS were being served
        self.cut = 0  # shut by the reaper, past their deadline
        self._reaper = threading.Thread(
            target=self._reap, name="llamatelemetry-prometheus-reaper", daemon=True
        )
        super().__init__(*args, **kwargs)

    def server_activate(self) -> None:
        super().server_activate()
        self._reaper.start()  # once listening: a port that cannot be bound leaks no thread

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Past the cap, the connection is closed at once (``shutdown_request``)."""
        now = time.monotonic()
        with self._lock:
            if len(self._live) >= MAX_CONNECTIONS:
                self.refused += 1
                return False
            self._live[request] = (now, now + min(HEAD_LIMIT_S, CONNECTION_LIMIT_S))
            self._lock.notify()
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="llamatelemetry-prometheus-connection",
            daemon=self.daemon_threads,
        ).start()

    def headed(self, request: socket.socket) -> bool:
        """The request's headers are in: from now on, the connection's deadline holds.
        False if it was cut already (its head, ended by the cut, is not to be served)."""
        with self._lock:
            accepted, deadline = self._live[request]
            if deadline is None:
                return False
            self._live[request] = (accepted, accepted + CONNECTION_LIMIT_S)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._lock:  # no longer the reaper's: its descriptor may be reused once closed
            self._live.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection cut (by its client, or by the reaper) or silent past the socket
        timeout is no error to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def _reap(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                soonest = math.inf
                for request, (accepted, deadline) in self._live.items():
                    if deadline is None:
                        continue
                    if deadline > now:
                        soonest = min(soonest, deadline)
                        continue
                    self._live[request] = (accepted, None)
                    self.cut += 1
                    try:
                        # Its close resets the connection: what was queued for a slow
                        # reader is dropped, not delivered byte by byte after the cut.
                        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                        # Its thread's blocked read or write returns, or fails, at once.
                        request.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # closed by its client already
                self._lock.wait(min(soonest - now, threading.TIMEOUT_MAX))

    def server_close(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._reaper.is_alive():
            self._reaper.join(timeout=5)
        super().server_close()


class _Quiet(WSGIRequestHandler):
    timeout = 30  # seconds a connection may sit silent: per operation, within its limits
    server: _Server

    def parse_request(self) -> bool:
        return super().parse_request() and self.server.headed(self.request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Scrapes are not logged: one every few seconds, for the process's lifetime."""


class _Answer:
    """A scrape's body. wsgiref closes it after the last write, or after a write failed
    (with the error in flight): only the first is an answered scrape."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[bool], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._sent = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._sent = True  # every chunk was taken, and written (a failed write stops here)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        self._on_close(self._sent and sys.exc_info()[0] is None)


def _deadline(environ: dict[str, Any]) -> float:
    """Seconds Prometheus waits for this scrape (its own header), else no limit."""
    try:
        seconds = float(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS", "inf"))
    except ValueError:
        return math.inf
    return seconds if seconds > 0 else math.inf


def _whole_scrape(environ: dict[str, Any]) -> bool:
    """A GET of every series: not a HEAD, not the favicon, not filtered with ``name[]``."""
    return (
        environ.get("REQUEST_METHOD") == "GET"
        and environ.get("PATH_INFO") != "/favicon.ico"
        and "name[]" not in parse_qs(environ.get("QUERY_STRING", ""))
    )


class PrometheusEndpoint:
    """A registry's metrics at ``http://host:port/metrics``, noting when scrapes finish."""

    def __init__(self, registry: Any, host: str, port: int) -> None:
        from prometheus_client import make_wsgi_app

        self._exposition: WSGIApp = make_wsgi_app(registry)
        self._answered = threading.Condition()
        self._last_start: float | None = None  # when the last answered scrape began
        self.scrapes = 0
        family, address = _bindable(host, port)
        server = type("_Server", (_Server,), {"address_family": family})
        self._server: _Server = make_server(address, port, self._app, server, handler_class=_Quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="llamatelemetry-prometheus", daemon=True
        )
        self._thread.start()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._server.server_port}/metrics"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        began = time.monotonic()
        status: list[str] = []

        def start(code: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *exc_info)

        body = self._exposition(environ, start)
        counts = _whole_scrape(environ)
        deadline = began + _deadline(environ)

        def closed(sent: bool) -> None:
            # Written in full, in time for a Prometheus that had not given up on it.
            if counts and sent and status[-1:] == ["200 OK"] and time.monotonic() < deadline:
                self._answer(began)

        return _Answer(body, closed)

    def _answer(self, began: float) -> None:
        with self._answered:
            self.scrapes += 1
            if self._last_start is None or began > self._last_start:
                self._last_start = began
            self._answered.notify_all()

    @property
    def refused(self) -> int:
        """Connections closed when accepted: ``MAX_CONNECTIONS`` were being served."""
        return self._server.refused

    @property
    def cut(self) -> int:
        """Connections shut past their deadline (``HEAD_LIMIT_S``, ``CONNECTION_LIMIT_S``)."""
        return self._server.cut

    def wait_for_scrape(self, timeout: float) -> bool:
        """Whether a scrape that began after this call was answered within ``timeout``
        seconds (``math.inf``: however long it takes): then every figure recorded before
        the call has been taken."""
        if math.isnan(timeout) or timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        since = time.monotonic()
        end = since + timeout
        with self._answered:
            while self._last_start is None or self._last_start <= since:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._answered.wait(min(left, threading.TIMEOUT_MAX))
        return True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
