"""Hostile servers written with plain sockets: each connection is handed to a script that
may answer, stall, trickle, reset or lie, as llama-server never would on demand.

```python
def script(conn: Conn) -> None:
    request = conn.read_request()
    conn.answer(200, REPLY)
    conn.read_headers()   # the next request's head, then a reset while its body arrives
    conn.reset()

with Hostile(script) as server:
    ...
    assert server.completed == 1
```
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from llamatelemetry._closing import Closing

__all__ = ["Conn", "Hostile", "REQUEST_HEAD_LIMIT"]

REQUEST_HEAD_LIMIT = 1 << 20


class Conn:
    """One accepted connection, as the script sees it."""

    def __init__(self, server: Hostile, sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self._buffer = b""

    # --- reading ---------------------------------------------------------------------

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buffer += data
        return True

    def read_headers(self) -> dict[str, str] | None:
        """The head of the next request (request line under ``":line"``), or None at EOF."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > REQUEST_HEAD_LIMIT or not self._fill():
                return None
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {":line": lines[0]}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        with self.server.lock:
            self.server.heads.append(headers)
        return headers

    def read_body(self, headers: dict[str, str]) -> bytes | None:
        length = int(headers.get("content-length", "0") or 0)
        while len(self._buffer) < length:
            if not self._fill():
                return None
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return body

    def read_request(self) -> tuple[dict[str, str], bytes] | None:
        """A whole request (head and body): counted in ``server.completed``."""
        headers = self.read_headers()
        if headers is None:
            return None
        body = self.read_body(headers)
        if body is None:
            return None
        with self.server.lock:
            self.server.completed += 1
            self.server.bodies.append(body)
        return headers, body

    # --- answering -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(
        self,
        status: int = 200,
        body: Any = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = {
            "Content-Type": content_type,
            "Content-Length": str(len(payload)),
            "Connection": "keep-alive",
            **(headers or {}),
        }
        self.send(
            status_line(status)
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items())
            + b"\r\n"
            + payload
        )

    def trickle(self, data: bytes, every: float, step: int = 1) -> None:
        """``data`` a few bytes at a time, ``every`` seconds apart, until sent or cut."""
        for i in range(0, len(data), step):
            if self.server.stopping.wait(every):
                return
            self.send(data[i : i + step])

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0): unread request bytes are thrown away."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def wait(self, seconds: float) -> None:
        self.server.stopping.wait(seconds)


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} Status\r\n".encode()


class Hostile(Closing):
    """A server on 127.0.0.1 running ``script(conn)`` per connection, in its own thread.

    ``scripts`` may be one callable for every connection or a list, one per connection in
    order (the last repeats).
    """

    def __init__(self, scripts: Callable[[Conn], None] | list[Callable[[Conn], None]]) -> None:
        self._scripts = scripts if isinstance(scripts, list) else [scripts]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections = 0
        self.completed = 0  # whole requests read (head and body)
        self.heads: list[dict[str, str]] = []  # every request head read, whole or not
        self.bodies: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                number = self.connections
                self.connections += 1
                self._open.append(sock)
            script = self._scripts[min(number, len(self._scripts) - 1)]
            thread = threading.Thread(
                target=self._run, args=(script, Conn(self, sock, number)), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Callable[[Conn], None], conn: Conn) -> None:
        try:
            script(conn)
        except OSError:
            pass
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self.lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


def elapsed(fn: Callable[[], Any]) -> tuple[float, Any, BaseException | None]:
    """(seconds, result, error) of ``fn()``."""
    start = time.monotonic()
    try:
        result, error = fn(), None
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        result, error = None, exc
    return time.monotonic() - start, result, error
