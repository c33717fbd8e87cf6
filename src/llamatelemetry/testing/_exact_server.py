"""A streaming chat server whose every token's time is known: the yardstick for a load
generator's own error.

`ExactTimeServer` runs in its own process (so it does not share the generator's
interpreter) and answers ``POST /v1/chat/completions`` with an OpenAI-style stream of
``max_tokens`` chunks, one token each: the first ``ttft`` seconds after the request
arrived, the next ``itl`` seconds apart. What it records per request, on the clock
`time.perf_counter` reads in every process of a Linux machine (``CLOCK_MONOTONIC``):

- ``arrived``: when the request's last byte reached the server's socket, from the
  kernel's own receive timestamp (``SO_TIMESTAMPNS``), so the server's own lateness in
  reading it is not counted as the client's;
- ``writes``: when each token's chunk was handed to the kernel (just before the ``send``).

A token may be written later than planned when the server is busy: its recorded time is
the truth all the same. The true TTFT is ``writes[0] - arrived``; a generator's TTFT minus
that is its error (its own sending, and its reading of the answer). Each answer's ``id``
names its record (`records`), and its final chunk carries llama.cpp-style ``timings``
that say the same (``prompt_ms`` is the true TTFT).

It is a single-threaded loop over non-blocking sockets (``selectors``), not asyncio, so
that one process serves hundreds of streams with little delay of its own.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._closing import Closing

__all__ = ["ExactRecord", "ExactTimeServer"]

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS


@dataclass(frozen=True)
class ExactRecord:
    """One answered request: its id, when it arrived, when each token was written."""

    id: str
    arrived: float
    writes: tuple[float, ...]

    @property
    def ttft(self) -> float:
        return self.writes[0] - self.arrived

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.writes, self.writes[1:], strict=False)]


class ExactTimeServer(Closing):
    """The server, started in a child process; ``url`` to send to, `records` to read what
    it wrote and when (``ttft`` and ``itl`` in seconds)."""

    def __init__(self, ttft: float = 0.05, itl: float = 0.02, host: str = "127.0.0.1") -> None:
        if ttft < 0 or itl < 0:
            raise ValueError(f"ttft and itl must be >= 0, got {ttft} and {itl}")
        command = [sys.executable, "-m", __name__, host, repr(ttft), repr(itl)]
        # its stdin is its tie to us: when we are gone, it reads the end and stops
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"the exact-time server did not start (it said {line!r})")
        self.host, self.port = host, int(line)
        self.ttft, self.itl = ttft, itl

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def records(self, clear: bool = False) -> dict[str, ExactRecord]:
        """Every answered request so far, by its answer's ``id`` (``clear``: then forget
        them)."""
        path = "/records?clear=1" if clear else "/records"
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            rows = json.load(answer)
        return {
            row["id"]: ExactRecord(row["id"], row["arrived"], tuple(row["writes"])) for row in rows
        }

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


# --- the server process ---------------------------------------------------------------


def _realtime_offset() -> float:
    """What to subtract from a ``CLOCK_REALTIME`` reading (the kernel's receive stamps)
    to put it on ``perf_counter``'s clock: the closest of a few paired readings."""
    best: tuple[float, float] | None = None
    for _ in range(50):
        a = time.perf_counter()
        real = time.time()
        b = time.perf_counter()
        if best is None or b - a < best[0]:
            best = (b - a, real - (a + b) / 2)
    assert best is not None
    return best[1]


class _Connection:
    __slots__ = ("buffer", "arrived", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.arrived = 0.0
        self.out = b""  # what a full socket buffer held back


class _Stream:
    __slots__ = ("arrived", "conn", "id", "model", "sent", "tokens", "usage", "writes")

    def __init__(self, conn: _Connection, id_: str, tokens: int, usage: bool, model: str) -> None:
        self.conn = conn
        self.id = id_
        self.tokens = tokens
        self.usage = usage
        self.model = model
        self.arrived = conn.arrived
        self.sent = 0
        self.writes: list[float] = []


class _Loop:
    def __init__(self, host: str, ttft: float, itl: float) -> None:
        self.ttft, self.itl = ttft, itl
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(sys.stdin, selectors.EVENT_READ, "parent")
        self.offset = _realtime_offset()
        self.due: list[tuple[float, int, _Stream]] = []  # (when, tie-break, stream)
        self.counter = 0
        self.order = itertools.count()  # breaks a tie of times in the heap
        self.done: list[dict[str, Any]] = []

    def run(self) -> None:
        print(self.listener.getsockname()[1], flush=True)
        while True:
            timeout = None
            if self.due:
                timeout = max(self.due[0][0] - time.perf_counter(), 0.0)
            for key, mask in self.selector.select(timeout):
                if key.data is None:
                    self._accept()
                elif key.data == "parent":
                    return  # the parent's end of our stdin closed: it is gone
                else:
                    if mask & selectors.EVENT_WRITE:
                        self._flush(key.data)
                    if mask & selectors.EVENT_READ:
                        self._read(key.data)
            now = time.perf_counter()
            while self.due and self.due[0][0] <= now:
                _, _, stream = heapq.heappop(self.due)
                self._token(stream)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            conn = _Connection(sock)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self._drop(conn)
            return
        arrived = time.perf_counter()
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(stamp) >= 16:
                seconds, nanos = struct.unpack("qq", stamp[:16])
                arrived = seconds + nanos / 1e9 - self.offset
        conn.buffer += data
        conn.arrived = arrived  # the last byte so far
        while True:
            head, sep, rest = conn.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", "0") or 0)
            if len(rest) < length:
                return
            body, conn.buffer = rest[:length], rest[length:]
            self._answer(conn, lines[0].split(" ")[:2], body)

    def _answer(self, conn: _Connection, request: Sequence[str], body: bytes) -> None:
        method, path = (list(request) + ["", ""])[:2]
        if method == "POST" and path.startswith("/v1/chat/completions"):
            options = json.loads(body or b"{}")
            self.counter += 1
            tokens = int(options.get("max_tokens") or options.get("max_completion_tokens") or 16)
            usage = bool((options.get("stream_options") or {}).get("include_usage"))
            stream = _Stream(conn, f"exact-{self.counter}", max(tokens, 1), usage,
                             str(options.get("model") or "exact"))  # fmt: skip
            if not options.get("stream"):
                self._send(conn, _plain(400, {"error": {"message": "stream only"}}))
                return
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            )
            self._send(conn, head.encode())
            heapq.heappush(self.due, (stream.arrived + self.ttft, next(self.order), stream))
        elif method == "GET" and path.startswith("/records"):
            rows, self.done = self.done, ([] if "clear=1" in path else self.done)
            self._send(conn, _plain(200, rows))
        elif path.startswith("/health"):
            self._send(conn, _plain(200, {"status": "ok"}))
        else:
            self._send(conn, _plain(404, {"error": {"code": 404, "message": "File Not Found"}}))

    def _token(self, stream: _Stream) -> None:
        stream.sent += 1
        last = stream.sent == stream.tokens
        event: dict[str, Any] = {
            "id": stream.id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": stream.model,
            "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}],
        }
        data = _chunk(event)
        stream.writes.append(time.perf_counter())
        self._send(stream.conn, data)
        if not last:
            planned = stream.arrived + self.ttft + stream.sent * self.itl
            heapq.heappush(self.due, (planned, next(self.order), stream))
            return
        writes = stream.writes
        ttft_ms = (writes[0] - stream.arrived) * 1000
        timings = {
            "prompt_n": 1, "prompt_ms": ttft_ms, "cache_n": 0,
            "predicted_n": len(writes), "predicted_ms": (writes[-1] - writes[0]) * 1000,
        }  # fmt: skip
        event["choices"] = [{"index": 0, "delta": {}, "finish_reason": "length"}]
        event["timings"] = timings
        tail = _chunk(event)
        if stream.usage:
            usage = {
                "prompt_tokens": 1,
                "completion_tokens": len(writes),
                "total_tokens": len(writes) + 1,
            }
            tail += _chunk({**event, "choices": [], "usage": usage, "timings": timings})
        tail += _chunk_bytes(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self._send(stream.conn, tail)
        self.done.append({"id": stream.id, "arrived": stream.arrived, "writes": writes})

    def _send(self, conn: _Connection, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return
        if sent < len(data):
            conn.out = data[sent:]
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _flush(self, conn: _Connection) -> None:
        data, conn.out = conn.out, b""
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self._send(conn, data)

    def _drop(self, conn: _Connection) -> None:
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def _chunk_bytes(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunk(event: dict[str, Any]) -> bytes:
    return _chunk_bytes(b"data: " + json.dumps(event).encode() + b"\n\n")


def _plain(status: int, body: Any) -> bytes:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + data


if __name__ == "__main__":
    host, ttft, itl = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    os.environ.pop("PYTHONSTARTUP", None)
    _Loop(host, ttft, itl).run()
