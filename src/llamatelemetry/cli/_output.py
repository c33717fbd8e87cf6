"""Where command output goes: rich consoles for people, plain JSON for scripts."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

import click
from rich.console import Console

__all__ = ["err_console", "json_option", "out_console", "print_json", "working"]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) and nothing else."
)


def out_console() -> Console:
    """stdout, as it is now (a test runner may have swapped it)."""
    return Console(highlight=False)


def err_console() -> Console:
    """stderr: errors and side notes that must not mix into piped output."""
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2))


def working(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr while a call may take a while (nothing when stderr is no terminal)."""
    return err_console().status(message)
