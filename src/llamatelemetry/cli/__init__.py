"""The ``llamatelemetry`` command line: ``llamatelemetry demo``, ``serve``, ``chat`` and friends."""

from __future__ import annotations

import click

from .._version import __version__
from ._bench import bench
from ._chat import chat
from ._complete import complete
from ._demo import demo
from ._exporter import exporter
from ._serve import serve
from ._status import models, status
from ._text import embed, rerank, tokenize

__all__ = ["main"]


class _Commands(click.Group):
    """Lists its commands in the order they were added (the order to learn them in)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llamatelemetry")
def main() -> None:
    """llamatelemetry: a typed client, OpenTelemetry instrumentation and a server manager
    for llama.cpp's llama-server.

    New here? Run `llamatelemetry demo`: it starts a real llama.cpp server on a tiny
    built-in model and calls every API, offline, on a CPU, in seconds.

    Serve a model with `llamatelemetry serve MODEL.gguf`, then talk to it with `chat`,
    `complete`, `embed`, `tokenize`, `rerank`, `status` and `models` (they take --url,
    default $LLAMA_BASE_URL or http://127.0.0.1:8080). Measure a server under load with
    `llamatelemetry bench`; give Prometheus many servers' metrics with `exporter`.
    """


for _command in (
    demo,
    serve,
    chat,
    complete,
    embed,
    tokenize,
    rerank,
    status,
    models,
    bench,
    exporter,
):
    main.add_command(_command)
