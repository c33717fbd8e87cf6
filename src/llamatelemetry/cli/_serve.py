"""``llamatelemetry serve MODEL``: a llama.cpp server in the foreground until Ctrl-C."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from ..api import DEFAULT_BASE_URL
from ..server import ServerManager, ServerStartError
from ..server._internal import (
    FLASH_ATTN,
    POOLING_TYPES,
    REASONING_FORMATS,
    SPECULATIVE_TYPES,
    SPLIT_MODES,
)
from ._client import API_KEY_ENV
from ._output import err_console, out_console, signals_held, stop_signals_interrupt
from ._user_errors import EXIT_INTERRUPTED, CliError, print_interrupted, start_error

__all__ = ["serve"]

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 20
#: Said after the tail of a log that lived in serve's own temporary folder.
LOG_REMOVED = "the log was removed with its temporary folder (--log-dir DIR keeps it)"
#: The server manager speaks Python; a command line user needs the option names instead.
_CLI_WORDS = {
    "pass port=0 for a free port": "use --port 0 for a free port",
    "pass server_path=...": "pass --server-path PATH",
    "backend='embedded'": "--backend embedded",
    "backend='binary'": "--backend binary",
    "server_path": "--server-path",
    "models_max is a router option: it needs models_dir": (
        "--models-max is for a router: MODEL must be a folder of GGUF files"
    ),
    "models_autoload is a router option: it needs models_dir": (
        "--no-models-autoload is for a router: MODEL must be a folder of GGUF files"
    ),
    "drop alias=": "drop --alias",
    "pass draft_model=": "pass --draft-model",
    "backend='binary' or 'auto'": "--backend binary or auto",
    "gpu_layers=": "--gpu-layers ",
    "split_mode=": "--split-mode ",
    "tensor_split=": "--tensor-split ",
    "main_gpu=": "--main-gpu ",
}


def _shares(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...]:
    """``--tensor-split 3,1``: numbers (their checks are the options')."""
    if value is None:
        return ()
    try:
        return tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not numbers separated by commas (e.g. 3,1)"
        ) from None


def _cli_words(message: str) -> str:
    for python, cli in _CLI_WORDS.items():
        message = message.replace(python, cli)
    return message


