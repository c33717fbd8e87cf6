"""``llamatelemetry bench``: a load generator for any llama-server (or one it starts).

The measuring lives in `llamatelemetry.bench`; this module parses options, starts what
was asked for (a server, an OTLP pipeline), shows progress, and prints the results.
"""

from __future__ import annotations

import asyncio
import datetime
import platform
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..api import DEFAULT_BASE_URL, AsyncLlamaCppClient, redact_url
from ..bench import (
    Messages,
    RequestRecord,
    RunResult,
    Workload,
    load_prompts_file,
    open_client,
    repeat_prompts,
    run_sweep,
    synthetic_prompts,
)
from ..server import ServerManager, ServerStartError
from ._client import API_KEY_ENV, BASE_URL_ENV
from ._errors import EXIT_INTERRUPTED, CliError, api_errors, print_interrupted, start_error
from ._output import err_console, json_option, out_console, print_json
from ._render import _print_run, _print_sweep
from ._telemetry import _setup_telemetry

__all__ = ["bench"]

MODEL_START_TIMEOUT = 300.0
DEFAULT_REQUESTS = 32
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_MAX_TOKENS = 128
MAX_CONCURRENCY = 4096


def _levels(value: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``: positive, distinct, in the order given."""
    levels: list[int] = []
    for part in value.split(","):
        part = part.strip()
        try:
            level = int(part)
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not a whole number; pass e.g. 4 or 1,2,4,8"
            ) from None
        if not 1 <= level <= MAX_CONCURRENCY:
            raise click.BadParameter(f"{level} is not within 1..{MAX_CONCURRENCY}")
        if level not in levels:
            levels.append(level)
    return levels


def _parse_levels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    return _levels(value)


def _ctx_size(
    levels: Sequence[int], prompt_tokens: int, max_tokens: int, prompts: Sequence[Messages] | None
) -> int:
    """A context that holds the longest request in each of ``max(levels)`` slots."""
    if prompts is not None:  # about 3 characters a token, generously rounded up
        longest = max(len(str(m.get("content", ""))) for p in prompts for m in p)
        prompt_tokens = longest // 3 + 16 * max(len(p) for p in prompts)
    per_slot = int(prompt_tokens * 1.25) + max_tokens + 128
    total = max(levels) * per_slot
    return max(2048, -(-total // 256) * 256)


@contextmanager
def _started_server(
    model: Path, parallel: int, ctx_size: int, threads: int | None, quiet: bool
) -> Iterator[ServerManager]:
    manager = ServerManager(port=0)
    with manager:
        try:
            with err_console().status(f"Loading {model.name} …") if not quiet else ExitStack():
                manager.start(
                    model,
                    n_parallel=parallel,
                    ctx_size=ctx_size,
                    n_threads=threads,
                    timeout=MODEL_START_TIMEOUT,
                )
        except FileNotFoundError as exc:
            raise CliError(f"{exc.strerror}: {exc.filename}") from None
        except ServerStartError as exc:
            raise start_error(exc) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
        yield manager


class _Progress:
    """One bar per concurrency level on stderr; nothing at all when ``disabled``."""

    def __init__(self, requests: int, disabled: bool) -> None:
        self._requests = requests
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[errors]}"),
            TimeElapsedColumn(),
            console=err_console(),
            disable=disabled,
        )
        self._task: Any = None
        self._errors = 0

    def __enter__(self) -> _Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def level(self, concurrency: int) -> None:
        self._errors = 0
        self._task = self._bar.add_task(
            f"concurrency {concurrency:>3}", total=self._requests, errors=""
        )

    def request(self, record: RequestRecord) -> None:
        if not record.ok:
            self._errors += 1
        self._bar.update(
            self._task, advance=1, errors=f"{self._errors} errors" if self._errors else ""
        )


async def _prompts(
    client: AsyncLlamaCppClient,
    url: str,
    requests: int,
    prompt_tokens: int,
    file_prompts: list[Messages] | None,
    seed: int,
) -> list[Messages]:
    if file_prompts is not None:
        return repeat_prompts(file_prompts, requests)
    with api_errors(url):
        return await synthetic_prompts(client, requests, prompt_tokens, seed)


async def _run(
    url: str,
    api_key: str | None,
    levels: list[int],
    workload_options: dict[str, Any],
    requests: int,
    prompt_tokens: int,
    file_prompts: list[Messages] | None,
    timeout: float,
    telemetry: Any,
    progress: _Progress,
) -> list[RunResult]:
    providers: dict[str, Any] = {}
    if telemetry is not None:
        providers = {
            "tracer_provider": telemetry.tracer_provider,
            "meter_provider": telemetry.meter_provider,
        }
    try:
        client = open_client(
            url, api_key=api_key, concurrency=max(levels), timeout=timeout, **providers
        )
    except ValueError as exc:  # a malformed URL or key
        raise CliError(f"{'--api-key' if 'api_key' in str(exc) else '--url'}: {exc}") from None
    async with client:
        prompts = await _prompts(
            client, client.base_url, requests, prompt_tokens, file_prompts, workload_options["seed"]
        )
        workload = Workload(prompts, **workload_options)
        with progress:
            return await run_sweep(
                client, workload, levels, on_request=progress.request, on_level=progress.level
            )


def _report(
    url: str, config: dict[str, Any], results: list[RunResult], started_at: str
) -> dict[str, Any]:
    return {
        "url": url,
        "model": next((r.model for r in results if r.model), None),
        "started_at": started_at,
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "config": config,
        "runs": [r.to_dict() for r in results],
    }


def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'llamatelemetry[bench]'") from None


@click.command()
@click.option(
    "--url",
    envvar=BASE_URL_ENV,
    default=DEFAULT_BASE_URL,
    show_default=True,
    show_envvar=True,
    help="The llama-server to load.",
)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    help="The server's API key (never printed).",
)
@click.option(
    "--model",
    "model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Start a llama-server for this GGUF model (slots = the largest "
    "concurrency) instead of using --url; stopped at the end.",
)
@click.option(
    "--ctx-size",
    type=click.IntRange(min=0),
    help="With --model: total context, split across the slots [default: enough "
    "for the prompts and --max-tokens in every slot].",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="With --model: CPU threads [default: all cores]."
)
@click.option(
    "-n",
    "--requests",
    type=click.IntRange(min=1),
    default=DEFAULT_REQUESTS,
    show_default=True,
    help="Requests per concurrency level.",
)
@click.option(
    "-c",
    "--concurrency",
    "levels",
    default="1",
    show_default=True,
    callback=_parse_levels,
    metavar="C[,C...]",
    help="Requests in flight at once; a list (1,2,4,8) runs one level after another.",
)
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=1),
    help=f"Length of the synthetic prompts in tokens, calibrated with the server's "
    f"/tokenize [default: {DEFAULT_PROMPT_TOKENS}].",
)
@click.option(
    "--prompts-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSONL prompts, one {"prompt": "..."} or {"messages": [...]} a line, cycled in order.',
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Tokens to generate per request (at most).",
)
@click.option(
    "--ignore-eos",
    is_flag=True,
    help="Generate all --max-tokens even past the end of the model's answer.",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream (measures TTFT, TPOT and ITL on the client) or not.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0),
    help="Sampling temperature [default: the server's].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the synthetic prompts and of sampling.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Unmeasured requests before each level.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds one request may take.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of the latency distributions and TTFT vs concurrency.",
)
@click.option(
    "--otlp-endpoint",
    metavar="URL",
    help="Export a span (and GenAI metrics) for every request over OTLP/HTTP, "
    "e.g. http://127.0.0.1:4318.",
)
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    model: Path | None,
    ctx_size: int | None,
    threads: int | None,
    requests: int,
    levels: list[int],
    prompt_tokens: int | None,
    prompts_file: Path | None,
    max_tokens: int,
    ignore_eos: bool,
    stream: bool,
    temperature: float | None,
    seed: int,
    warmup: int,
    timeout: float,
    plot: Path | None,
    otlp_endpoint: str | None,
    as_json: bool,
) -> None:
    """Measure a llama-server under load: N requests, C at a time.

    Reports request and token throughput and the mean, median, p90 and p99 of time to
    first token (TTFT), time per output token (TPOT), inter-token latency (ITL) and
    end-to-end latency, as this client measured them and as llama.cpp's own timings
    report them. Exits with status 1 when every request failed.

    \b
    Examples:
      llamatelemetry bench --url http://127.0.0.1:8080 -n 64 -c 1,2,4,8 --plot bench.png
      llamatelemetry bench --model model.gguf --prompt-tokens 512 --max-tokens 256 --json
    """
    if model is not None and ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
        raise CliError("--url and --model: use one (--model starts its own server)")
    if model is None and (ctx_size is not None or threads is not None):
        raise CliError("--ctx-size and --threads are for the server --model starts")
    if prompts_file is not None and prompt_tokens is not None:
        raise CliError("--prompt-tokens and --prompts-file: use one")
    if plot is not None:
        _check_plot_available()
    file_prompts = None
    if prompts_file is not None:
        try:
            file_prompts = load_prompts_file(prompts_file)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CliError(f"--prompts-file: {exc}") from None
    prompt_tokens = prompt_tokens or DEFAULT_PROMPT_TOKENS
    workload_options = {
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": temperature,
        "seed": seed,
        "ignore_eos": ignore_eos,
        "warmup": warmup,
    }
    config = {
        "requests": requests,
        "concurrency": levels,
        "prompt_tokens": None if file_prompts else prompt_tokens,
        "prompts_file": str(prompts_file) if prompts_file else None,
        **workload_options,
    }
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    with ExitStack() as stack:
        try:
            telemetry = None
            if otlp_endpoint is not None:
                telemetry = _setup_telemetry(otlp_endpoint)
                stack.callback(telemetry.shutdown)  # flushes every span before exit
            if model is not None:
                size = (
                    ctx_size
                    if ctx_size is not None
                    else _ctx_size(levels, prompt_tokens, max_tokens, file_prompts)
                )
                server = stack.enter_context(
                    _started_server(model, max(levels), size, threads, as_json)
                )
                url, api_key = server.url, None
            progress = _Progress(requests, disabled=as_json)
            results = asyncio.run(
                _run(
                    url,
                    api_key,
                    levels,
                    workload_options,
                    requests,
                    prompt_tokens,
                    file_prompts,
                    timeout,
                    telemetry,
                    progress,
                )
            )
        except KeyboardInterrupt:
            print_interrupted(err_console(), "the benchmark was stopped.")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        target = redact_url(url.rstrip("/"))  # a password in --url stays out of the report
        report = _report(target, config, results, started_at)
        failed_everywhere = all(r.completed == 0 for r in results)

        if as_json:
            print_json(report)
        elif not failed_everywhere:
            console = out_console()
            name = report["model"] or "unknown model"
            prompt = (
                "prompts from " + str(prompts_file)
                if file_prompts
                else f"~{prompt_tokens} prompt tokens"
            )
            mode = "streaming" if stream else "not streaming"
            what = f"{requests} requests per level · {prompt} · max {max_tokens} tokens · {mode}"
            console.print(Text.assemble(
                ("Benchmark ", "bold"), (target, "cyan"), f"  ({name})\n", (what, "dim"),
            ), soft_wrap=True)  # fmt: skip
            console.print()
            for result in results:
                _print_run(console, result)
            if len(results) > 1:
                _print_sweep(console, results)
        if failed_everywhere:
            samples = [s for r in results for s in r.error_samples()]
            total = sum(r.requests for r in results)
            raise CliError(
                f"all {total} requests to {target} failed", samples[0] if samples else ""
            )
        if plot is not None:
            from ..bench import plot_results

            path = plot_results(results, plot, title=f"llamatelemetry bench · {target}")
            if not as_json:
                err_console().print(Text(f"plot written to {path}", style="dim"))
