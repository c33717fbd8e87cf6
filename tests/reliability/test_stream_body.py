"""A stream's body read straight from its connection (``api._stream_body``) gives exactly what
httpx would have given: the same bytes for every framing and every split, and the same
errors for every broken one. h11 is the oracle for the framing, httpx's own reading the
oracle for whole streams from hostile servers."""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h11
import httpx
import pytest

from llamatelemetry.api import (
    AsyncLlamaCppClient,
    LlamaCppClient,
    StreamInterruptedError,
    _stream_body,
)
from llamatelemetry.api._stream_body import MAX_LINE, ChunkedFraming, LengthFraming
from llamatelemetry.testing._fault_server import sse

from ._hostile import Conn, Hostile, elapsed, status_line
from ._support import MESSAGES, chunk

# --- the framing, against h11 -------------------------------------------------------------


def h11_body(data: bytes, head: bytes) -> tuple[bytes, str | None]:
    """What h11 makes of ``head`` + ``data`` then the connection closing: (body, error)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + data)
    conn.receive_data(b"")
    out = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Data):
                out += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return out, None
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return out, "stuck"
            elif isinstance(event, h11.ConnectionClosed):
                return out, "closed"
    except h11.ProtocolError as exc:  # a bad chunk footer is h11's LocalProtocolError
        return out, f"h11: {exc}"


def ours(data: bytes, framing: Any, pieces: list[bytes]) -> tuple[bytes, str | None]:
    out = b""
    try:
        for piece in pieces:
            out += framing.feed(piece)
        if not framing.done:
            framing.end()
    except httpx.RemoteProtocolError as exc:
        return out, f"ours: {exc}"
    return out, None


def split(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, i = [], 0
    while i < len(data):
        size = rng.choice((1, 2, 3, 5, rng.randint(1, 40), len(data)))
        pieces.append(data[i : i + size])
        i += size
    return pieces


def chunked(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 6)):
        payload = rng.randbytes(rng.choice((1, 2, 10, 300)))
        size = f"{len(payload):{rng.choice(['x', 'X', '04x'])}}".encode()
        ext = rng.choice([b"", b";name=value", b"; a", b';q="x"'])
        parts.append(size + ext + b"\r\n" + payload + b"\r\n")
    trailers = rng.choice([b"", b"X-Trailer: 1\r\n", b"A: b\r\nC: d\r\n"])
    return b"".join(parts) + b"0\r\n" + trailers + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BROKEN = [
    b"zz\r\nab\r\n0\r\n\r\n",  # not hex
    b"\r\n",  # no size
    b"2\r\nabc\r\n0\r\n\r\n",  # more data than the size
    b"3\r\nab",  # cut inside the data
    b"3\r\nabc",  # cut before the data's CRLF
    b"3\r\nabc\r",  # cut inside the data's CRLF
    b"3\r\nabcX\r\n",  # no CRLF after the data
    b"3\r\nabc\r\n",  # no last chunk
    b"0\r\n",  # no end of trailers
    b"0\r\nX: y\r\n",  # cut in the trailers
    b"1" * 21 + b"\r\n",  # a size of 21 digits
    b"-1\r\n",
    b" 1\r\na\r\n0\r\n\r\n",  # a space before the size
    b"3\r\nabc\r\n0\r\nContent-Length: abc\r\n\r\n",  # trailers h11 refuses
    b"3\r\nabc\r\n0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"3\r\nabc\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"3\r\nabc\r\n0\r\n folded\r\n\r\n",
    b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
]


def test_chunked_bodies_come_out_as_h11_reads_them_whatever_the_split() -> None:
    for seed in range(600):
        rng = random.Random(seed)
        data = chunked(rng)
        if seed % 3 == 0:  # and broken ones: cut anywhere, or a byte changed
            data = data[: rng.randint(0, len(data))]
        elif seed % 3 == 1 and data:
            i = rng.randrange(len(data))
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
        expected, error = h11_body(data, CHUNKED_HEAD)
        got, our_error = ours(data, ChunkedFraming(), split(data, rng))
        assert (got, our_error is None) == (expected, error is None), (seed, data, error, our_error)


@pytest.mark.parametrize("data", BROKEN)
def test_broken_chunked_framing_is_an_error_as_in_h11(data: bytes) -> None:
    expected, error = h11_body(data, CHUNKED_HEAD)
    assert error is not None
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        got, our_error = ours(data, ChunkedFraming(), pieces)
        assert our_error is not None and got == expected, (pieces, our_error)


@pytest.mark.parametrize(
    "data",
    [
        b"3;" + b"x" * 9000 + b"\r\nabc\r\n0\r\n\r\n",  # a long extension
        b"3\r\nabc\r\n0\r\n" + b"X-T: " + b"v" * 9000 + b"\r\n\r\n",  # a long trailer
        b"3\r\nabc\r\n0\r\nA: 1\r\n  folded\r\nB: 2\n\n",  # a fold, bare LFs
    ],
)
def test_long_lines_within_h11s_limit_are_read_in_any_split(data: bytes) -> None:
    expected = h11_body(data, CHUNKED_HEAD)
    assert expected == (b"abc", None)
    for size in (1, 7, 600, 8600, len(data)):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert ours(data, ChunkedFraming(), pieces) == expected, size


def test_an_endless_chunk_size_line_is_cut_at_the_line_limit() -> None:
    framing = ChunkedFraming()
    with pytest.raises(httpx.RemoteProtocolError, match="too long"):
        for _ in range(MAX_LINE + 1):
            framing.feed(b"0")  # a size of leading zeros that never ends


@pytest.mark.parametrize("length", [0, 1, 7, 300])
def test_a_length_body_stops_at_its_length_and_tells_a_short_one(length: int) -> None:
    data = bytes(range(256)) * 2
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length
    for cut in (len(data), length, max(length - 1, 0)):
        expected, error = h11_body(data[:cut], head)
        got, our_error = ours(data, LengthFraming(length), [data[:cut]])
        assert (got, our_error is None) == (expected, error is None), cut


# --- whole streams from hostile servers: as httpx reads them ------------------------------

EVENTS = b"".join(sse(chunk("Hel"), chunk("lo"), chunk(finish="stop")))


def chunked_writes(body: bytes, rng: random.Random) -> list[bytes]:
    """``body`` in chunks of random sizes, then those bytes in writes of random sizes."""
    encoded, i = b"", 0
    while i < len(body):
        size = rng.choice((1, 7, 50, len(body)))
        encoded += b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        i += size
    encoded += b"0\r\n\r\n"
    return split(encoded, rng)


def serving(head: bytes, writes: list[bytes], then: str = "close") -> Callable[[Conn], None]:
    def script(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(head + (writes[0] if writes else b""))  # bytes that h11 reads with the head
        for data in writes[1:]:
            conn.wait(0.002)  # apart, so that most come in reads of their own
            conn.send(data)
        if then == "reset":
            conn.reset()
        elif then == "hang":
            conn.wait(60)  # far past the total_timeout: ended only by the server's close

    return script


SSE_HEAD = b"Content-Type: text/event-stream\r\n"
CASES: dict[str, tuple[bytes, list[bytes], str]] = {
    "chunked": (b"Transfer-Encoding: chunked\r\n", chunked_writes(EVENTS, random.Random(1)), ""),
    "chunked, bytewise": (
        b"Transfer-Encoding: chunked\r\n",
        [bytes([b]) for b in b"".join(chunked_writes(EVENTS, random.Random(2)))],
        "",
    ),
    "chunked, extensions and trailers": (
        b"Transfer-Encoding: chunked\r\n",
        [b"%x;ext=1\r\n" % len(EVENTS) + EVENTS + b"\r\n", b"0\r\nX-T: 1\r\n\r\n"],
        "",
    ),
    "chunked, cut mid-chunk": (
        b"Transfer-Encoding: chunked\r\n",
        [b"%x\r\n" % len(EVENTS) + EVENTS[:100]],
        "reset",
    ),
    "chunked, cut between events": (
        b"Transfer-Encoding: chunked\r\n",
        chunked_writes(EVENTS, random.Random(3))[:-3],
        "",
    ),
    "chunked, bad size": (b"Transfer-Encoding: chunked\r\n", [b"nope\r\n" + EVENTS], ""),
    "chunked, bad size after data, then a stall": (
        b"Transfer-Encoding: chunked\r\n",
        [b"", b"%x\r\n" % len(EVENTS[:100]) + EVENTS[:100] + b"\r\nzz\r\n"],
        "hang",
    ),
    "length": (b"Content-Length: %d\r\n" % len(EVENTS), split(EVENTS, random.Random(4)), "hang"),
    "length, short": (b"Content-Length: %d\r\n" % len(EVENTS), [EVENTS[:-14]], ""),  # no [DONE]
    "until close": (b"Connection: close\r\n", split(EVENTS, random.Random(5)), ""),
}


def outcome(driver: Any) -> tuple[list[Any], Any]:
    seconds, (chunks, error, _), _ = elapsed(driver.stream)
    return (
        [c.choices[0].delta.content for c in chunks],
        None if error is None else (type(error).__name__, getattr(error, "method", None)),
        seconds < 10,  # what ended the stream was not the total_timeout of 20 s (nor a hang)
    )


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_stream_reads_as_through_httpx(
    drivers: Any, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra, writes, then = CASES[case]
    head = status_line(200) + SSE_HEAD + extra + b"\r\n"
    taken: list[bool] = []
    real = _stream_body._taken_over

    def spy(response: httpx.Response) -> Any:
        found = real(response)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(_stream_body, "_taken_over", spy)
    with Hostile(serving(head, writes, then)) as server:
        got = outcome(drivers(server.url, max_retries=0, total_timeout=20))
    monkeypatch.setattr(_stream_body, "_taken_over", lambda response: None)  # httpx reads it
    with Hostile(serving(head, writes, then)) as server:
        expected = outcome(drivers(server.url, max_retries=0, total_timeout=20))
    assert taken == [True]
    assert got == expected
    if case in ("chunked", "length", "until close") or "bytewise" in case or "trailers" in case:
        assert got == (["Hel", "lo", None], None, True)
    else:
        assert got[1] == ("StreamInterruptedError", "POST"), got  # the request named
        assert got[2], got


@pytest.mark.parametrize("status", [204, 304])
def test_an_answer_without_a_body_is_not_read_as_one(drivers: Any, status: int) -> None:
    head = status_line(status) + SSE_HEAD + b"Content-Length: 5\r\n\r\n"
    with Hostile(serving(head, [], "hang")) as server:
        driver = drivers(server.url, max_retries=0, total_timeout=20)
        seconds, (chunks, error, _), _ = elapsed(driver.stream)
    assert chunks == [] and type(error).__name__ == "StreamInterruptedError"
    assert seconds < 10  # not read until the 20 s limit, nor the 60 s hang


def test_a_stalled_body_is_cut_by_the_total_timeout(drivers: Any) -> None:
    head = status_line(200) + SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    one = sse(chunk("Hel"), done=False)[0]
    with Hostile(serving(head, [b"%x\r\n" % len(one) + one + b"\r\n"], "hang")) as server:
        driver = drivers(server.url, max_retries=0, total_timeout=0.5)
        seconds, (chunks, error, _), _ = elapsed(driver.stream)
    assert [c.choices[0].delta.content for c in chunks] == ["Hel"]
    assert type(error).__name__ == "APITimeoutError"
    assert seconds < 0.5 + 5  # cut by its limit, not by the server's 60 s hang


# --- the real server: taken over, or read through httpx when it cannot be -----------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The kind of body reader each stream got."""
    kinds: list[str] = []
    for name in ("body", "abody"):
        real = getattr(_stream_body, name)

        def spy(response: httpx.Response, real: Any = real) -> Any:
            reader = real(response)
            kinds.append(type(reader).__name__)
            return reader

        monkeypatch.setattr(f"llamatelemetry.api._content_decoding.{name}", spy)
    yield kinds


