"""What both of the async client's asyncio connections (`AsyncioStream` on a transport,
`SocketStream` on the socket itself) need: how much they hold unread and how it is taken,
a read's wait (one timer for all of a connection's reads), a bounded wait, and whether a
request says its connection ends.
"""

from __future__ import annotations

import asyncio
import collections
import re
import select
from typing import Any

import httpcore

__all__ = [
    "READ_BUFFER", "Piece", "ReadWait", "bounded", "closes", "settle", "socket_readable", "take",
]  # fmt: skip

#: The most unread bytes a connection holds before it stops reading from its socket.
READ_BUFFER = 1 << 20

#: Bytes read, when they arrived (``perf_counter``), and how long after that the event
#: loop read them (None: ``arrived`` is the loop's own reading time).
Piece = tuple[bytes, float, "float | None"]


def take(pieces: collections.deque[Piece], max_bytes: int) -> Piece:
    """The first of ``pieces``, at most ``max_bytes`` of it (the rest stays first)."""
    data, arrived, lag = pieces.popleft()
    if len(data) > max_bytes:
        pieces.appendleft((data[max_bytes:], arrived, lag))
        data = data[:max_bytes]
    return data, arrived, lag


class ReadWait:
    """A connection's read waiting for bytes, bounded by its timeout.

    One timer serves all of a connection's reads, as a streamed answer's are one per
    chunk: a read moves the deadline, and the timer, when it fires before it, sets itself
    again for it. A new timer is needed only for a deadline earlier than the timer's own
    (a shrinking total timeout's)."""

    __slots__ = ("deadline", "handle", "waiter")

    def __init__(self) -> None:
        self.deadline: float | None = None  # (loop time) when the waiting read times out
        self.handle: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[bool] | None = None  # the read's, while it waits

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Wait until `wake` (bytes, the end or a failure came), at most ``timeout``
        seconds (None: no bound): then ``httpcore.ReadTimeout``."""
        waiter = self.waiter = loop.create_future()
        if timeout is None:
            self.deadline = None
        else:
            deadline = self.deadline = loop.time() + max(timeout, 0.0)
            handle = self.handle
            if handle is None or handle.when() > deadline:
                if handle is not None:
                    handle.cancel()
                self.handle = loop.call_at(deadline, self._check, loop)
        try:
            if not await waiter:
                raise httpcore.ReadTimeout("no bytes within the read timeout")
        finally:
            self.waiter = None

    def wake(self) -> None:
        """End the waiting read, if one waits: something came."""
        settle(self.waiter)

    def cancel(self) -> None:
        """Stop the timer (the connection is done with)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # no read waits, or none with a timeout: the next read sets one again
        if loop.time() >= deadline:
            waiter.set_result(False)
        else:
            self.handle = loop.call_at(deadline, self._check, loop)


async def bounded(future: asyncio.Future[bool], timeout: float | None) -> bool:
    """Wait for ``future`` (set True when what it waits for came) for at most ``timeout``
    seconds: False if the time ran out first. A timer, not a task."""
    if timeout is None:
        return await future
    handle = asyncio.get_running_loop().call_later(max(timeout, 0.0), settle, future, False)
    try:
        return await future
    finally:
        handle.cancel()


def settle(future: asyncio.Future[bool] | None, result: bool = True) -> None:
    """Give ``future`` (a wait's: True, what it waits for came; False, its time ran out)
    its ``result``, unless there is none or it has one already."""
    if future is not None and not future.done():
        future.set_result(result)


def closes(buffer: bytes | memoryview) -> bool:
    """Whether ``buffer`` is a request's head (its first line ``METHOD target HTTP/1.x``,
    not a body's bytes) that says ``Connection: close``."""
    head, found, _ = bytes(buffer[:16384]).partition(b"\r\n\r\n")
    if not found or _REQUEST_LINE.match(head) is None:
        return False
    return b"\r\nconnection: close\r\n" in head.lower() + b"\r\n"


_REQUEST_LINE = re.compile(rb"[A-Z]+ [^ \r\n]+ HTTP/1\.[01]\r\n")


def socket_readable(sock: Any) -> bool:
    """Whether a read of ``sock`` would not wait (bytes, an end, an error), or it is gone."""
    if sock is None:
        return True
    try:
        fileno = sock.fileno()
        if fileno < 0:
            return True
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
    except AttributeError:  # no poll() on this system
        return bool(select.select([sock], [], [], 0)[0])
