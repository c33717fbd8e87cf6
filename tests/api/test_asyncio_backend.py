"""The async client's network backend on asyncio's own transports (`AsyncioBackend`): bytes
stamped when the event loop takes them from the socket, reads and writes bounded by their
timeouts, large bodies both ways held to a bounded buffer. Against real sockets: the
exact-time server, a scripted server, and one that accepts and never reads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from llamatelemetry.api import AsyncLlamaCppClient
from llamatelemetry.api._asyncio_backend import READ_BUFFER, AsyncioBackend
from llamatelemetry.api._internal import WireTimes, wire_times
from llamatelemetry.api._socket_stream import KERNEL_STAMPS
from llamatelemetry.api._socket_waits import closes
from llamatelemetry.testing._exact_server import ExactTimeServer
from llamatelemetry.testing._fault_server import FaultServer, Reply


@pytest.fixture(params=[True, False], ids=["socket", "transport"])
def kernel_stamps(request: pytest.FixtureRequest) -> bool:
    """Each test of a connection's behaviour runs on both kinds: read off the socket
    with the kernel's stamps (`SocketStream`, plain TCP on Linux), and on an asyncio
    transport (`AsyncioStream`: TLS, and other systems)."""
    if request.param and not KERNEL_STAMPS:
        pytest.skip("the kernel stamps received bytes on Linux")
    return bool(request.param)


def backend(kernel_stamps: bool) -> AsyncioBackend:
    return AsyncioBackend(httpcore.AnyIOBackend(), kernel_stamps=kernel_stamps)


def pool(kernel_stamps: bool) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(network_backend=backend(kernel_stamps))


def test_bytes_are_stamped_when_the_loop_takes_them_not_when_a_task_gets_to_them() -> None:
    """Two streams whose first tokens come while the loop is busy: once free, the task
    that runs first holds it another 0.15 s. The second still reads its token as come
    when the first's came: the time a busy generator would otherwise add to every stream
    but one."""
    seen: list[tuple[float, float]] = []

    async def one(client: AsyncLlamaCppClient) -> None:
        times = WireTimes()
        wire_times.set(times)
        stream = await client.chat.completions.create(
            messages=[{"role": "user", "content": "hi"}], max_tokens=1, stream=True
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    assert times.received is not None
                    seen.append((times.received, time.perf_counter()))
                    time.sleep(0.15)  # this task keeps the loop

    async def busy() -> None:
        await asyncio.sleep(0.02)  # both requests are out; their tokens come in 0.05 s
        time.sleep(0.1)

    async def go(url: str) -> None:
        async with AsyncLlamaCppClient(url, max_retries=0) as client:
            await asyncio.gather(one(client), one(client), busy())

    with ExactTimeServer(ttft=0.05, itl=0.0) as server:
        asyncio.run(go(server.url))
        truth = sorted(r.writes[0] for r in server.records().values())
    (first_stamp, first_read), (second_stamp, second_read) = sorted(seen, key=lambda s: s[1])
    assert second_read - first_read >= 0.15
    assert abs(second_stamp - first_stamp) < 0.03, seen
    assert all(stamp >= written for stamp, written in zip(
        sorted((first_stamp, second_stamp)), truth, strict=True))  # fmt: skip


@pytest.mark.skipif(not KERNEL_STAMPS, reason="the kernel stamps received bytes on Linux")
@pytest.mark.parametrize("kernel_stamps", [True, False], ids=["socket", "transport"])
def test_bytes_are_timed_by_the_kernel_even_when_the_loop_is_blocked(kernel_stamps: bool) -> None:
    """The first token comes while the event loop is blocked for 0.2 s. Read off the
    socket with the kernel's stamp, it is timed when it came (within 2 ms of its true
    write), and its lag says how late the loop took it; read by an asyncio transport, it
    is timed when the loop got free (what the kernel's stamp is there for)."""
    found: list[tuple[float, float]] = []

    async def go(url: str) -> None:
        backend = AsyncioBackend(httpcore.AnyIOBackend(), kernel_stamps=kernel_stamps)
        async with httpcore.AsyncConnectionPool(network_backend=backend) as http:
            body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, ' \
                   b'"stream": true}'  # fmt: skip
            async with http.stream("POST", url + "/v1/chat/completions", content=body,
                                   headers={"Connection": "close"}) as response:  # fmt: skip
                stream = response.extensions["network_stream"]
                time.sleep(0.2)  # the token comes 0.05 s in: the loop cannot take it
                async for _ in response.aiter_stream():
                    found.append((stream.arrived, getattr(stream, "lag", 0.0)))
                    break

    with ExactTimeServer(ttft=0.05, itl=0.0) as server:
        asyncio.run(go(server.url))
        [record] = server.records().values()
    arrived, lag = found[0]
    if kernel_stamps:
        assert 0 <= arrived - record.writes[0] < 0.002, arrived - record.writes[0]
        assert lag > 0.1
    else:
        assert arrived - record.writes[0] > 0.1


