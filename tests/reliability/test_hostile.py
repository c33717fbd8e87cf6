"""Promises held against hostile servers of plain sockets, with both clients: a request is
sent at most once unless it provably never arrived, deadlines fire on time, limits hold.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import json
import socket
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import requests

from llamatelemetry.api import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AsyncLlamaCppClient,
    LlamaCppClient,
    ServiceUnavailableError,
    deadline,
)
from llamatelemetry.testing._fault_server import sse

from ._hostile import Conn, Hostile, elapsed
from ._support import LOADING, MESSAGES, REPLY, chunk

pytestmark = pytest.mark.usefixtures("fast_backoff")

BIG = "x" * (8 << 20)  # a body larger than what the socket buffers can take at once


def big_chat(client: Any) -> Any:
    return client.chat.completions.create(messages=[{"role": "user", "content": BIG}], max_tokens=4)


def answer_all(conn: Conn) -> None:
    while conn.read_request() is not None:
        conn.answer(200, REPLY)


# --- at most once ------------------------------------------------------------------------


def received_then_closed(conn: Conn) -> None:
    """Answers one request, then takes the next whole, works on it, closes unanswered."""
    if conn.read_request() is None:
        return
    conn.answer(200, REPLY)
    if conn.read_request() is None:
        return
    conn.wait(0.5)
    conn.sock.shutdown(socket.SHUT_RDWR)


WRITES: dict[str, Callable[[Any], Any]] = {
    "chat": lambda c: c.chat.completions.create(messages=MESSAGES, max_tokens=4),
    "stream": lambda c: c.chat.completions.create(messages=MESSAGES, max_tokens=4, stream=True),
    "complete": lambda c: c.complete("x", max_tokens=4),
    "slot save": lambda c: c.slots.save(0, "slot.bin"),
    "slot restore": lambda c: c.slots.restore(0, "slot.bin"),
    "slot erase": lambda c: c.slots.erase(0),
    "lora scales": lambda c: c.lora.set_scales({0: 0.5}),
}


@pytest.mark.parametrize("operation", list(WRITES))
def test_a_request_the_server_received_is_never_resent_with_no_retries(
    drivers: Any, operation: str
) -> None:
    # The reused keep-alive connection closes after the request arrived whole: the server
    # may have worked on it, so with max_retries=0 it is sent exactly once.
    with Hostile([received_then_closed, answer_all]) as server:
        driver = drivers(server.url, max_retries=0)
        driver.run(lambda c: c.health.check())
        with pytest.raises(APIConnectionError):
            driver.run(WRITES[operation])
        assert server.completed == 2
        assert server.connections == 1
        driver.chat()  # the same client goes on, on a new connection
        assert (server.completed, server.connections) == (3, 2)


def test_a_received_request_is_retried_only_against_max_retries(drivers: Any) -> None:
    with Hostile([received_then_closed, answer_all]) as server:
        driver = drivers(server.url, max_retries=1)
        driver.run(lambda c: c.health.check())
        assert driver.chat().choices[0].message.content == "ok"
        assert server.completed == 3  # health, the lost chat, its one counted retry


def reset_while_body_arrives(conn: Conn) -> None:
    """Answers one request; of the next it reads the head only and resets the connection."""
    if conn.read_request() is None:
        return
    conn.answer(200, REPLY)
    if conn.read_headers() is None:
        return
    conn.reset()


def test_a_request_that_never_arrived_whole_is_resent_for_free(drivers: Any, kind: str) -> None:
    # Writing failed on the reused connection: the server never had the whole request, so
    # no handler ran, and the sync client sends it again at once, even with max_retries=0.
    # asyncio buffers what it writes: the async client sees the reset while writing only
    # when it comes before the body is handed over, and otherwise (on the read) cannot prove
    # the request incomplete, so it spends a retry (none here). Either way: at most once.
    with Hostile([reset_while_body_arrives, answer_all]) as server:
        driver = drivers(server.url, max_retries=0)
        driver.run(lambda c: c.health.check())
        paths = ["/health", "/v1/chat/completions"]
        try:
            reply = driver.run(big_chat)
        except APIConnectionError:
            assert kind == "async"
            assert (server.completed, server.connections) == (1, 1)
            assert [h[":line"].split()[1] for h in server.heads] == paths
            return
        assert reply.choices[0].message.content == "ok"
        assert server.connections == 2
        assert server.completed == 2  # the health check and the resent chat, once each
        assert [h[":line"].split()[1] for h in server.heads] == [*paths, paths[1]]
        assert len(server.bodies[-1]) > len(BIG)


def test_a_write_that_fails_on_a_new_connection_is_not_free(drivers: Any) -> None:
    # Only a reused connection can be a stale one: a server that resets new connections
    # mid-request spends the retry budget.
    def reset_every_body(conn: Conn) -> None:
        if conn.read_headers() is not None:
            conn.reset()

    with Hostile(reset_every_body) as server:
        driver = drivers(server.url, max_retries=0)
        with pytest.raises(APIConnectionError):
            driver.run(big_chat)
        assert server.connections == 1


# --- deadlines: the total_timeout and the health probes are wall-clock limits -------------

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n"
    b"X-Padding: " + b"p" * 4000 + b"\r\n\r\n"
)
# How late a deadline may fire, however busy the machine: each stall below lasts far longer
# (a trickle that never ends, a 5 or 10 s wait) unless a test gives its own bound.
SLACK = 2.0


def trickler(every: float = 0.3) -> Callable[[Conn], None]:
    """Reads a request, then answers one byte every ``every`` seconds: each read succeeds,
    so no per-read timeout ever fires."""

    def script(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.trickle(HEAD, every)

    return script


def keepalive_comments(conn: Conn) -> None:
    """A stream that never ends: an SSE comment every 0.3 s."""
    if conn.read_request() is None:
        return
    conn.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    conn.send(b"%x\r\n%s\r\n" % (len(FIRST), FIRST))
    while not conn.server.stopping.wait(0.3):
        conn.send(b"e\r\n: keep-alive\n\n\r\n")


FIRST = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"a"},"finish_reason":null}]}\n\n'
)


def test_health_check_timeout_is_a_deadline(drivers: Any) -> None:
    with Hostile(trickler(0.6)) as server:
        driver = drivers(server.url)
        seconds, _, error = elapsed(lambda: driver.run(lambda c: c.health.check(timeout=1)))
        assert isinstance(error, APITimeoutError)
        assert "total_timeout of 1s passed" in str(error)
        assert 1.0 <= seconds < 1.0 + SLACK


def test_wait_until_ready_timeout_is_a_deadline(drivers: Any) -> None:
    with Hostile(trickler(0.6)) as server:
        driver = drivers(server.url)
        seconds, _, error = elapsed(
            lambda: driver.run(lambda c: c.health.wait_until_ready(timeout=2, interval=0.1))
        )
        assert isinstance(error, APITimeoutError)
        assert "not ready within 2s" in str(error)
        assert 1.9 <= seconds < 2.0 + SLACK


def read_stream(stream: Any) -> Any:
    """Every chunk of a sync or async stream (a coroutine for an async one)."""
    if hasattr(stream, "__aiter__"):

        async def drain() -> list[Any]:
            return [chunk async for chunk in stream]

        return drain()
    return list(stream)


def test_total_timeout_bounds_a_stream_of_keepalive_comments(drivers: Any) -> None:
    with Hostile(keepalive_comments) as server:
        driver = drivers(server.url, timeout=1, total_timeout=1.5)
        stream = driver.run(lambda c: c.chat.completions.create(messages=MESSAGES, stream=True))
        seconds, _, error = elapsed(lambda: driver.run(lambda c: read_stream(stream)))
        assert isinstance(error, APITimeoutError)
        assert "total_timeout passed before its end" in str(error)
        assert stream.closed
        assert seconds < 1.5 + SLACK


def test_per_call_total_timeout_overrides_the_clients(drivers: Any) -> None:
    with Hostile(keepalive_comments) as server:
        driver = drivers(server.url, total_timeout=30)
        start = time.monotonic()
        stream = driver.run(
            lambda c: c.chat.completions.create(messages=MESSAGES, stream=True, total_timeout=0.8)
        )
        _, _, error = elapsed(lambda: driver.run(lambda c: read_stream(stream)))
        assert isinstance(error, APITimeoutError)
        assert time.monotonic() - start < 0.8 + SLACK


def test_total_timeout_covers_retries_and_their_waits(drivers: Any) -> None:
    def loading(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.answer(503, LOADING, {"Retry-After": "0.4"})

    with Hostile(loading) as server:
        driver = drivers(server.url, max_retries=50, total_timeout=1)
        seconds, _, error = elapsed(driver.chat)
        assert isinstance(error, APITimeoutError)
        assert isinstance(error.__cause__, ServiceUnavailableError)
        assert "after 3 attempts" in str(error)  # 0, 0.4, 0.8: the next wait would pass 1 s
        assert server.completed == 3
        assert seconds < 1.0 + SLACK


def test_total_timeout_fires_inside_a_trickled_head(drivers: Any) -> None:
    with Hostile(trickler(0.3)) as server:
        driver = drivers(server.url, total_timeout=1)
        seconds, _, error = elapsed(driver.chat)
        assert isinstance(error, APITimeoutError)
        assert not isinstance(error, requests.ConnectionError)
        assert 1.0 <= seconds < 1.0 + SLACK
        assert server.completed == 1  # a deadline is not retried


ENDPOINTS: dict[str, Callable[[Any], Any]] = {
    "chat": lambda c: c.chat.completions.create(messages=MESSAGES),
    "chat stream": lambda c: c.chat.completions.create(messages=MESSAGES, stream=True),
    "completions": lambda c: c.completions.create("x"),
    "complete": lambda c: c.complete("x"),
    "infill": lambda c: c.infill("def f(", "):"),
    "embeddings": lambda c: c.embeddings.create("x"),
    "embed": lambda c: c.embed("x"),
    "tokenize": lambda c: c.tokenize("x"),
    "detokenize": lambda c: c.detokenize([1, 2]),
    "apply_template": lambda c: c.apply_template(MESSAGES),
    "rerank": lambda c: c.rerank("q", ["a", "b"]),
    "models": lambda c: c.models.list(),
    "props": lambda c: c.props.get(),
    "slots": lambda c: c.slots.list(),
    "slot save": lambda c: c.slots.save(0, "s.bin"),
    "lora": lambda c: c.lora.list(),
    "lora apply": lambda c: c.lora.apply("a.gguf"),
    "metrics": lambda c: c.metrics.get(),
    "health": lambda c: c.health.check(),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_slow_loris_on_every_endpoint_is_cut_by_total_timeout(drivers: Any, endpoint: str) -> None:
    with Hostile(trickler(0.2)) as server:
        driver = drivers(server.url, total_timeout=0.6)
        seconds, _, error = elapsed(lambda: driver.run(ENDPOINTS[endpoint]))
        assert isinstance(error, APITimeoutError), error
        assert seconds < 0.6 + SLACK


def test_a_server_that_never_reads_the_body(drivers: Any) -> None:
    def never_reads(conn: Conn) -> None:
        if conn.read_headers() is not None:
            conn.wait(10)

    with Hostile(never_reads) as server:
        driver = drivers(server.url, total_timeout=1)
        seconds, _, error = elapsed(lambda: driver.run(big_chat))
        assert isinstance(error, APITimeoutError)
        assert seconds < 1.0 + SLACK


def test_a_server_that_answers_before_the_body_is_sent(drivers: Any) -> None:
    # An early 413 and a close, while the body is still being written: the answer is the
    # server's status, read despite the failed write, and not retried.
    def refuses(conn: Conn) -> None:
        if conn.read_headers() is not None:
            conn.answer(
                413,
                {"error": {"code": 413, "message": "too big", "type": "x"}},
                {"Connection": "close"},
            )
            conn.sock.shutdown(socket.SHUT_WR)
            while conn.sock.recv(1 << 20):  # a lingering close, as nginx does: no reset
                pass

    with Hostile(refuses) as server:
        driver = drivers(server.url, max_retries=3)
        _, _, error = elapsed(lambda: driver.run(big_chat))
        assert isinstance(error, APIStatusError)
        assert (error.status_code, error.message) == (413, "too big")
        assert server.connections == 1


def test_tls_handshake_that_stalls(drivers: Any) -> None:
    def silent(conn: Conn) -> None:
        conn.wait(10)

    with Hostile(silent) as server:
        url = server.url.replace("http://", "https://")
        driver = drivers(url, verify=False, total_timeout=1, max_retries=3)
        seconds, _, error = elapsed(lambda: driver.run(lambda c: c.props.get()))
        assert isinstance(error, APITimeoutError)
        assert seconds < 1.0 + SLACK
        driver = drivers(url, verify=False, timeout=(0.5, 60), max_retries=0)
        seconds, _, error = elapsed(lambda: driver.run(lambda c: c.props.get()))
        assert isinstance(error, APIConnectTimeoutError)  # the handshake is part of connecting
        assert seconds < 0.5 + SLACK


def test_half_closed_mid_body_is_an_error_not_a_hang(drivers: Any) -> None:
    def half(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.send(HEAD[:200])
            conn.sock.shutdown(socket.SHUT_WR)  # no more bytes, but still reading
            conn.wait(10)

    with Hostile(half) as server:
        driver = drivers(server.url, max_retries=0)
        seconds, _, error = elapsed(driver.chat)
        assert isinstance(error, APIConnectionError)
        assert seconds < SLACK


@pytest.mark.parametrize("length", ["1000000000000", "-5", "12, 13", "0x10"])
def test_bad_content_length(drivers: Any, length: str) -> None:
    def liar(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + length.encode() + b"\r\n\r\n{}"
            )
            conn.wait(5)
            return

    with Hostile(liar) as server:
        driver = drivers(server.url, max_retries=0)
        seconds, _, error = elapsed(driver.chat)
        assert isinstance(error, APIError)
        if length.isdigit():  # too large to hold: refused before reading a byte of it
            assert isinstance(error, APIResponseError)
            assert "larger than max_response_bytes" in str(error)
        assert seconds < SLACK
        assert server.completed == 1


STREAM_BODY = FIRST + b"data: [DONE]\n\n"


def closes_after_streams(conn: Conn) -> None:
    """As llama-server does: a streamed answer, then the connection closed a moment later
    although it said keep-alive; plain answers keep the connection open."""
    while (request := conn.read_request()) is not None:
        headers, body = request
        if b'"stream": true' not in body and b'"stream":true' not in body:
            conn.answer(200, REPLY)
            continue
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n"
            % (len(STREAM_BODY), STREAM_BODY)
        )
        conn.wait(0.002)
        conn.sock.shutdown(socket.SHUT_RDWR)
        return


def stream_chunks(client: Any) -> Any:
    """Open a chat stream and read it whole, with either client."""
    made = client.chat.completions.create(messages=MESSAGES, stream=True)
    if inspect.isawaitable(made):

        async def whole() -> list[Any]:
            return await read_stream(await made)  # type: ignore[no-any-return]

        return whole()
    return read_stream(made)


def test_a_call_right_after_a_stream_never_meets_its_closing_connection(drivers: Any) -> None:
    with Hostile(closes_after_streams) as server:
        driver = drivers(server.url, max_retries=0)
        for _ in range(100):
            assert len(driver.run(stream_chunks)) == 1
            assert driver.chat().choices[0].message.content == "ok"
        assert server.completed == 200  # nothing lost, nothing resent
        streams = [h for h in server.heads if h.get("accept") == "text/event-stream"]
        assert len(streams) == 100
        assert all(h.get("connection") == "close" for h in streams)


# --- compression bombs ----------------------------------------------------------------------


@functools.cache
def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(size >> 20)), packer.flush()])


def bomb(event_stream: bool) -> Callable[[Conn], None]:
    BOMB = gzip_of_zeros(64 << 20)  # 64 MiB of zeros in about 64 KB

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            kind = "text/event-stream" if event_stream else "application/json"
            conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
                + kind.encode()
                + b"\r\nContent-Length: %d\r\n\r\n" % len(BOMB)
                + BOMB
            )

    return script


def test_a_compression_bomb_is_cut_at_max_response_bytes(drivers: Any) -> None:
    with Hostile(bomb(False)) as server:
        driver = drivers(server.url, max_retries=2, max_response_bytes=8 << 20)
        _, _, error = elapsed(driver.chat)
        assert isinstance(error, APIResponseError)
        assert "larger than max_response_bytes (8,388,608 bytes" in str(error)
        assert server.completed == 1  # a wrong answer is not retried
        assert server.heads[0]["accept-encoding"] == "identity"  # llama-server never compresses


def test_a_compressed_event_bomb_is_cut_at_max_event_bytes(drivers: Any) -> None:
    with Hostile(bomb(True)) as server:
        driver = drivers(server.url, max_event_bytes=1 << 20)
        chunks, error, stream = driver.stream()
        assert chunks == []
        assert isinstance(error, APIResponseError)
        assert "max_event_bytes" in str(error)
        assert stream.closed


def compressing(
    encoding: str, payload: bytes, kind: str = "application/json", split: int = 7
) -> Callable[[Conn], None]:
    """Answers every request with ``payload`` compressed as ``encoding``, in small writes."""
    if encoding == "gzip":
        body = gzip.compress(payload)
    elif encoding == "deflate":
        body = zlib.compress(payload)
    elif encoding == "raw-deflate":
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body, encoding = packer.compress(payload) + packer.flush(), "deflate"
    else:  # sent as it is, under that name
        body, encoding = payload, encoding.rstrip("!")

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: "
                + encoding.encode()
                + b"\r\nContent-Type: "
                + kind.encode()
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            for i in range(0, len(body), split):
                conn.send(body[i : i + split])

    return script


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_answer_is_still_read_right(drivers: Any, encoding: str) -> None:
    # Asked for identity, a proxy may compress anyway: the answer is inflated correctly.
    with Hostile(compressing(encoding, json.dumps(REPLY).encode())) as server:
        assert drivers(server.url).chat().choices[0].message.content == "ok"
    events = b"".join(sse(chunk("a"), chunk("b"), chunk(finish="stop")))
    with Hostile(compressing(encoding, events, "text/event-stream")) as server:
        chunks, error, _ = drivers(server.url).stream()
        assert error is None
        assert [c.choices[0].delta.content for c in chunks] == ["a", "b", None]


@pytest.mark.parametrize(
    ("encoding", "body", "says"),
    [
        ("gzip!", b"\x1f\x8b\x08\x00garbage-not-gzip", "the gzip body is corrupt"),
        ("br", b"\x0b\x02\x80{}\x03", "compressed its answer with 'br'"),
    ],
)
def test_a_wrongly_compressed_answer_is_a_response_error(
    drivers: Any, encoding: str, body: bytes, says: str
) -> None:
    with Hostile(compressing(encoding, body)) as server:
        _, _, error = elapsed(drivers(server.url, max_retries=2).chat)
        assert isinstance(error, APIResponseError)
        assert says in str(error)
        assert server.completed == 1


def test_a_bomb_is_inflated_no_further_than_the_limit() -> None:
    # Inflated a MiB at a time: the memory a 64 MiB bomb costs stays near the 2 MiB limit.
    with (
        Hostile(bomb(False)) as server,
        LlamaCppClient(server.url, max_retries=0, max_response_bytes=2 << 20) as client,
    ):
        tracemalloc.start()
        try:
            with pytest.raises(APIResponseError, match="larger than max_response_bytes"):
                client.chat.completions.create(messages=MESSAGES)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / (1 << 20):.1f} MiB"


# --- deadline(): a wall-clock limit on a block of calls --------------------------------------


def test_a_deadline_block_bounds_every_call_in_it(drivers: Any) -> None:
    with Hostile(trickler(0.2)) as server:
        driver = drivers(server.url)

        def calls(client: Any) -> Any:
            async def both() -> None:
                with deadline(0.8):
                    await client.props.get()

            if isinstance(client, AsyncLlamaCppClient):
                return both()
            with deadline(0.8):
                client.props.get()
            return None

        seconds, _, error = elapsed(lambda: driver.run(calls))
        assert isinstance(error, APITimeoutError)
        assert "deadline() block" in str(error)
        assert 0.8 <= seconds < 0.8 + SLACK


def test_a_deadline_block_keeps_the_earlier_end_and_bounds_its_streams() -> None:
    with Hostile(keepalive_comments) as server, LlamaCppClient(server.url) as client:
        start = time.monotonic()
        with deadline(0.6), deadline(30):  # the inner, later end does not extend it
            stream = client.chat.completions.create(messages=MESSAGES, stream=True)
        next(stream)
        with pytest.raises(APITimeoutError, match="total_timeout passed before its end"):
            list(stream)  # read after the block: the stream keeps the block's end
        assert time.monotonic() - start < 0.6 + SLACK


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_deadline_checks_its_argument(seconds: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds must be"):
        with deadline(seconds):
            pass


def test_a_slow_server_does_not_hold_the_metrics_collection() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llamatelemetry.telemetry import LlamaServerMetrics

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    with Hostile(trickler(0.2)) as server, LlamaCppClient(server.url) as client:
        bridge = LlamaServerMetrics(client, meter_provider=meters, timeout=1.5)
        seconds, _, error = elapsed(reader.get_metrics_data)
        assert error is None
        assert seconds < 1.5 + 1.0  # /metrics and /slots together, within the timeout (not 3 s)
        assert (bridge.scrapes, bridge.failures) == (1, 1)
        bridge.close()
    meters.shutdown()


# --- found by attacking the limits: names, flows, members, odd URLs ---------------------------


class StalledListeners:
    """Listening sockets on 127.0.0.1 and 127.0.0.2, one port, whose accept queues are full:
    connecting to either hangs (the SYNs are dropped), as with an unreachable host."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        port = 0
        for host in ("127.0.0.1", "127.0.0.2"):
            listener = socket.socket()
            listener.bind((host, port))
            listener.listen(0)
            port = listener.getsockname()[1]
            self.socks.append(listener)
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                try:
                    filler.connect((host, port))
                except BlockingIOError:
                    pass
                self.socks.append(filler)
        self.port = port

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_total_timeout_covers_every_address_of_a_name(
    drivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name with two addresses, both unreachable: the deadline is for the whole connect,
    # not for each address.
    real = socket.getaddrinfo
    stalled = StalledListeners()

    def two_addresses(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("llama.test", b"llama.test"):  # anyio asks with bytes
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))
                for ip in ("127.0.0.1", "127.0.0.2")
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    try:
        driver = drivers(f"http://llama.test:{stalled.port}", total_timeout=2, max_retries=0)
        seconds, _, error = elapsed(lambda: driver.run(lambda c: c.props.get()))
        assert isinstance(error, APITimeoutError)
        assert seconds < 2.0 + 1.5  # not 2 s for each address
    finally:
        stalled.close()