def test_a_real_stream_is_read_from_its_connection(chat_server: Any, reads: list[str]) -> None:
    with LlamaCppClient(chat_server.url) as client:
        stream = client.chat.completions.create(
            messages=MESSAGES, max_tokens=20, stream=True, ignore_eos=True
        )
        chunks = list(stream)
        plain = client.chat.completions.create(messages=MESSAGES, max_tokens=20, ignore_eos=True)
    assert reads == ["_Body"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


async def test_a_real_async_stream_is_read_from_its_connection(
    chat_server: Any, reads: list[str]
) -> None:
    async with AsyncLlamaCppClient(chat_server.url) as client:
        stream = await client.chat.completions.create(
            messages=MESSAGES, max_tokens=20, stream=True, ignore_eos=True
        )
        chunks = [c async for c in stream]
    assert reads == ["_AsyncBody"]
    assert len(chunks) >= 20 and chunks[-1].usage.completion_tokens == 20


class Counted(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, seen: list[int]) -> None:
        self._inner = inner
        self.seen = seen

    def __iter__(self) -> Iterator[bytes]:
        for part in self._inner:
            self.seen.append(len(part))
            yield part

    def close(self) -> None:
        self._inner.close()


class Relay(httpx.BaseTransport):
    """A transport of the user's own that sees every byte of the body (as a tracing
    wrapper does): the body must go through it, so through httpx."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.seen: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=Counted(response.stream, self.seen),
            extensions=response.extensions,  # the network stream too: not a reason to read it
        )

    def close(self) -> None:
        self._inner.close()


def test_a_transport_of_the_users_own_is_read_through_httpx(
    chat_server: Any, reads: list[str]
) -> None:
    relay = Relay()
    with httpx.Client(transport=relay) as http:
        client = LlamaCppClient(chat_server.url, http_client=http)
        chunks = list(
            client.chat.completions.create(
                messages=MESSAGES, max_tokens=8, stream=True, ignore_eos=True
            )
        )
    assert reads == ["generator"]  # httpx's own iter_raw
    assert len(relay.seen) >= 8  # every read went through the user's transport
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


@contextmanager
def cutting_relay(upstream: str) -> Iterator[str]:
    """A TCP relay to a real server that passes the answer's head and first event, then
    cuts the connection: whatever the server's speed, the stream is cut mid-way (cutting
    the client's own socket instead raced the server, which could send all of a short
    answer before the cut)."""
    host, port = upstream.removeprefix("http://").rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))

    def relay() -> None:
        conn, _ = listener.accept()
        with conn, socket.create_connection((host, int(port))) as server:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(body) < length:
                body += conn.recv(65536)
            server.sendall(head + b"\r\n\r\n" + body)
            answer = b""
            while answer.count(b"\n\n") < 2:  # the first event, and a second one's end
                data = server.recv(65536)
                if not data:
                    break
                answer += data
            cut = answer.index(b"\n\n", answer.index(b"\r\n\r\n") + 4) + 2
            conn.sendall(answer[:cut])
            conn.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(timeout=30)


def test_a_cut_real_connection_is_an_interrupted_stream(chat_server: Any) -> None:
    with cutting_relay(chat_server.url) as url, LlamaCppClient(url, max_retries=0) as client:
        stream = client.chat.completions.create(
            messages=MESSAGES, max_tokens=200, stream=True, ignore_eos=True
        )
        with pytest.raises(StreamInterruptedError):
            for _ in stream:
                pass
    assert stream.closed


def test_a_trace_hook_sees_httpcore_read_the_body(chat_server: Any, reads: list[str]) -> None:
    events: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    def hook(request: httpx.Request) -> None:
        request.extensions["trace"] = trace

    with httpx.Client(event_hooks={"request": [hook]}) as http:
        client = LlamaCppClient(chat_server.url, http_client=http)
        chunks = list(
            client.chat.completions.create(
                messages=MESSAGES, max_tokens=8, stream=True, ignore_eos=True
            )
        )
    assert reads == ["generator"]
    assert "http11.receive_response_body.started" in events
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


# --- the self-check: httpx's and httpcore's private objects are read only once proven ----


def not_used(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines saying a fast path is not used on these versions."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("llamatelemetry") and "not used" in r.getMessage()
    ]


def read_ahead_kept_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release of httpcore that keeps the bytes read past a response's head in a buffer of
    its own: the h11 connection and its network stream are where they were, but h11 holds
    none of those bytes (its ``trailing_data`` is empty)."""
    monkeypatch.setattr(h11.Connection, "trailing_data", property(lambda self: (b"", False)))


