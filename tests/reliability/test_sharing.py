"""One client or stream shared where it must not break: a forked child, a second event loop,
two threads reading one stream. Against the real tiny-model server."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from llamatelemetry.api import (
    AsyncLlamaCppClient,
    ConcurrentIterationError,
    EventLoopError,
    ForkError,
    LlamaCppClient,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

from ._support import MESSAGES, chunk


def child_calls(run: Any, calls: int = 100) -> int:
    """Fork; the child makes ``calls`` calls ``run(2)`` (two tokens) and exits 0 when each got
    its own answer; the parent makes ``run(3)`` calls at the same time. Answers of different
    lengths show a reply read by the wrong process. Returns the child's exit status."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, only an exit status
        status = 1
        try:
            status = 0 if all(run(2) == 2 for _ in range(calls)) else 2
        finally:
            os._exit(status)
    for _ in range(calls):
        assert run(3) == 3
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_gets_its_own_connections(chat_server: ServerManager) -> None:
    with LlamaCppClient(chat_server.url, max_retries=0) as client:

        def run(tokens: int) -> int:
            reply = client.chat.completions.create(messages=MESSAGES, max_tokens=tokens)
            return int(reply.usage.completion_tokens)

        assert run(3) == 3  # the pool now holds a kept-alive connection the child inherits
        assert child_calls(run) == 0
        assert run(3) == 3


def test_a_forked_child_gets_its_own_async_connections(chat_server: ServerManager) -> None:
    client = AsyncLlamaCppClient(chat_server.url, max_retries=0)
    loop = asyncio.new_event_loop()

    async def call(tokens: int) -> int:
        reply = await client.chat.completions.create(messages=MESSAGES, max_tokens=tokens)
        return int(reply.usage.completion_tokens)

    try:
        assert loop.run_until_complete(call(3)) == 3
        assert child_calls(lambda tokens: loop.run_until_complete(call(tokens))) == 0
        assert loop.run_until_complete(call(3)) == 3
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()


def test_one_async_client_in_several_asyncio_runs(chat_server: ServerManager) -> None:
    client = AsyncLlamaCppClient(chat_server.url)

    async def use() -> tuple[int, int]:
        stream = await client.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True)
        chunks = [chunk async for chunk in stream]
        # a plain call last: its kept-alive connection stays in the pool as the loop ends
        reply = await client.chat.completions.create(messages=MESSAGES, max_tokens=2)
        return reply.usage.completion_tokens, chunks[-1].usage.completion_tokens

    assert [asyncio.run(use()) for _ in range(3)] == [(2, 2)] * 3
    asyncio.run(client.aclose())
    assert client.is_closed


def test_an_async_client_busy_on_another_running_loop_says_so(chat_server: ServerManager) -> None:
    client = AsyncLlamaCppClient(chat_server.url)
    started, release = threading.Event(), threading.Event()

    async def hold() -> None:
        await client.tokenize("x")
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        await client.aclose()

    other = threading.Thread(target=asyncio.run, args=(hold(),))
    other.start()
    try:
        assert started.wait(10)
        with pytest.raises(EventLoopError, match="one client per event loop"):
            asyncio.run(client.tokenize("x"))
    finally:
        release.set()
        other.join(10)
    assert client.is_closed


def test_a_given_http_client_cannot_move_to_a_new_loop(chat_server: ServerManager) -> None:
    import httpx

    http = httpx.AsyncClient()
    client = AsyncLlamaCppClient(chat_server.url, http_client=http)

    async def once() -> None:
        async with http:  # the user's pool is theirs to close, on its own loop
            assert await client.tokenize("x")

    asyncio.run(once())
    with pytest.raises(EventLoopError, match="pass a new httpx.AsyncClient"):
        asyncio.run(client.tokenize("x"))


SLOW_STREAM = Reply(
    chunks=sse(*[chunk(str(i)) for i in range(40)], chunk(finish="stop")), chunk_delay=0.02
)


def test_one_stream_read_by_two_threads() -> None:
    with FaultServer(SLOW_STREAM) as server, LlamaCppClient(server.url) as client:
        stream = client.chat.completions.create(messages=MESSAGES, stream=True)
        barrier = threading.Barrier(2)
        results: dict[str, Any] = {}

        def read(name: str) -> None:
            barrier.wait()
            got: list[Any] = []
            try:
                for item in stream:
                    got.append(item)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results[name] = (got, exc)
                return
            results[name] = (got, None)

        threads = [threading.Thread(target=read, args=(n,)) for n in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    # One reader was turned away with a clear error; the other read the stream to its end,
    # with no false "connection broke" and no chunk lost or doubled.
    errors = [error for _, error in results.values() if error is not None]
    assert len(errors) == 1 and isinstance(errors[0], ConcurrentIterationError), errors
    assert "one reader only" in str(errors[0])
    texts = [c.choices[0].delta.content for got, _ in results.values() for c in got]
    assert sorted(texts, key=lambda t: int(t) if t else 99) == [str(i) for i in range(40)] + [None]
    assert stream.closed


class GatedChunks(list[bytes]):
    """A stream's chunks, of which the second is sent only once ``release`` is set."""

    def __init__(self, chunks: list[bytes], release: threading.Event) -> None:
        super().__init__(chunks)
        self.release = release

    def __iter__(self) -> Iterator[bytes]:
        for i, part in enumerate(super().__iter__()):
            if i == 1:
                self.release.wait(30)
            yield part


def test_one_async_stream_read_by_two_tasks() -> None:
    release = threading.Event()

    async def main(url: str) -> list[Any]:
        async with AsyncLlamaCppClient(url) as client:
            stream = await client.chat.completions.create(messages=MESSAGES, stream=True)
            chunks = [await stream.__anext__()]  # the next one waits for the release
            second = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.005)  # that task now waits inside the stream
            try:
                with pytest.raises(ConcurrentIterationError, match="one reader only"):
                    await stream.__anext__()
            finally:
                release.set()
            return chunks + [await second] + [item async for item in stream]

    events = sse(*[chunk(str(i)) for i in range(40)], chunk(finish="stop"))
    with FaultServer(Reply(chunks=GatedChunks(events, release))) as server:
        chunks = asyncio.run(main(server.url))
    assert [c.choices[0].delta.content for c in chunks] == [str(i) for i in range(40)] + [None]


