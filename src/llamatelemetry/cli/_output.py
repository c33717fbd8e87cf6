"""Where command output goes: rich consoles for people, plain JSON for scripts."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import IO, Any

import click
from rich.console import Console

__all__ = [
    "err_console",
    "json_option",
    "out_console",
    "print_json",
    "signals_held",
    "stop_signals_interrupt",
    "working",
]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) and nothing else."
)

#: The width of piped output: wide enough that no table cell (a model's path) wraps.
PIPED_WIDTH = 10_000


class _StripTrailingSpaces:
    """A text stream that drops the spaces at the ends of the lines written to it: rich pads
    table cells out to the column's width, which a file or a pipe does not need."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        # Text without its newline yet goes out now; its trailing spaces wait for what
        # follows them on the line (dropped if that is the newline).
        text = self._pending.rstrip(" ")
        self._stream.write(text)
        self._pending = self._pending[len(text) :]
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()


#: Signals that stop a long-running command as cleanly as Ctrl-C does (`kill`, a closed
#: terminal); with SIGINT itself, every stop signal.
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
_STOPS = (signal.SIGINT, *_STOP_SIGNALS)


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While a command serves, SIGTERM and SIGHUP act like Ctrl-C, so that it always
    stops what it started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _as_interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop signals while lines are printed: one that comes meanwhile is raised as
    `KeyboardInterrupt` just after the block. A Ctrl-C inside rich's write left the line in
    rich's buffer, to be printed again with the next line (and a script that answers
    "Press Ctrl-C" with a Ctrl-C then sent a second one). The signals are caught, not
    masked: a process-wide signal may be taken by any thread, and Python raises it in the
    main thread whichever did."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, _: came.append(sig)) for sig in _STOPS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if came:
        raise KeyboardInterrupt


def out_console() -> Console:
    """stdout, as it is now (a test runner may have swapped it).

    Piped or redirected, lines are as long as they need to be (nothing wraps) and carry no
    trailing spaces, so that ``grep``, ``cut`` and diffs see the values whole.
    """
    if sys.stdout.isatty():
        return Console(highlight=False)
    piped: Any = _StripTrailingSpaces(sys.stdout)
    return Console(highlight=False, width=PIPED_WIDTH, file=piped)


def err_console() -> Console:
    """stderr: errors and side notes that must not mix into piped output."""
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2))


def working(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr while a call may take a while (nothing when stderr is no terminal)."""
    return err_console().status(message)
