"""The client under hostile conditions, in figures: how late each wall-clock limit fires, how
much memory a compression bomb costs, and how often the free resend fires in a long run
against a real llama.cpp server.

    python benchmarks/bench_hostile.py [--calls 5000] [--bomb-mib 1024]

- Deadlines: servers of plain sockets that trickle their answer one byte at a time, or a
  stream of SSE keep-alive comments; each limit's seconds until it fired.
- Bomb: a gzip answer of about 1 MB that expands to ``--bomb-mib`` MiB of zeros; the peak
  resident memory of a fresh process that asks for it with ``LlamaCppClient`` (defaults:
  256 MiB ``max_response_bytes``; and with 16 MiB) against the same request with raw
  ``httpx`` (which decodes it all).
- Resends: ``--calls`` chat calls with ``max_retries=0`` against the tiny-model llama.cpp
  server, a stream after every tenth, some read whole, some abandoned, with idle pauses
  around llama-server's 5 s keep-alive close; the DEBUG records of the ``llamatelemetry``
  logger count the free resends and counted retries, and every failed call is one the
  server's own close met. Then ``--pairs`` streams, each followed at once by a call (the
  moment llama-server closes a stream's connection). The same with raw ``httpx`` shows how
  often those closes meet a request when nothing guards against them. The same run with
  the guards off (idle connections kept 5 s, streams on kept-alive connections) shows what
  they absorb.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import resource
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from _harness import machine

from llamatelemetry.api import APIError, LlamaCppClient
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "hi"}]
MIB = 1 << 20


# --- servers of plain sockets ----------------------------------------------------------


def serve(script: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    """A server on 127.0.0.1 running ``script(conn)`` per connection; (url, stop)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=script, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def stop() -> None:
        stopping.set()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


def read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return False
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(65536)
    return True


def trickle(conn: socket.socket) -> None:
    try:
        while read_request(conn):
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n" + b"x" * 100000:
                time.sleep(0.3)
                conn.sendall(bytes([byte]))
    except OSError:
        pass


def comments(conn: socket.socket) -> None:
    try:
        if read_request(conn):
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            while True:
                conn.sendall(b"e\r\n: keep-alive\n\n\r\n")
                time.sleep(0.3)
    except OSError:
        pass


def deadlines() -> None:
    print("\nDeadlines (servers that trickle one byte per 0.3 s, or SSE comments per 0.3 s)")
    trickler, stop_trickler = serve(trickle)
    streamer, stop_streamer = serve(comments)
    cases: list[tuple[str, Callable[[], Any], float]] = []
    slow = LlamaCppClient(trickler, max_retries=0)
    bounded = LlamaCppClient(trickler, total_timeout=1, max_retries=0)
    stream_client = LlamaCppClient(streamer, timeout=1, total_timeout=1)
    cases = [
        ("health.check(timeout=1)", lambda: slow.health.check(timeout=1), 1),
        ("health.wait_until_ready(timeout=2)", lambda: slow.health.wait_until_ready(timeout=2), 2),
        (
            "chat, total_timeout=1 (trickled head)",
            lambda: bounded.chat.completions.create(messages=MESSAGES),
            1,
        ),
        (
            "stream of comments, total_timeout=1",
            lambda: list(stream_client.chat.completions.create(messages=MESSAGES, stream=True)),
            1,
        ),
    ]
    for name, fn, limit in cases:
        start = time.monotonic()
        try:
            fn()
            outcome = "returned"
        except APIError as exc:
            outcome = type(exc).__name__
        seconds = time.monotonic() - start
        print(
            f"  {name:<40} limit {limit} s   fired after {seconds:5.2f} s  "
            f"(+{seconds - limit:.2f})   {outcome}"
        )
    for client in (slow, bounded, stream_client):
        client.close()
    stop_trickler()
    stop_streamer()


# --- the compression bomb ---------------------------------------------------------------