@pytest.mark.usefixtures("fresh_checks")
def test_an_httpcore_that_holds_the_bytes_elsewhere_is_read_through_httpx(
    drivers: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reads: list[str],
) -> None:
    read_ahead_kept_elsewhere(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    extra, writes, then = CASES["chunked"]
    head = status_line(200) + SSE_HEAD + extra + b"\r\n"
    with Hostile(serving(head, writes, then)) as server:  # the head and a chunk at once
        got = [outcome(drivers(server.url, max_retries=0, total_timeout=20)) for _ in range(2)]
    assert got == [(["Hel", "lo", None], None, True)] * 2
    assert "_Body" not in reads and "_AsyncBody" not in reads  # httpx read them
    [line] = not_used(caplog)  # once, for both streams
    assert "connection" in line


@pytest.mark.usefixtures("fresh_checks")
def test_the_installed_httpx_passes_the_check_and_its_streams_are_taken_over(
    drivers: Any, caplog: pytest.LogCaptureFixture, reads: list[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    extra, writes, then = CASES["chunked"]
    head = status_line(200) + SSE_HEAD + extra + b"\r\n"
    with Hostile(serving(head, writes, then)) as server:
        got = outcome(drivers(server.url, max_retries=0, total_timeout=20))
    assert got == (["Hel", "lo", None], None, True)
    assert reads in (["_Body"], ["_AsyncBody"])
    assert not_used(caplog) == []