def test_total_timeout_covers_a_slow_name_lookup(
    drivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("slow.test", b"slow.test"):  # anyio asks with bytes
            time.sleep(3)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    driver = drivers("http://slow.test:9", total_timeout=1, max_retries=0)
    seconds, _, error = elapsed(lambda: driver.run(lambda c: c.props.get()))
    assert isinstance(error, APITimeoutError)
    assert seconds < 1.0 + 1.5  # not the 3 s lookup


def slow_answers(conn: Conn) -> None:
    while (request := conn.read_request()) is not None:
        conn.wait(0.4)
        path = request[0][":line"].split()[1]
        conn.answer(
            200, [{"id": 0, "path": "a.gguf", "scale": 1.0}] if "lora" in path else {"status": "ok"}
        )


@pytest.mark.parametrize("operation", ["lora apply", "lora scales"])
def test_total_timeout_covers_a_whole_multi_step_operation(drivers: Any, operation: str) -> None:
    # lora.apply reads the adapters, then sets them, then reads them again: 3 x 0.4 s.
    run = {
        "lora apply": lambda c: c.lora.apply("a.gguf", 0.5),
        "lora scales": lambda c: c.lora.set_scales({0: 0.5}),
    }[operation]
    with Hostile(slow_answers) as server:
        driver = drivers(server.url, total_timeout=0.7, max_retries=0)
        seconds, _, error = elapsed(lambda: driver.run(run))
        assert isinstance(error, APITimeoutError)
        assert seconds < 0.7 + SLACK


def test_wait_until_ready_ends_with_the_deadline_block_around_it(drivers: Any) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, not listening: every probe is refused at once
    try:
        driver = drivers(f"http://127.0.0.1:{port.getsockname()[1]}")

        def wait(client: Any) -> Any:
            async def inside() -> Any:
                with deadline(0.5):
                    return await client.health.wait_until_ready(timeout=5)

            if isinstance(client, AsyncLlamaCppClient):
                return inside()
            with deadline(0.5):
                return client.health.wait_until_ready(timeout=5)

        seconds, _, error = elapsed(lambda: driver.run(wait))
        assert isinstance(error, APITimeoutError)
        assert "not ready within the deadline() block" in str(error)
        assert seconds < 0.5 + SLACK
    finally:
        port.close()


def test_gzip_members_and_what_follows_the_last(drivers: Any) -> None:
    # RFC 1952 allows several members; bytes after a member that start none are an error,
    # never held uncounted (they used to pile up past max_response_bytes).
    two = gzip.compress(json.dumps(REPLY).encode()[:20]) + gzip.compress(
        json.dumps(REPLY).encode()[20:]
    )
    with Hostile(compressing("gzip!", two)) as server:
        assert drivers(server.url).chat().choices[0].message.content == "ok"
    junk = gzip.compress(b"{}") + b"\x00" * (8 << 20)
    with Hostile(compressing("gzip!", junk, split=65536)) as server:
        driver = drivers(server.url, max_response_bytes=16 << 20, max_retries=0)
        seconds, _, error = elapsed(driver.chat)
        assert isinstance(error, APIResponseError)
        assert "gzip body is corrupt" in str(error)
        assert seconds < SLACK


@pytest.mark.parametrize("value", ["Mon, 01 Jan 99999 00:00:00 GMT", "nan", "-5", "1e400"])
def test_retry_after_out_of_any_range_is_ignored(drivers: Any, value: str) -> None:
    answers = iter([(503, LOADING), (200, REPLY)])

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            status, body = next(answers)
            conn.answer(status, body, {"Retry-After": value})

    with Hostile(script) as server:
        assert drivers(server.url, max_retries=1).chat().choices[0].message.content == "ok"
        assert server.completed == 2


@pytest.mark.parametrize(
    "url",
    [
        "http:/alice:PW-x1@host",
        "http//alice:PW-x1@host",
        "alice:PW-x1@host:80",
        "//alice:PW-x1@host",
        "http://alice:PW-x1#frag@host",
        "http://alice:PW-x1/x@host",
        "http://alice:PW-x1?q@host",
        "http://[::1:8080",
        "http://alice:PW-x1@host:103073",
    ],
)
def test_a_malformed_url_is_refused_without_showing_its_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        LlamaCppClient(url)
    assert "PW-x1" not in str(info.value)
    assert "base_url" in str(info.value)


def test_an_api_key_with_spaces_at_either_end_is_refused_before_sending() -> None:
    for key in ("sk-key ", " sk-key", "sk-key\t"):
        with pytest.raises(ValueError, match="without spaces at either end") as info:
            LlamaCppClient("http://127.0.0.1:9", api_key=key)
        assert "sk-key" not in str(info.value)


def test_an_invalid_header_value_is_not_repeated_in_the_error() -> None:
    with (
        Hostile(answer_all) as server,
        LlamaCppClient(server.url, default_headers={"X-Token": "tok-S3cret "}) as client,
    ):
        with pytest.raises(ValueError, match="could not be sent") as info:
            client.tokenize("x")
        assert "S3cret" not in str(info.value) and info.value.__cause__ is None
        assert server.completed == 0
