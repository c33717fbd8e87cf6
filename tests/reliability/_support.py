"""What the reliability tests share: canned replies, one driver per client (sync, async)
so a fault scenario is written once, and sockets that refuse or black-hole connections.

A driver runs the *same* scenario with ``LlamaCppClient`` or ``AsyncLlamaCppClient``:
``driver.chat(...)`` returns the response (or raises), ``driver.stream(...)`` returns the
chunks that arrived before the stream ended and the error that ended it. The async driver
owns one event loop for its whole life, so its client's pooled connections stay valid
between calls exactly as they would in an application.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient
from llamatelemetry.testing._fault_server import FaultServer

from ..conftest import LOADING as LOADING  # re-exported for the reliability tests
from ..conftest import REPLY as REPLY

MESSAGES = [{"role": "user", "content": "hi"}]


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "tiny",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def contents(chunks: list[Any]) -> list[str | None]:
    return [c.choices[0].delta.content for c in chunks]


class Driver:
    """One client, driven synchronously whatever its kind."""

    kind: str
    client: Any

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)``; awaited on the driver's loop when it returns an awaitable."""
        raise NotImplementedError

    def chat(self, **kw: Any) -> Any:
        kw.setdefault("max_tokens", 4)
        return self.run(lambda c: c.chat.completions.create(messages=MESSAGES, **kw))

    def stream(
        self, *, limit: int | None = None, **kw: Any
    ) -> tuple[list[Any], BaseException | None, Any]:
        """Open a chat stream and read it (``limit`` chunks at most): (chunks, error, stream)."""
        raise NotImplementedError

    def finish(self, stream: Any) -> tuple[list[Any], BaseException | None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SyncDriver(Driver):
    kind = "sync"

    def __init__(self, client: LlamaCppClient) -> None:
        self.client = client

    def run(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.client)

    def stream(
        self, *, limit: int | None = None, **kw: Any
    ) -> tuple[list[Any], BaseException | None, Any]:
        kw.setdefault("max_tokens", 4)
        seen: list[Any] = []
        try:  # a wrong answer can fail the opening already (status, not an event stream)
            stream = self.client.chat.completions.create(messages=MESSAGES, stream=True, **kw)
        except Exception as exc:  # noqa: BLE001 - the scenario inspects it
            return seen, exc, None
        try:
            for item in stream:
                seen.append(item)
                if limit is not None and len(seen) >= limit:
                    break
        except Exception as exc:  # noqa: BLE001 - the scenario inspects it
            return seen, exc, stream
        return seen, None, stream

    def finish(self, stream: Any) -> tuple[list[Any], BaseException | None]:
        """Read what is left of ``stream``: (chunks, the error that ended it or None)."""
        seen: list[Any] = []
        try:
            for item in stream:
                seen.append(item)
        except Exception as exc:  # noqa: BLE001
            return seen, exc
        return seen, None

    def close(self) -> None:
        self.client.close()


class _Loop:
    """One event loop run call by call (``asyncio.Runner`` needs Python 3.11)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self._loop.run_until_complete(asyncio.sleep(0))  # let closing tasks finish
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()


class AsyncDriver(Driver):
    kind = "async"

    def __init__(self, make: Callable[[], AsyncLlamaCppClient]) -> None:
        self._runner = _Loop()

        async def build() -> AsyncLlamaCppClient:
            return make()

        self.client = self._runner.run(build())

    def run(self, fn: Callable[[Any], Any]) -> Any:
        async def call() -> Any:
            result = fn(self.client)
            return await result if inspect.isawaitable(result) else result

        return self._runner.run(call())

    def stream(
        self, *, limit: int | None = None, **kw: Any
    ) -> tuple[list[Any], BaseException | None, Any]:
        kw.setdefault("max_tokens", 4)

        async def read() -> tuple[list[Any], BaseException | None, Any]:
            seen: list[Any] = []
            try:
                stream = await self.client.chat.completions.create(
                    messages=MESSAGES, stream=True, **kw
                )
            except Exception as exc:  # noqa: BLE001
                return seen, exc, None
            try:
                async for item in stream:
                    seen.append(item)
                    if limit is not None and len(seen) >= limit:
                        break
            except Exception as exc:  # noqa: BLE001
                return seen, exc, stream
            return seen, None, stream

        return self._runner.run(read())

    def finish(self, stream: Any) -> tuple[list[Any], BaseException | None]:
        async def read() -> tuple[list[Any], BaseException | None]:
            seen: list[Any] = []
            try:
                async for item in stream:
                    seen.append(item)
            except Exception as exc:  # noqa: BLE001
                return seen, exc
            return seen, None

        return self._runner.run(read())

    def aclose_stream(self, stream: Any) -> None:
        self._runner.run(stream.aclose())

    def close(self) -> None:
        try:
            self._runner.run(self.client.aclose())
        finally:
            self._runner.close()


def make_driver(
    kind: str, url: str, types: tuple[type, type] | None = None, **options: Any
) -> Driver:
    """A driver for ``kind``; ``types`` replaces the (sync, async) client classes."""
    sync_type, async_type = types or (LlamaCppClient, AsyncLlamaCppClient)
    if kind == "sync":
        return SyncDriver(sync_type(url, **options))
    return AsyncDriver(lambda: async_type(url, **options))


# --- figures: what the suite did, printed at the end of the run -------------------------

TALLY: Counter[str] = Counter()
FIGURES: dict[str, Any] = {}


def tally(**counts: int) -> None:
    TALLY.update(counts)


class TallyingFaultServer(FaultServer):
    """A FaultServer that adds the requests it saw to the suite's figures when closed."""

    def close(self) -> None:
        super().close()
        tally(requests=len(self.requests))


def usable(driver: Driver) -> None:
    """The client answers its next call after a fault: one more fault survived."""
    assert not driver.client.is_closed
    response = driver.chat()
    assert response.choices[0].message.content == "ok"
    tally(faults_survived=1)


def close_stream(driver: Driver, stream: Any) -> None:
    if isinstance(driver, AsyncDriver):
        driver.aclose_stream(stream)
    else:
        stream.close()


def close_connections(server: FaultServer) -> int:
    """Close every connection the fault server holds, as a server does with idle keep-alive
    connections; returns how many it closed."""
    with server._lock:
        open_now = list(server._open)
    for conn in open_now:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return len(open_now)


class LatePort:
    """A port on 127.0.0.1 that refuses connections (bound, not listening) until
    ``serve(reply)`` starts answering every request there with ``reply`` (JSON, 200)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, reply: Any) -> None:
        late = self
        body = json.dumps(reply).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                late.requests += 1
                length = int(self.headers.get("Content-Length", "0") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - the http.server API

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.daemon_threads = True  # a kept-alive connection must not hold up close()
        server.socket.close()
        server.socket = self._sock  # the very socket that refused until now
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
        else:
            self._sock.close()


class BlackHole:
    """A listening socket whose accept queue is full: connecting to it hangs until the
    client's connect timeout (the SYNs are dropped), as with an unreachable host."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(filler)

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._sock.close()


def fd_count() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
