"""A ``llama-server`` binary that ends with the process that started it.

A parent killed with ``SIGKILL`` runs no clean-up, so without help its llama-server would
live on (adopted by init), holding the port and the model's memory. On Linux the child
asks the kernel, before ``exec``, for ``SIGTERM`` when its parent goes
(``PR_SET_PDEATHSIG``); llama-server then shuts down as on Ctrl-C, a router stopping its
models too. (The embedded backend's child watches its parent itself.)

The kernel sends that signal when the *thread* that forked the child ends, not the
process: a server started from a short-lived thread (a thread pool, ``asyncio.to_thread``)
would die with that thread. So a server started off the main thread is forked from one
long-lived thread of our own, which ends only with the process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["exit_with_parent", "spawn"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _forget_spawner() -> None:
    """In a forked child the spawner thread does not exist: make a new one when needed
    (the old executor would queue work that no thread ever runs)."""
    global _spawner, _spawner_lock
    _spawner, _spawner_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spawner)


def exit_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGTERM`` when this process ends, or
    ``None`` where the platform has no such request (the child then outlives a killed
    parent, as any child does)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent went before the request was made
            os._exit(1)

    return arm


def spawn(start: Callable[[], T]) -> T:
    """``start()`` (which forks a child that uses `exit_with_parent`), run on a thread
    that lives as long as the process: the calling thread itself when it is the main
    thread, else the one spawner thread."""
    global _spawner
    if _PRCTL is None or threading.current_thread() is threading.main_thread():
        return start()
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="llamatelemetry-spawner")
        spawner = _spawner
    return spawner.submit(start).result()
