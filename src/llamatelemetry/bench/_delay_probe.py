"""How late the generator's event loop takes what the server sends: measured during every
run, so each level's report can say how far its own latencies may be from the server's.

A token's time is stamped when the event loop takes its bytes from the socket (see
``api._wire_times``); when the loop is busy with other streams, the bytes wait in the
kernel until it is free, and every latency that ends there reads late by that wait. The
probe measures that wait directly: a helper thread writes its clock reading to a socket
pair every `INTERVAL` seconds, and the loop's reader for that socket notes how long each
one waited, by the same path a server's bytes take. (A timer would measure the wrong
thing: the loop wakes for a timer up to a millisecond late even when idle, where it wakes
for a socket at once.)
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

__all__ = ["INTERVAL", "DelayProbe"]

#: Seconds between two probes.
INTERVAL = 0.02
_STAMP = struct.Struct("d")
_clock = time.perf_counter


class DelayProbe:
    """``start()`` on the generator's event loop, ``stop()`` for the waits (seconds)."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.waits: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = b""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        self._pair = (reader, writer)
        self._loop.add_reader(reader.fileno(), self._read)
        self._thread = threading.Thread(
            target=self._send, name="llamatelemetry-delay-probe", daemon=True
        )
        self._thread.start()

    def _send(self) -> None:
        assert self._pair is not None
        writer = self._pair[1]
        while not self._done.wait(self.interval):
            try:
                writer.send(_STAMP.pack(_clock()))
            except OSError:
                return

    def _read(self) -> None:
        now = _clock()
        assert self._pair is not None
        try:
            data = self._pending + self._pair[0].recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = self._pending
        whole = len(data) - len(data) % _STAMP.size
        self._pending = data[whole:]
        for (sent,) in _STAMP.iter_unpack(data[:whole]):
            self.waits.append(max(now - sent, 0.0))

    def stop(self) -> list[float]:
        """Stop probing; the waits seen, in seconds."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._pair is not None:
            if self._loop is not None:  # a probe still unread is left out
                self._loop.remove_reader(self._pair[0].fileno())
            for sock in self._pair:
                sock.close()
            self._pair = None
        return self.waits
