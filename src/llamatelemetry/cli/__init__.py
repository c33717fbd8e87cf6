"""The ``llamatelemetry`` command line: ``llamatelemetry demo`` and friends."""

from __future__ import annotations

import click

from .._version import __version__
from ._demo import demo

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llamatelemetry")
def main() -> None:
    """llamatelemetry: a typed client, OpenTelemetry instrumentation and a server manager
    for llama.cpp's llama-server.

    New here? Run `llamatelemetry demo`: it starts a real llama.cpp server on a tiny
    built-in model and calls every API, offline, on a CPU, in seconds.
    """


main.add_command(demo)