def bomb_body(mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    return b"".join([*(packer.compress(block) for _ in range(mib)), packer.flush()])


def bomb_child(url: str, who: str, limit: int | None, out: Any) -> None:
    import httpx

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        if who == "httpx":
            with httpx.Client(timeout=60) as http:
                size = len(http.post(f"{url}/v1/chat/completions", json={}).content)
            outcome = f"read {size / MIB:.0f} MiB"
        else:
            options = {} if limit is None else {"max_response_bytes": limit}
            with LlamaCppClient(url, max_retries=0, **options) as client:
                client.chat.completions.create(messages=MESSAGES)
            outcome = "returned"
    except Exception as exc:  # noqa: BLE001 - the figure is what happened
        outcome = type(exc).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.send((before / 1024, peak / 1024, outcome))


def bomb(mib: int) -> None:
    body = bomb_body(mib)
    print(
        f"\nCompression bomb: {len(body) / MIB:.2f} MiB of gzip expanding to {mib} MiB; "
        "peak resident memory of a fresh process"
    )

    def script(conn: socket.socket) -> None:
        try:
            while read_request(conn):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                )
        except OSError:
            pass

    url, stop = serve(script)
    context = multiprocessing.get_context("fork")
    for who, limit in (("LlamaCppClient", None), ("LlamaCppClient", 16 * MIB), ("httpx", None)):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=bomb_child, args=(url, who, limit, send))
        child.start()
        before, peak, outcome = receive.recv()
        child.join()
        label = who + ("" if limit is None else f" (max_response_bytes={limit // MIB} MiB)")
        if who != "httpx" and limit is None:
            label += " (default limit)"
        print(f"  {label:<52} peak {peak:7.0f} MiB (+{peak - before:6.0f})   {outcome}")
    stop()


# --- free resends against a real server -------------------------------------------------


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.resends = 0
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.resends += message.startswith("resending ")
        self.retries += message.startswith("retrying ")


class RawHttpx:
    """THE PEER: plain ``httpx.Client`` with its defaults (idle connections kept 5 s, a
    stream read to its end returns its connection to the pool), the same calls and no
    retries, to count how often llama-server's own closes meet a request."""

    def __init__(self, url: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=url, timeout=60)
        self.chat = self
        self.completions = self

    def create(self, messages: Any, max_tokens: int, stream: bool = False) -> Any:
        import httpx

        body = {"messages": messages, "max_tokens": max_tokens, "stream": stream}
        try:
            if not stream:
                return self._http.post("/v1/chat/completions", json=body).json()
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                return iter(list(response.iter_lines()))
        except httpx.TransportError as exc:
            raise APIError(f"{type(exc).__name__}: {exc}") from exc

    def __enter__(self) -> RawHttpx:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()


def resends(calls: int, pauses: int, pairs: int, peer: bool = False) -> None:
    counter = Count()
    logger = logging.getLogger("llamatelemetry")
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    failures: list[str] = []
    rng = random.Random(7)
    who = "raw httpx (no retries)" if peer else "LlamaCppClient (max_retries=0)"
    print(f"\nResends, {who}, against the tiny-model llama.cpp server:")
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_chat_server(tmp) as server,
        RawHttpx(server.url) if peer else LlamaCppClient(server.url, max_retries=0) as client,
    ):

        def run(n: int, stream_every: int) -> None:
            try:
                client.chat.completions.create(messages=MESSAGES, max_tokens=1)
                if n % stream_every == stream_every - 1:
                    stream = client.chat.completions.create(
                        messages=MESSAGES, max_tokens=4, stream=True
                    )
                    if n % 40 == 39 and not peer:
                        next(stream)
                        stream.close()
                    else:
                        list(stream)
            except APIError as exc:
                failures.append(f"{n}: {exc}")

        started = time.monotonic()
        pause_at = set(rng.sample(range(calls), pauses))
        for n in range(calls):
            if n in pause_at:  # idle around llama-server's 5 s keep-alive close
                time.sleep(rng.uniform(3.9, 5.2))
            run(n, 10)
        print(
            f"  {calls} calls + {calls // 10} streams, {pauses} idle pauses of 3.9-5.2 s "
            f"({time.monotonic() - started:.0f} s): free resends {counter.resends}, "
            f"counted retries {counter.retries}, failed calls {len(failures)}"
        )
        mixed = (counter.resends, len(failures))
        started = time.monotonic()
        for n in range(pairs):  # a call right after each stream, as the server closes
            run(2 * n + 1, 2)
        print(
            f"  {pairs} streams each followed at once by a call "
            f"({time.monotonic() - started:.0f} s): free resends {counter.resends - mixed[0]}, "
            f"failed calls {len(failures) - mixed[1]}"
        )
    logger.removeHandler(counter)
    logger.setLevel(logging.NOTSET)
    for failure in failures[:3]:
        print("   ", failure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--pauses", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--bomb-mib", type=int, default=1024)
    parser.add_argument("--only", choices=["deadlines", "bomb", "resends"])
    args = parser.parse_args()
    print(machine())
    if args.only in (None, "deadlines"):
        deadlines()
    if args.only in (None, "bomb"):
        bomb(args.bomb_mib)
    if args.only in (None, "resends"):
        resends(args.calls, args.pauses, args.pairs)
        resends(args.calls, args.pauses, args.pairs, peer=True)


if __name__ == "__main__":
    main()
