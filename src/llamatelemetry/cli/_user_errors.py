"""Errors a user can cause and fix: one red line (and a dim detail) on stderr, exit status 1.

`CliError` is a `click.ClickException`, so click itself prints it and exits with status 1
wherever it is raised; no command catches it. `api_errors` turns the client's exceptions
into `CliError`s worded for someone at a terminal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click
from rich.console import Console
from rich.text import Text

from ..api import APIConnectionError, APIError, APIStatusError, StreamInterruptedError
from ..api._internal import missing_server_option
from ..server import ServerStartError

__all__ = [
    "EXIT_INTERRUPTED",
    "CliError",
    "finite",
    "api_errors",
    "disabled_reason",
    "print_error",
    "print_interrupted",
    "start_error",
]

#: The shell's status for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

_HINTS = {
    401: "pass --api-key KEY or set LLAMA_API_KEY",
    503: "the server is still loading its model; try again in a moment",
}


def print_error(console: Console, message: str, detail: str = "") -> None:
    """A clean red message (and a dimmed detail, e.g. a server log's tail)."""
    console.print(Text.assemble(("Error: ", "bold red"), (message, "red")), soft_wrap=True)
    if detail:
        console.print(Text(detail, style="dim"), soft_wrap=True)


def print_interrupted(console: Console, what: str = "") -> None:
    console.print(Text(f"Interrupted{': ' + what if what else '.'}", style="yellow"))


class CliError(click.ClickException):
    """A user-fixable failure: shown as ``Error: message`` (no traceback), exit status 1."""

    exit_code = 1

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail

    def show(self, file: IO[Any] | None = None) -> None:
        console = Console(file=file, stderr=file is None, highlight=False)
        print_error(console, self.message, self.detail)


def start_error(exc: ServerStartError) -> CliError:
    """A server that did not come up: the first line of the error, the log's tail below it."""
    first_line = str(exc).split("\n", 1)[0]
    summary = re.sub(r";? last lines of .*:$", "", first_line)
    return CliError(
        summary + ("; the server's log ends with:" if exc.log_tail else ""), exc.log_tail
    )


def disabled_reason(error: APIStatusError) -> str:
    """``start with --metrics`` for a server without the option, else the server's message."""
    option = missing_server_option(error.status_code, error.message)
    return f"start with {option.flag}" if option else error.message


def _server_fix(error: APIStatusError) -> str:
    """How to start a server that can answer, in command-line words, said once ("" when
    unknown or already said).

    The client's own ``hint`` names the Python keyword; here it is the flag. A 501's own
    message already names the flag (``Start it with `--reranking```): only the command
    is added then, and nothing for --metrics and --slots, which `serve` has on anyway.
    """
    option = missing_server_option(error.status_code, error.message)
    if option is None:
        return ""
    command = f"`llamatelemetry serve MODEL ... {option.flag}`"
    if error.status_code != 501:  # the pooling error, which names no flag
        return f"start the server with {command}"
    return "" if option.flag in ("--metrics", "--slots") else f"e.g. {command}"


@contextmanager
def api_errors(url: str) -> Iterator[None]:
    """Turn the client's errors into clean `CliError`s naming ``url`` and the server's words."""
    try:
        yield
    except StreamInterruptedError as exc:  # a connection error too, but the server was there
        raise CliError(str(exc)) from None
    except APIConnectionError:
        raise CliError(
            f"could not connect to {url} — start a server with `llamatelemetry serve MODEL`"
        ) from None
    except APIStatusError as exc:
        kind = f" ({exc.type})" if exc.type else ""
        raise CliError(
            f"{url} answered HTTP {exc.status_code}{kind}: {exc.message}",
            _HINTS.get(exc.status_code) or _server_fix(exc),
        ) from None
    except APIError as exc:  # timeouts, undecodable answers, errors inside a stream
        raise CliError(str(exc)) from None


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """An option callback: inf and nan pass click's FloatRange, and mean nothing here."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value
