"""``llamatelemetry demo``: start real llama.cpp servers and run every client API against them."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import click
from rich.console import Console

from ..api import APIError, LlamaCppClient, LlamaTelemetryError
from ..server import ServerStartError
from . import _render
from ._calls import CallRecord
from ._servers import DemoServers, start_builtin_servers, start_model_server
from ._steps import DemoContext, run_steps

__all__ = ["demo"]

EXIT_INTERRUPTED = 130


class DemoError(Exception):
    """An error the user can cause and fix: shown as a clean message, exit status 1."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


@contextmanager
def _work_dir(keep_dir: Path | None) -> Iterator[Path]:
    """``keep_dir`` (created if needed), or a temporary directory removed afterwards."""
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
        yield keep_dir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="llamatelemetry-demo-") as tmp:
        yield Path(tmp)


def _start_servers(
    stack: ExitStack, work_dir: Path, model: Path | None, threads: int | None
) -> DemoServers:
    """Start the servers, turning start failures into `DemoError`s with the log's tail."""
    try:
        if model is None:
            return start_builtin_servers(stack, work_dir, threads)
        return start_model_server(stack, work_dir, model, threads)
    except FileNotFoundError as exc:
        raise DemoError(f"{exc.strerror}: {exc.filename}") from None
    except ServerStartError as exc:
        raise DemoError(_start_failure(exc), exc.log_tail) from None


def _start_failure(exc: ServerStartError) -> str:
    """The first line of a start error, without its pointer to the log (quoted below it)."""
    first_line = str(exc).split("\n", 1)[0]
    summary = re.sub(r";? last lines of .*:$", "", first_line)
    return summary + ("; the server's log ends with:" if exc.log_tail else "")


def _context(stack: ExitStack, servers: DemoServers, console: Console | None) -> DemoContext:
    """Clients for the servers (closed with ``stack``) and where streamed text goes."""
    client: LlamaCppClient = stack.enter_context(servers.chat.manager.client())
    rerank_client = client
    if servers.rerank is not None:
        rerank_client = stack.enter_context(servers.rerank.manager.client())
    ctx = DemoContext(client, rerank_client, model_id=str(servers.model_path))
    if console is not None:
        printer = _render.StreamPrinter(console)
        ctx.on_stream_text, ctx.on_stream_end = printer.text, printer.end
    return ctx


def _run(
    model: Path | None, keep_dir: Path | None, threads: int | None, console: Console | None
) -> tuple[DemoServers, list[CallRecord]]:
    """The whole demo: work dir, servers, calls; everything is stopped and closed on exit."""
    calls: list[CallRecord] = []
    with ExitStack() as stack:
        work_dir = stack.enter_context(_work_dir(keep_dir))
        if console is not None:
            _render.print_header(console, model is None, model)
            with console.status("Starting llama.cpp servers…"):
                servers = _start_servers(stack, work_dir, model, threads)
            _render.print_servers(console, servers)
        else:
            servers = _start_servers(stack, work_dir, model, threads)
        ctx = _context(stack, servers, console)
        try:
            if console is None:
                run_steps(ctx, calls)
            else:
                run_steps(
                    ctx,
                    calls,
                    partial(_render.print_call, console),
                    partial(_render.call_status, console),
                )
        except APIError as exc:
            raise DemoError(
                f"the demo stopped at {calls[-1].operation if calls else 'its first call'}: {exc}",
                f"server log: {servers.chat.manager.log_path}"
                if keep_dir
                else "run again with --keep-dir DIR to keep the llama.cpp server logs",
            ) from None
    return servers, calls


@click.command()
@click.option(
    "--model",
    type=click.Path(path_type=Path, dir_okay=True),
    help="A GGUF model to run the demo on, instead of the built-in tiny random-weight model.",
)
@click.option(
    "--keep-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the generated model files and the llama.cpp server logs in this directory.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for llama.cpp (default: 1 for the built-in model, all cores with --model).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, nothing else.")
def demo(model: Path | None, keep_dir: Path | None, threads: int | None, as_json: bool) -> None:
    """Start a real llama.cpp server and call every client API against it.

    Without --model, a tiny model with RANDOM weights is built on the spot (its text is
    gibberish, but every endpoint works): no download, no GPU, a few seconds. Servers are
    always stopped at the end, also on Ctrl-C.
    """
    console = None if as_json else Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        servers, calls = _run(model, keep_dir, threads, console)
    except DemoError as exc:
        _render.print_error(errors, exc.message, exc.detail)
        raise click.exceptions.Exit(1) from None
    except (LlamaTelemetryError, OSError) as exc:  # e.g. an unwritable --keep-dir
        _render.print_error(errors, str(exc))
        raise click.exceptions.Exit(1) from None
    except KeyboardInterrupt:
        _render.print_interrupted(errors)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    if console is None:
        click.echo(json.dumps(_render.summary_json(servers, calls, keep_dir), indent=2))
        return
    _render.print_summary(console, calls)
    _render.print_footer(console, servers, keep_dir)