@contextmanager
def _log_folder(log_dir: Path | None) -> Iterator[Path]:
    """``log_dir`` as given (kept), else a new temporary folder, removed with the log in it
    on the way out, however serve ends."""
    if log_dir is not None:
        yield log_dir
        return
    folder = Path(tempfile.mkdtemp(prefix="llamatelemetry-server-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _log_tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _start(manager: ServerManager, model: Path, options: dict[str, Any], console: Console) -> float:
    """Start the server under a spinner; seconds it took. Start failures become CliErrors."""
    started = time.perf_counter()
    try:
        if manager.is_router:
            with console.status(f"Starting a router over {model} …"):
                manager.start(**options)
        else:
            with console.status(f"Loading {model.name} …"):
                manager.start(model, **options)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CliError(f"{exc.strerror}: {exc.filename}") from None
    except ServerStartError as exc:
        error = start_error(exc)
        raise CliError(_cli_words(error.message), error.detail) from None
    except ValueError as exc:  # options the manager refused
        raise CliError(_cli_words(str(exc))) from None
    return time.perf_counter() - started


def _print_ready(console: Console, manager: ServerManager, seconds: float) -> None:
    options = manager.options
    assert options is not None
    console.print(Text.assemble(
        ("✓ llama-server ready at ", "green"), (manager.url, "bold cyan"), f"  in {seconds:.2f} s",
    ))  # fmt: skip
    served = ("model", str(options.model_path))
    if options.models_dir is not None:
        served = ("models", f"{options.models_dir}/*.gguf, loaded on demand")
    rows = [served, ("backend", f"{manager.backend} llama.cpp"), ("log", str(manager.log_path))]
    if options.api_key:
        rows.append(("API key", "required (clients: --api-key or LLAMA_API_KEY)"))
    for name, value in rows:
        console.print(Text.assemble((f"  {name:<8} ", "dim"), value), soft_wrap=True)
    url = "" if manager.url == DEFAULT_BASE_URL else f" --url {manager.url}"
    if manager.is_router:
        console.print(f"Try:  llamatelemetry models{url}", soft_wrap=True)
        console.print(f'      llamatelemetry chat{url} --model NAME "Hello"', soft_wrap=True)
    else:
        console.print(f'Try:  llamatelemetry chat{url} "Hello"', soft_wrap=True)
        console.print(f"      llamatelemetry status{url}", soft_wrap=True)
    console.print(Text("Press Ctrl-C to stop.", style="dim"))
    console.file.flush()


def _wait(manager: ServerManager) -> None:
    """Return when the server process ends on its own; Ctrl-C raises KeyboardInterrupt."""
    while manager.is_running:
        time.sleep(POLL_SECONDS)


def _run(manager: ServerManager, model: Path, options: dict[str, Any], temporary: bool) -> None:
    """Start the server, print how to reach it, and serve until a stop signal (return) or
    the server's own end (a CliError quoting its log)."""
    console = out_console()
    with stop_signals_interrupt(), manager:
        try:
            seconds = _start(manager, model, options, console)
        except KeyboardInterrupt:
            print_interrupted(err_console(), "the server was stopped before it was ready.")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        try:
            with signals_held():  # a stop signal that comes meanwhile lands after them
                _print_ready(console, manager, seconds)
            _wait(manager)
        except KeyboardInterrupt:
            manager.stop()
            return
    where = "" if temporary else f" {manager.log_path}"
    raise CliError(
        f"llama-server stopped unexpectedly; the end of its log{where}:",
        _log_tail(manager.log_path),
    )


def _print_stopped(log_path: Path | None, temporary: bool, folder: Path) -> None:
    """The last line: the server is gone, and so is its log, or where the log is kept."""
    if temporary:
        fate = f"its log was removed with the temporary folder {folder} (--log-dir DIR keeps it)"
    else:
        fate = f"its log is kept at {log_path}"
    out_console().print(Text(f"\n✓ server stopped; {fate}", style="green"), soft_wrap=True)


def _path(**kwargs: Any) -> Any:
    return click.Path(path_type=Path, **kwargs)


@click.command()
@click.argument("model", type=_path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: a free one).",
)
@click.option(
    "--ctx-size",
    type=click.IntRange(min=0),
    default=2048,
    show_default=True,
    help="Total context in tokens, split across the slots (0: the model's own).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Slots: requests served at the same time.",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: all cores].")
@click.option(
    "--gpu-layers",
    type=click.IntRange(min=-1),
    default=0,
    show_default=True,
    help="Layers to offload to the GPU (-1: all).",
)
@click.option(
    "--split-mode",
    type=click.Choice(SPLIT_MODES),
    help="How the model spreads over several GPUs [default: llama.cpp's, layer].",
)
@click.option(
    "--tensor-split",
    metavar="SHARES",
    callback=_shares,
    help="Each GPU's share of the model, comma-separated, e.g. 3,1.",
)
@click.option(
    "--main-gpu",
    type=click.IntRange(min=0),
    help="The GPU for the whole model (split mode none), or for its KV cache (row).",
)
@click.option(
    "--flash-attn", type=click.Choice(FLASH_ATTN), help="Flash attention [default: auto]."
)
@click.option(
    "--embedding",
    "--embeddings",
    is_flag=True,
    help="Serve /v1/embeddings (a model without a pooling type also needs --pooling).",
)
@click.option("--reranking", "--rerank", is_flag=True, help="Serve /v1/rerank (a reranker model).")
@click.option("--pooling", type=click.Choice(POOLING_TYPES), help="Embedding pooling.")
@click.option(
    "--lora",
    type=_path(dir_okay=False),
    multiple=True,
    help="A LoRA adapter GGUF, applied at scale 1.0 (repeatable).",
)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    help="Require this key from clients (never printed).",
)
@click.option("--no-metrics", is_flag=True, help="Switch off GET /metrics.")
@click.option("--no-slots", is_flag=True, help="Switch off GET /slots.")
@click.option(
    "--slot-save-path", type=_path(file_okay=False), help="Directory for saved slot caches."
)
@click.option("--alias", help="The model name clients see in /v1/models.")
@click.option(
    "--chat-template",
    help="A built-in chat template's name, Jinja text, or a .jinja file (one that supports "
    "tools makes tool calls possible).",
)
@click.option(
    "--reasoning-format",
    type=click.Choice(REASONING_FORMATS),
    help="How a reasoning model's thoughts come back (reasoning_content).",
)
@click.option(
    "--reasoning-budget",
    type=click.IntRange(min=-1),
    help="-1: think without limit, 0: no thinking (a token budget needs the binary backend).",
)
@click.option(
    "--models-max",
    type=click.IntRange(min=0),
    help="A router (MODEL is a folder): models loaded at once (0: no limit) [default: 4].",
)
@click.option(
    "--no-models-autoload",
    is_flag=True,
    help="A router loads a model only when asked (POST /models/load), not on first use.",
)
@click.option(
    "--sleep-idle-seconds",
    type=click.IntRange(min=1),
    help="Free the model after this many seconds without work; the next request reloads it.",
)
@click.option(
    "--draft-model",
    type=_path(dir_okay=False),
    help="Speculative decoding with a small draft model sharing MODEL's vocabulary.",
)
@click.option(
    "--speculative",
    type=click.Choice(SPECULATIVE_TYPES),
    multiple=True,
    help="A speculative decoding type, e.g. ngram-mod (draft-less); repeatable.",
)
@click.option("--draft-max", type=click.IntRange(min=0), help="Most tokens drafted per step.")
@click.option("--draft-min", type=click.IntRange(min=0), help="Fewest tokens drafted per step.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "binary", "embedded"]),
    default="auto",
    show_default=True,
    help="A llama-server binary, xllamacpp's embedded server, or whichever is found.",
)
@click.option(
    "--server-path",
    type=_path(dir_okay=False),
    help="The llama-server executable [default: $LLAMA_SERVER_PATH, then PATH].",
)
@click.option(
    "--log-dir",
    type=_path(file_okay=False),
    help="Where the server's log goes [default: a new temporary directory].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds the model may take to load.",
)
def serve(
    model: Path,
    host: str,
    port: int,
    backend: str,
    server_path: Path | None,
    log_dir: Path | None,
    no_metrics: bool,
    no_slots: bool,
    parallel: int,
    threads: int | None,
    models_max: int | None,
    no_models_autoload: bool,
    **options: Any,
) -> None:
    """Run a llama.cpp server for the GGUF MODEL in the foreground; Ctrl-C stops it.

    MODEL may be a folder of GGUF files: a router then loads each model when a request
    names it (binary backend). The server's own output goes to a log file (its path is
    printed), in a temporary folder that is removed when serve stops, unless --log-dir
    names one to keep it in. Talk to it with `llamatelemetry chat`, `status` and friends,
    or any OpenAI-compatible client.
    """
    router = model.is_dir()
    temporary = log_dir is None
    options.update(metrics=not no_metrics, slots=not no_slots, n_parallel=parallel,
                   n_threads=threads, lora=list(options["lora"]))  # fmt: skip
    if no_models_autoload:
        options["models_autoload"] = False
    with _log_folder(log_dir) as folder:
        try:
            manager = ServerManager(
                host, port, backend, server_path, folder,  # type: ignore[arg-type]
                models_dir=model if router else None, models_max=models_max,
            )  # fmt: skip
        except ValueError as exc:
            raise CliError(_cli_words(str(exc))) from None
        try:
            _run(manager, model, options, temporary)
        except CliError as exc:
            if temporary and manager.log_path is not None:  # its tail is all that is left
                exc.detail = "\n".join(filter(None, [exc.detail, LOG_REMOVED]))
            raise
    _print_stopped(manager.log_path, temporary, folder)
