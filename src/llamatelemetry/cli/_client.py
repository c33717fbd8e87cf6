"""The options and error handling every client command shares: ``--url`` and ``--api-key``.

Decorate a command function with `client_command` (below ``@click.command`` and its own
options): it adds the two options, builds a `LlamaCppClient` from them, passes it as the
first argument, closes it afterwards, and turns the client's errors into clean messages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..api import DEFAULT_BASE_URL, LlamaCppClient
from ..api._internal import API_KEY_ENV, BASE_URL_ENV
from ._output import err_console
from ._user_errors import EXIT_INTERRUPTED, CliError, api_errors, print_interrupted

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "client_command"]


R = TypeVar("R")


def _client(url: str, api_key: str | None) -> LlamaCppClient:
    try:
        return LlamaCppClient(url, api_key)
    except ValueError as exc:  # a malformed URL or key; the messages never quote the key
        name = "--api-key" if "api_key" in str(exc) else "--url"
        raise CliError(f"{name}: {exc}") from None


def client_command(fn: Callable[..., R]) -> Callable[..., R]:
    """Give ``fn(client, **options)`` the ``--url``/``--api-key`` options and a ready client."""

    @click.option(
        "--url",
        envvar=BASE_URL_ENV,
        default=DEFAULT_BASE_URL,
        show_default=True,
        show_envvar=True,
        help="The llama-server to talk to.",
    )
    @click.option(
        "--api-key",
        envvar=API_KEY_ENV,
        show_envvar=True,
        metavar="KEY",
        help="The server's API key (never printed).",
    )
    @functools.wraps(fn)
    def run(url: str, api_key: str | None, **options: Any) -> R:
        client = _client(url, api_key)
        try:
            with client, api_errors(client.base_url):
                return fn(client, **options)
        except ValueError as exc:  # the client refused an argument before sending anything
            raise CliError(str(exc)) from None
        except KeyboardInterrupt:
            print_interrupted(err_console())
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None

    return run
