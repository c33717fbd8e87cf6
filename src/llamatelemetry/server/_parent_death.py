"""A ``llama-server`` binary that ends with the process that started it.

A parent killed with ``SIGKILL`` runs no clean-up, so without help its llama-server would
live on (adopted by init), holding the port and the model's memory. On Linux the child
asks the kernel, before ``exec``, for ``SIGKILL`` when its parent goes
(``PR_SET_PDEATHSIG``); a router's model instances, which watch their router's pipe, go
with it. Not ``SIGTERM``: llama-server's handler takes its task queue's lock, and when the
signal lands on the main thread while that thread holds the lock, the handler waits for
itself for ever (seen once: a server that outlived its parent, its main thread asleep in
a futex with ``SIGTERM`` blocked, that is, inside the handler). A parent killed with
``SIGKILL`` has no clean shutdown to offer anyway. (The embedded backend's child watches
its parent itself.)

The kernel sends that signal when the *thread* that forked the child ends, not the
process: a server started from a short-lived thread (a thread pool, ``asyncio.to_thread``)
would die with that thread. So a server started off the main thread is forked from one
long-lived thread of our own, which ends only with the process.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
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


class _Spawner:
    """One daemon thread that runs what it is handed: it lives until the process ends
    (a daemon thread is never joined, so it outlasts the main thread's end, unlike a
    ``ThreadPoolExecutor``'s, which ``concurrent.futures`` stops first at exit)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="llamatelemetry-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            start, future = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(start())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

    def run(self, start: Callable[[], T]) -> T:
        future: Future[T] = Future()
        self._work.put((start, future))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _forget_spawner() -> None:
    """In a forked child the spawner thread does not exist: make a new one when needed
    (the old queue would hold work that no thread ever runs)."""
    global _spawner, _spawner_lock
    _spawner, _spawner_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spawner)


def exit_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGKILL`` when this process ends, or
    ``None`` where the platform has no such request (the child then outlives a killed
    parent, as any child does).

    The price of a ``preexec_fn``: the child is a full fork (no vfork), which runs the
    ``os.register_at_fork`` hooks of the parent's libraries before the ``exec``; for a
    server started a few times in a process's life, that is milliseconds."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return  # refused (a sandbox): the server runs, as it would have without it
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
            _spawner = _Spawner()
        spawner = _spawner
    return spawner.run(start)
