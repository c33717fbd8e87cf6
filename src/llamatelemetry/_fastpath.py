"""Shortcuts through other libraries' private objects, taken only once proven.

A fast path that reads or writes another library's private attributes is right only while
those attributes mean what they meant when it was written: a release may keep a name and
change its meaning, and nothing fails, only the answers go wrong. So each such path has a
check that runs it and the library's public path on the same probe, on the versions
installed, and compares what they give. The check runs once per process, at the path's
first use (in memory: no network, no file); until it has passed the path is not taken.
When the results differ, or the check fails, the public path is used from then on, and one
line says why: at DEBUG level, or as a WARNING when the fallback loses a behaviour (``lost``
says which).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["FastPath", "forget_checks", "in_new_loop"]

T = TypeVar("T")

_every: weakref.WeakSet[FastPath] = weakref.WeakSet()


class FastPath:
    """One fast path's verdict: ``trusted`` runs ``check`` the first time it is asked.

    ``check`` returns None when the fast path gave what the public path gave on its probe,
    else how they differed."""

    __slots__ = ("__weakref__", "_check", "_lock", "_log", "_lost", "_verdict", "name")

    def __init__(
        self,
        name: str,
        check: Callable[[], str | None],
        log: logging.Logger,
        lost: str | None = None,
    ) -> None:
        self.name = name
        self._check = check
        self._log = log
        self._lost = lost
        self._verdict: bool | None = None
        self._lock = threading.Lock()
        _every.add(self)

    @property
    def trusted(self) -> bool:
        """Whether the fast path gave the public path's results on these versions."""
        verdict = self._verdict
        return self._decide() if verdict is None else verdict

    def _decide(self) -> bool:
        with self._lock:  # one check, whichever thread asks first; the others wait for it
            if self._verdict is None:
                try:
                    # in a context of its own: the caller's (a measured call's WireTimes,
                    # a deadline) is not the probe's, nor is the probe's its
                    problem = contextvars.Context().run(self._check)
                except Exception as exc:  # noqa: BLE001 - any failure is a verdict
                    problem = f"its check failed: {type(exc).__name__}: {exc}"
                if problem is not None:
                    if self._lost is None:
                        self._log.debug("%s: not used on these versions (%s)", self.name, problem)
                    else:
                        self._log.warning(
                            "%s: not used on these versions (%s): %s",
                            self.name,
                            problem,
                            self._lost,
                        )
                self._verdict = problem is None
            return self._verdict

    def forget(self) -> None:
        """Check again at the next use (for tests that fake another version)."""
        with self._lock:
            self._verdict = None


def _after_fork() -> None:
    """A child forked while a check ran in another thread must not wait on its lock."""
    for path in list(_every):
        path._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def forget_checks() -> None:
    """Every fast path checks again at its next use."""
    for path in list(_every):
        path.forget()


def in_new_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``make()`` run to its end on an event loop of its own, in a thread of its own (an
    async check, from sync code or from inside a running loop alike)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, asyncio.run(make())))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out.append((False, exc))

    thread = threading.Thread(target=run, name="llamatelemetry-check", daemon=True)
    thread.start()
    thread.join()
    ok, value = out[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value if isinstance(value, Exception) else RuntimeError(f"the check ended: {value!r}")