def test_a_large_answer_read_slowly_arrives_whole(kernel_stamps: bool) -> None:
    """Three times the bytes a connection holds unread before it stops reading its socket:
    read a piece at a time, with pauses, every byte comes, in order."""
    body = bytes(range(256)) * (3 * READ_BUFFER // 256 + 7)

    async def go(url: str) -> bytes:
        async with pool(kernel_stamps) as http:
            async with http.stream("GET", url) as response:
                parts = []
                async for part in response.aiter_stream():
                    parts.append(part)
                    if len(parts) % 16 == 0:
                        await asyncio.sleep(0.01)
                return b"".join(parts)

    with FaultServer(Reply(body=body)) as server:
        assert asyncio.run(go(server.url)) == body


def test_a_server_that_never_answers_is_a_read_timeout(kernel_stamps: bool) -> None:
    with FaultServer(Reply(delay=5.0)) as server:

        async def go() -> None:
            async with pool(kernel_stamps) as http:
                await http.request("GET", server.url, extensions={"timeout": {"read": 0.2}})

        started = time.perf_counter()
        with pytest.raises(httpcore.ReadTimeout):
            asyncio.run(go())
        assert time.perf_counter() - started < 2.0


@pytest.fixture
def deaf_server() -> Iterator[tuple[str, threading.Event]]:
    """Accepts connections and reads nothing until told to; then reads all and answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    go_on = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            go_on.wait(10)
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    part = conn.recv(65536)
                    if not part:
                        return
                    data += part
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    part = conn.recv(1 << 20)
                    if not part:
                        return
                    rest += part
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (
                    len(str(len(rest))), len(rest)))  # fmt: skip
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", go_on
    go_on.set()
    listener.close()
    thread.join(timeout=10)


def test_a_request_the_server_does_not_read_is_a_write_timeout(
    kernel_stamps: bool,
    deaf_server: tuple[str, threading.Event],
) -> None:
    url, _ = deaf_server

    async def go() -> None:
        async with pool(kernel_stamps) as http:
            await http.request(
                "POST", url, content=b"x" * (64 << 20), extensions={"timeout": {"write": 0.3}}
            )

    with pytest.raises(httpcore.WriteTimeout):
        asyncio.run(go())


def test_a_large_request_waits_for_room_and_goes_whole(
    kernel_stamps: bool,
    deaf_server: tuple[str, threading.Event],
) -> None:
    url, go_on = deaf_server
    size = 32 << 20

    async def go() -> bytes:
        async with pool(kernel_stamps) as http:
            asyncio.get_running_loop().call_later(0.3, go_on.set)
            response = await http.request("POST", url, content=b"x" * size)
            return response.content

    assert asyncio.run(go()) == str(size).encode()


def test_a_write_cancelled_while_waiting_for_room_leaves_the_next_one_waiting(
    kernel_stamps: bool,
    deaf_server: tuple[str, threading.Event],
) -> None:
    """The server reads nothing: a write waits for room, and is cancelled. The connection
    is as full as before, so the next write waits too (and times out), rather than piling
    more on the buffer."""
    url, _ = deaf_server
    host, port = url.removeprefix("http://").split(":")

    async def go() -> None:
        stream = await backend(kernel_stamps).connect_tcp(host, int(port))
        try:
            waiting = asyncio.ensure_future(stream.write(b"x" * (64 << 20)))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # no room: it waits
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            with pytest.raises(httpcore.WriteTimeout):
                await stream.write(b"y" * (1 << 20), timeout=0.2)
        finally:
            await stream.aclose()

    asyncio.run(go())


@pytest.fixture
def paced_server() -> Iterator[tuple[str, int, list[float]]]:
    """Accepts one connection and sends a byte after each of the delays in the list the
    test fills in (before it connects); then holds the connection open, silent."""
    delays: list[float] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for delay in delays:
                time.sleep(delay)
                conn.sendall(b"x")
            done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield "127.0.0.1", listener.getsockname()[1], delays
    done.set()
    thread.join(timeout=10)
    listener.close()


async def _reads(
    host: str, port: int, timeouts: list[float | None], kernel_stamps: bool
) -> list[bytes | str]:
    """One read per timeout, in turn: its bytes, or "timeout" (after which none follow)."""
    stream = await backend(kernel_stamps).connect_tcp(host, port)
    got: list[bytes | str] = []
    try:
        for timeout in timeouts:
            try:
                got.append(await stream.read(64, timeout))
            except httpcore.ReadTimeout:
                got.append("timeout")
                break
    finally:
        await stream.aclose()
    return got


def test_a_read_timeout_counts_from_each_read_not_from_the_first(
    paced_server: tuple[str, int, list[float]], kernel_stamps: bool
) -> None:
    """Bytes every 0.1 s for 0.6 s, each read bounded by 0.25 s: none times out (one timer
    serves them all, moved by each read); then silence, and the next read times out."""
    host, port, delays = paced_server
    delays.extend([0.1] * 6)
    started = time.perf_counter()
    got = asyncio.run(_reads(host, port, [0.25] * 7, kernel_stamps))
    assert got == [b"x"] * 6 + ["timeout"]
    assert 0.6 + 0.25 <= time.perf_counter() - started < 3.0


def test_a_shorter_read_timeout_after_a_longer_one_holds(
    paced_server: tuple[str, int, list[float]], kernel_stamps: bool
) -> None:
    host, port, delays = paced_server
    delays.append(0.0)
    started = time.perf_counter()
    assert asyncio.run(_reads(host, port, [5.0, 0.2], kernel_stamps)) == [b"x", "timeout"]
    assert time.perf_counter() - started < 2.0  # not the 5 s the first read allowed


def test_a_read_without_a_timeout_after_one_with_waits_as_long_as_it_takes(
    paced_server: tuple[str, int, list[float]], kernel_stamps: bool
) -> None:
    host, port, delays = paced_server
    delays.extend([0.0, 0.5])
    assert asyncio.run(_reads(host, port, [0.1, None], kernel_stamps)) == [b"x", b"x"]


def test_a_write_waiting_for_room_ends_when_its_connection_is_closed(
    deaf_server: tuple[str, threading.Event], kernel_stamps: bool
) -> None:
    """The server reads nothing: a write waits for room, without a timeout. Closed from
    another task meanwhile, the connection ends that write (a WriteError), not leaving
    it waiting for ever."""
    url, _ = deaf_server
    host, port = url.removeprefix("http://").split(":")

    async def go() -> None:
        stream = await backend(kernel_stamps).connect_tcp(host, int(port))
        waiting = asyncio.ensure_future(stream.write(b"x" * (64 << 20)))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await stream.aclose()
        with pytest.raises(httpcore.WriteError):
            await asyncio.wait_for(waiting, 5)

    asyncio.run(go())


def test_an_address_that_does_not_answer_is_raced_by_the_next(
    kernel_stamps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name whose first address drops every connection attempt (a listener whose
    queue is full) and whose second answers: the second is tried 0.25 s on, and wins,
    well within the connect timeout (happy eyeballs, as asyncio's own connections)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    dead = socket.socket()
    dead.bind(("127.0.0.3", port))
    dead.listen(0)
    fillers = []
    for _ in range(3):  # its queue full: later attempts are dropped, not refused
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.3", port))
        fillers.append(filler)
    time.sleep(0.2)
    resolve = socket.getaddrinfo

    def two_addresses(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("dual.test", b"dual.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port_)))
                    for ip in ("127.0.0.3", "127.0.0.1")]  # fmt: skip
        return resolve(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)

    async def go() -> float:
        started = time.perf_counter()
        stream = await backend(kernel_stamps).connect_tcp("dual.test", port, timeout=5)
        took = time.perf_counter() - started
        await stream.aclose()
        return took

    try:
        took = asyncio.run(go())
    finally:
        for sock in [server, dead, *fillers]:
            sock.close()
    assert 0.2 <= took < 2.0, took


def test_only_a_request_s_head_says_its_connection_ends() -> None:
    """What makes a connection read all along is its request's ``Connection: close``,
    not bytes of a body that look like one."""
    assert closes(b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\n\r\n{}")
    assert not closes(b"POST / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
    assert not closes(b"--x\r\nConnection: close\r\n\r\nraw body")
    assert not closes(b'{"a": 1}\r\nX: y\r\nConnection: close\r\n\r\n')


@pytest.mark.skipif(not KERNEL_STAMPS, reason="the kernel stamps received bytes on Linux")
def test_a_stamp_read_long_after_it_measures_the_clocks_again() -> None:
    """The kernel stamps by the wall clock. Set back (here: the offset kept for a second
    is 0.5 s off, as after a step), a read long after its stamp measures the offset again
    rather than reading every stamp half a second early."""
    from llamatelemetry.api import _socket_stream

    real = time.time()
    offset = real - time.perf_counter()
    seconds, fraction = divmod(real - 0.01, 1.0)  # bytes received 10 ms ago
    value = struct.pack("@qq", int(seconds), int(fraction * 1e9))
    _socket_stream._offset[:] = [offset + 0.5, time.perf_counter()]
    _, arrived, lag = _socket_stream.stamped(b"x", [(socket.SOL_SOCKET, 35, value)])
    assert lag is not None and 0.005 < lag < 0.05, lag
    assert abs(arrived - (real - 0.01 - offset)) < 0.005
