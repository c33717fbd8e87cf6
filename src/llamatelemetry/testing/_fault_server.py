"""A scriptable local HTTP server for the faults a real llama-server cannot produce on demand:
dropped connections, stalls, malformed bytes, 503 storms, ``Retry-After``, proxies' HTML pages.

```python
with FaultServer([Reply(503, {"error": {"code": 503, "message": "Loading model"}}),
                  Reply(200, {"status": "ok"})]) as server:
    client = LlamaCppClient(server.url)
    ...
    assert len(server.requests) == 2
```

Replies are used in order, one per request, whatever the connection; the last one repeats.
A reply may also be a callable taking the :class:`SeenRequest` and returning a Reply.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._closing import Closing

__all__ = ["FaultServer", "Reply", "SeenRequest", "sse"]


@dataclass
class Reply:
    """One scripted answer.

    ``body`` is bytes, text, or JSON data; ``chunks`` instead streams the parts with
    chunked transfer encoding, ``chunk_delay`` seconds apart. ``delay`` stalls before the
    status line. ``drop`` closes the connection without a byte of answer; ``drop_after``
    sends that many chunks and then cuts the connection mid-body.
    """

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Sequence[bytes | str] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop: bool = False
    drop_after: int | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which TCP connection carried it (0, 1, ...)

    def json(self) -> Any:
        return json.loads(self.body)


Script = Reply | Callable[[SeenRequest], Reply]


def sse(*events: Any, done: bool = True) -> list[bytes]:
    """Server-Sent Events chunks: each event as ``data: <json>\\n\\n``, then ``[DONE]``."""
    chunks = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return chunks


class FaultServer(Closing):
    def __init__(self, replies: Sequence[Script] | Script, host: str = "127.0.0.1") -> None:
        self._replies = list(replies) if isinstance(replies, Sequence) else [replies]
        if not self._replies:
            raise ValueError("FaultServer needs at least one reply")
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.host, self.port = self._sock.getsockname()[:2]
        self.connections = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _next_reply(self, request: SeenRequest) -> Reply:
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
            script = self._replies[min(index, len(self._replies) - 1)]
        return script(request) if callable(script) else script

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
                self._open.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                request = _read_request(reader, number)
                if request is None:
                    return
                reply = self._next_reply(request)
                if not self._send(conn, reply):
                    return
        except OSError:
            return
        finally:
            reader.close()
            with self._lock:
                self._open.discard(conn)
            _hard_close(conn)

    def _send(self, conn: socket.socket, reply: Reply) -> bool:
        """Send a reply; False when the connection must end."""
        if reply.delay:
            if self._stopping.wait(reply.delay):
                return False
        if reply.drop:
            return False
        headers = {"Connection": "keep-alive", **reply.headers}
        if reply.chunks is None:
            body, content_type = _encode_body(reply.body)
            headers.setdefault("Content-Type", reply.content_type or content_type)
            headers["Content-Length"] = str(len(body))
            conn.sendall(_head(reply.status, headers) + body)
            return True
        headers.setdefault("Content-Type", reply.content_type or "text/event-stream")
        headers["Transfer-Encoding"] = "chunked"
        conn.sendall(_head(reply.status, headers))
        for i, chunk in enumerate(reply.chunks):
            if reply.drop_after is not None and i >= reply.drop_after:
                return False
            if i and reply.chunk_delay and self._stopping.wait(reply.chunk_delay):
                return False
            data = chunk.encode() if isinstance(chunk, str) else chunk
            if data:
                conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        conn.sendall(b"0\r\n\r\n")
        return True

    def close(self) -> None:
        self._stopping.set()
        _hard_close(self._sock)  # shutdown() is what wakes a thread blocked in accept()
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            _hard_close(conn)
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


def _hard_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _encode_body(body: Any) -> tuple[bytes, str]:
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json; charset=utf-8"


def _read_request(reader: Any, number: int) -> SeenRequest | None:
    line = reader.readline(65537)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = reader.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = reader.read(length) if length else b""
    return SeenRequest(method, path, headers, body, number)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