def in_child(fn: Any) -> int:
    """Fork and run ``fn()`` in the child: exit status 0 when it returns True."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = 0 if fn() else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def raises(error: type[BaseException], fn: Any) -> bool:
    try:
        fn()
    except error:
        return True
    return False


def test_a_stream_open_at_a_fork_is_read_by_the_parent_only() -> None:
    with FaultServer(SLOW_STREAM) as server, LlamaCppClient(server.url) as client:
        stream = client.chat.completions.create(messages=MESSAGES, stream=True)
        first = next(stream)
        # The child may not take a byte of the parent's connection, nor close it.
        assert in_child(lambda: raises(ForkError, lambda: next(stream))) == 0
        rest = list(stream)
    texts = [c.choices[0].delta.content for c in [first, *rest]]
    assert texts == [str(i) for i in range(40)] + [None]


def test_a_given_http_client_is_refused_in_a_forked_child(chat_server: ServerManager) -> None:
    import httpx

    with httpx.Client() as http, LlamaCppClient(chat_server.url, http_client=http) as client:
        assert client.tokenize("hello")
        assert in_child(lambda: raises(ForkError, lambda: client.tokenize("hello"))) == 0
        assert client.tokenize("hello")  # the parent's client is untouched


def test_a_stream_read_on_another_event_loop_says_so() -> None:
    """The rest of the stream is still to come (held back by the server until the test has
    its answer), so reading it must use the connection: from another loop, it says so.
    (On a real server a short answer could already be wholly read with its first chunk,
    and then nothing was left to refuse.)"""
    release = threading.Event()
    events = sse(*[chunk(str(i)) for i in range(4)], chunk(finish="stop"))
    first = asyncio.new_event_loop()
    with FaultServer(Reply(chunks=GatedChunks(events, release))) as server:
        client = AsyncLlamaCppClient(server.url)

        async def open_stream() -> Any:
            stream = await client.chat.completions.create(messages=MESSAGES, stream=True)
            await stream.__anext__()
            return stream

        try:
            stream = first.run_until_complete(open_stream())

            async def read() -> None:
                async for _ in stream:
                    pass

            with pytest.raises(EventLoopError, match="opened on another event loop"):
                asyncio.run(read())
        finally:
            release.set()
            # Closed on its own loop, so that no connection is left for the garbage
            # collector to warn about at some later, unrelated moment.
            first.run_until_complete(client.aclose())
            for _ in range(3):  # the transports' connection_lost, called soon after close()
                first.run_until_complete(asyncio.sleep(0))
            first.close()


def test_an_async_client_dropped_on_a_later_loop_logs_no_error(
    chat_server: ServerManager, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncLlamaCppClient(chat_server.url)
    asyncio.run(client.tokenize("x"))  # its connections belong to that loop, now ended

    async def drop() -> None:
        nonlocal client
        del client
        gc.collect()
        await asyncio.sleep(0.05)  # a close scheduled on this loop would run (and fail) here

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            asyncio.run(drop())
        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_a_stream_closed_by_another_thread_ends_without_a_false_network_error() -> None:
    with FaultServer(SLOW_STREAM) as server, LlamaCppClient(server.url) as client:
        stream = client.chat.completions.create(messages=MESSAGES, stream=True)
        got: list[Any] = []
        outcome: list[BaseException | None] = []

        def read() -> None:
            try:
                for item in stream:
                    got.append(item)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)
                return
            outcome.append(None)

        reader = threading.Thread(target=read)
        reader.start()
        while len(got) < 3:
            time.sleep(0.005)
        stream.close()  # while the reader waits for the next chunk
        reader.join(10)
    assert outcome == [None]  # it stopped, as asked: no "connection broke"
    assert 3 <= len(got) < 41 and stream.closed


def test_an_async_stream_closed_by_another_task_ends_without_a_false_network_error() -> None:
    async def main(url: str) -> tuple[list[Any], BaseException | None]:
        async with AsyncLlamaCppClient(url) as client:
            stream = await client.chat.completions.create(messages=MESSAGES, stream=True)
            got: list[Any] = []

            async def read() -> BaseException | None:
                try:
                    async for item in stream:
                        got.append(item)
                except Exception as exc:  # noqa: BLE001
                    return exc
                return None

            reader = asyncio.ensure_future(read())
            while len(got) < 3:
                await asyncio.sleep(0.005)
            await stream.aclose()
            return got, await reader

    with FaultServer(SLOW_STREAM) as server:
        got, error = asyncio.run(main(server.url))
    assert error is None
    assert 3 <= len(got) < 41
