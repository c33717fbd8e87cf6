"""The llama-servers this process started, for telemetry that watches their processes.

The server layer adds each ``ServerManager`` here; the telemetry layer (on the same floor,
so it cannot import the other) reads them back. Held weakly: a manager gone is gone here.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

__all__ = ["RunningServer", "add", "servers"]


class RunningServer(Protocol):
    """What the watchers read of a server: its process (None while stopped), its URL."""

    @property
    def pid(self) -> int | None: ...

    @property
    def url(self) -> str: ...


_servers: weakref.WeakSet[RunningServer] = weakref.WeakSet()
_lock = threading.Lock()


def add(server: RunningServer) -> None:
    with _lock:
        _servers.add(server)


def servers() -> list[RunningServer]:
    """Every server known here (started or not: ``pid`` says)."""
    with _lock:
        return list(_servers)
