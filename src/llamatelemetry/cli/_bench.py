"""``llamatelemetry bench``: a load generator for any llama-server (or one it starts).

The measuring lives in `llamatelemetry.bench`; this module parses options, starts what
was asked for (a server, an OTLP pipeline), shows progress, and prints the results.
"""

from __future__ import annotations

import asyncio
import datetime
import platform
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from ..api import DEFAULT_BASE_URL, AsyncLlamaCppClient, redact_url
from ..bench import (
    DURATION_GRACE,
    METRIC_DEFINITIONS,
    METRICS,
    SLO,
    Arrivals,
    FilePrompts,
    Item,
    Prompt,
    PromptSource,
    RequestRecord,
    RunResult,
    ServerWatch,
    Workload,
    burstiness_problem,
    capacity_bounded,
    compare_reports,
    find_capacity,
    load_baseline,
    load_prompts_file,
    messages_of,
    open_client,
    run_load,
    synthetic_source,
    template_prefix_tokens,
    write_html,
)
from ..server import ServerManager, ServerStartError
from ._client import API_KEY_ENV, BASE_URL_ENV
from ._errors import (
    EXIT_INTERRUPTED,
    CliError,
    api_errors,
    finite,
    print_interrupted,
    start_error,
)
from ._output import err_console, json_option, out_console, print_json
from ._render import _print_capacity, _print_changes, _print_run, _print_sweep
from ._telemetry import _last_scrape, _setup_telemetry

__all__ = ["bench"]

MODEL_START_TIMEOUT = 300.0
DEFAULT_REQUESTS = 32
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_MAX_TOKENS = 128
MAX_CONCURRENCY = 4096
#: The slots of a server --model starts for runs without a fixed concurrency: llama-server's
#: own default.
DEFAULT_SLOTS = 4
MIN_RATE = 0.001  # requests per second: one in about 17 minutes


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


def _parse_rates(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float]:
    """``"0.5,1,2"`` → ``[0.5, 1.0, 2.0]`` requests per second."""
    if value is None:
        return []
    rates: list[float] = []
    for part in value.split(","):
        try:
            rate = float(part)
        except ValueError:
            raise click.BadParameter(
                f"{part.strip()!r} is not a number of requests per second"
            ) from None
        if not MIN_RATE <= rate < 1e6:  # NaN fails here too
            raise click.BadParameter(
                f"{rate:g} is not a rate of {MIN_RATE:g} to 1e6 requests per second"
            )
        if rate not in rates:
            rates.append(rate)
    return rates


def _parse_burstiness(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A gamma shape the arrivals' sampler represents faithfully, refused with the reason
    before anything is planned or sent."""
    problem = burstiness_problem(value)
    if problem is not None:
        raise click.BadParameter(f"{value:g}: {problem}")
    return value


def _parse_slo(ctx: click.Context, param: click.Parameter, value: str | None) -> SLO | None:
    if value is None:
        return None
    try:
        return SLO.parse(value, attainment=ctx.params.get("slo_attainment", 0.9))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ctx_size(
    levels: Sequence[int], prompt_tokens: int, max_tokens: int, prompts: Sequence[Item] | None
) -> int:
    """A context that holds the longest request in each of ``max(levels)`` slots."""
    if prompts is not None:  # about 3 characters a token, generously rounded up
        chats = [messages_of(p) for p in prompts]
        longest = max(len(str(m.get("content", ""))) for p in chats for m in p)
        prompt_tokens = longest // 3 + 16 * max(len(p) for p in chats)
        own = (p.max_tokens or 0 for p in prompts if isinstance(p, Prompt))
        max_tokens = max([max_tokens, *own])
    per_slot = int(prompt_tokens * 1.25) + max_tokens + 128
    total = max(levels) * per_slot
    return max(2048, -(-total // 256) * 256)


def _slots(levels: Sequence[int], max_concurrency: int | None, unbounded: bool) -> int:
    """The slots of the server --model starts: one for each request of the largest -c.
    Runs without a fixed concurrency (``unbounded``: --rate, --replay, --find-capacity)
    get at least --max-concurrency, else llama-server's own default."""
    floor = (max_concurrency or DEFAULT_SLOTS) if unbounded else 1
    return max([*levels, floor])


def _started(manager: ServerManager) -> dict[str, Any]:
    """What the started server says it is: its slots, and each slot's context."""
    try:
        with manager.client() as client:
            props = client.props.get()
    except Exception:  # noqa: BLE001 - the run itself will meet any trouble
        props = {}
    settings = props.get("default_generation_settings") or {}
    return {
        "total_slots": props.get("total_slots"),
        "slot_context": settings.get("n_ctx"),
    }


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


class _LevelClock(ProgressColumn):
    """A level's own clock: still during its warm-up, then the seconds since its measured
    requests began, and once it ended the duration its report gives."""

    def render(self, task: Task) -> Text:
        duration = task.fields.get("duration")
        if duration is not None:
            return Text(f"{duration:,.2f} s")
        if not task.started:
            return Text("warm-up" if task.fields.get("warmup") else "", style="dim")
        return Text(f"{task.elapsed or 0.0:,.2f} s")


class _Progress:
    """One bar per concurrency level on stderr; nothing at all when ``disabled``."""

    def __init__(self, requests: int, disabled: bool, warmup: bool = False) -> None:
        self._requests = requests
        self._warmup = warmup
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[errors]}"),
            _LevelClock(),
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

    def level(self, label: str, total: int | None) -> None:
        self._errors = 0
        self._task = self._bar.add_task(
            label, total=total, errors="", start=False, warmup=self._warmup, duration=None
        )

    def start(self) -> None:
        """The level's warm-up is over: its clock starts."""
        self._bar.start_task(self._task)

    def finish(self, duration: float) -> None:
        """The level ended: its bar shows the duration its report gives."""
        self._bar.update(self._task, duration=duration)
        self._bar.stop_task(self._task)

    def request(self, record: RequestRecord) -> None:
        if not record.ok:
            self._errors += 1
        self._bar.update(
            self._task, advance=1, errors=f"{self._errors} errors" if self._errors else ""
        )


@dataclass
class _Plan:
    """What the command line asked to run."""

    levels: list[int]
    rates: list[float]
    workload_options: dict[str, Any]
    requests: int
    prompt_tokens: int
    shared_prefix: int
    file_prompts: list[Item] | None
    prompts_file: str | None
    seed: int | None
    arrivals: dict[str, Any]  # burstiness, ramp_up, duration
    slo: SLO | None
    capacity: str | None  # "rate" or "concurrency": search the highest meeting the SLO
    scrape_interval: float
    repeat: int = 1
    replay: bool = False
    spread: float = 0.0


async def _source(client: AsyncLlamaCppClient, plan: _Plan) -> PromptSource:
    if plan.file_prompts is not None:
        return FilePrompts(plan.file_prompts, plan.prompts_file)
    with api_errors(client.base_url):
        return await synthetic_source(
            client, plan.prompt_tokens, plan.seed, plan.shared_prefix,
            spread=plan.spread, max_tokens=plan.workload_options["max_tokens"],
        )  # fmt: skip


async def _run(
    url: str, api_key: str | None, plan: _Plan, timeout: float, telemetry: Any, progress: _Progress
) -> tuple[list[RunResult], float | None, dict[str, Any]]:
    """Every run the plan asks for; the capacity found (when searching); the prompts'
    description."""
    providers: dict[str, Any] = {}
    if telemetry is not None:
        providers = {
            "tracer_provider": telemetry.tracer_provider,
            "meter_provider": telemetry.meter_provider,
        }
    in_flight = max([*plan.levels, plan.workload_options.get("max_concurrency") or 0, 1])
    if plan.rates or plan.capacity:
        in_flight = max(in_flight, plan.workload_options.get("max_concurrency") or 1024)
    try:
        # Calibration and warm-ups are sent in phases of their own: with telemetry, their
        # spans say so and they are left out of the metrics.
        client = open_client(
            url, api_key=api_key, concurrency=in_flight, timeout=timeout, **providers
        )
    except ValueError as exc:  # a malformed URL or key
        raise CliError(f"{'--api-key' if 'api_key' in str(exc) else '--url'}: {exc}") from None
    watch = ServerWatch(url, api_key, plan.scrape_interval) if plan.scrape_interval else None
    async with AsyncExitStack() as clients:
        await clients.enter_async_context(client)
        source = await _source(client, plan)
        prefix = await template_prefix_tokens(client)
        if prefix is not None:
            prefix += getattr(source, "shared_tokens", 0)
        workload = Workload(source, requests=plan.requests, **plan.workload_options)

        runs_made = 0
        done: dict[tuple[int | None, float | None], RunResult] = {}

        async def level_run(
            concurrency: int | None, rate: float | None, replay: bool = False
        ) -> RunResult:
            nonlocal runs_made
            runs_made += 1
            arrivals = None
            if replay:
                progress.level("trace replay", plan.requests)
            elif rate is not None:
                # Each run its own arrivals (repeats included), repeatable with --seed.
                seed = None if plan.seed is None else plan.seed + runs_made
                try:  # a capacity search may double a rate past what a schedule holds
                    arrivals = Arrivals(rate, seed=seed, **plan.arrivals)
                except ValueError as exc:
                    raise CliError(f"--rate {rate:g}: {exc}") from None
                total = None if arrivals.duration else plan.requests
                progress.level(f"{rate:>7.3g} req/s", total)
            else:
                progress.level(f"concurrency {concurrency:>3}", plan.requests)
            result = await run_load(
                client, workload, concurrency, arrivals=arrivals, replay=replay, watch=watch,
                on_request=progress.request, on_start=progress.start,
            )  # fmt: skip
            progress.finish(result.duration)
            result.cache_prefix_tokens = prefix
            done[(concurrency, rate)] = result
            return result

        async def search_run(level: float) -> RunResult:
            key = (None, level) if plan.capacity == "rate" else (int(level), None)
            if key in done:  # the sweep ran this level already
                return done[key]
            return await level_run(*key)

        results: list[RunResult] = []
        capacity = None
        try:
            with progress:
                if plan.replay:
                    for _ in range(plan.repeat):
                        results.append(await level_run(None, None, replay=True))
                for level in plan.levels:
                    for _ in range(plan.repeat):
                        results.append(await level_run(level, None))
                for rate in plan.rates:
                    for _ in range(plan.repeat):
                        results.append(await level_run(None, rate))
                if plan.capacity is not None:
                    assert plan.slo is not None
                    by_rate = plan.capacity == "rate"
                    start = (plan.rates or [1.0])[0] if by_rate else float((plan.levels or [1])[0])
                    capacity, tried = await find_capacity(
                        search_run,
                        plan.slo,
                        start,
                        integer=not by_rate,
                        # more in flight than a run has requests measures nothing new
                        ceiling=None if by_rate else float(plan.requests),
                    )
                    results.extend(r for r in tried if all(r is not s for s in results))
        finally:
            if watch is not None:
                await watch.aclose()
        return results, capacity, source.describe()


def _report(
    url: str,
    config: dict[str, Any],
    results: list[RunResult],
    started_at: str,
    slo: SLO | None,
    capacity: float | None,
    prompts: dict[str, Any],
    started: dict[str, Any] | None = None,
) -> dict[str, Any]:
    runs = []
    for result in results:
        run = result.to_dict()
        if slo is not None:
            run["slo"] = slo.evaluate(result).to_dict()
        runs.append(run)
    searched = config.get("find_capacity")
    found = None
    if searched is not None:
        # A capacity is found when a higher level failed; else it is only a lower bound.
        bounded = slo is not None and capacity_bounded(capacity, searched, results, slo)
        found = {"by": searched, "highest_meeting_slo": capacity, "bounded": bounded}
    return {
        "url": url,
        "model": next((r.model for r in results if r.model), None),
        "started_at": started_at,
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "config": config,
        "started_server": started,  # what the server --model started says it is
        "prompts": prompts,
        # Other tools give these names to other figures: what each one is here.
        "metric_definitions": {f"{m}_ms": METRIC_DEFINITIONS[m] for m in METRICS},
        "slo": None if slo is None else slo.to_dict(),
        "capacity": found,
        "runs": runs,
    }


def _prompt_length(tokens: int, shared: int, prompts: dict[str, Any]) -> str:
    """The synthetic prompts' length, as the server counts it."""
    template = prompts.get("template_tokens")
    if template is None:  # the server could not apply its template for us
        return f"~{tokens + shared} prompt tokens of text (and the chat template's own)"
    described = f"~{tokens + shared} prompt tokens as the server counts them"
    if shared:
        return f"{described} (chat template's {template} included; {shared} alike in all)"
    return f"{described} (chat template's {template} included)"


def _server_line(started: dict[str, Any]) -> str:
    slots, context = started.get("total_slots"), started.get("slot_context")
    if slots is None:
        return "a llama-server started for this run"
    line = f"a llama-server started for this run: {slots} slot{'s' if slots != 1 else ''}"
    return line if context is None else f"{line} of {context:,} tokens of context"


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
    help="Start a llama-server for this GGUF model instead of using --url (stopped at the "
    "end), with one slot for each request of the largest -c; runs without a fixed "
    "concurrency (--rate, --replay, --find-capacity) get at least --max-concurrency "
    "slots, else llama-server's default of 4.",
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
    help=f"Length of the synthetic prompts in tokens as the server counts them, its chat "
    f"template's included (calibrated with its /apply-template and /tokenize) "
    f"[default: {DEFAULT_PROMPT_TOKENS}].",
)
@click.option(
    "--prompts-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSONL prompts, one {"prompt": "..."} or {"messages": [...]} a line, cycled in order.',
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1, max=2**31 - 1),  # llama.cpp reads it into an int32
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
    callback=finite,
    type=click.FloatRange(min=0.0),
    help="Sampling temperature [default: the server's].",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of the synthetic prompts, the arrivals and sampling: repeatable runs "
    "[default: new prompts every run, so a live server's cache holds none of them].",
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
    callback=finite,
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds one request may take in all (its wait and its whole stream): then it "
    "fails, counted as an APITimeoutError.",
)
@click.option(
    "--rate",
    "rates",
    callback=_parse_rates,
    metavar="R[,R...]",
    help="Open loop: requests leave at R per second on average (Poisson), whatever the "
    "server does; a list runs one rate after another. Without -c, no closed-loop run.",
)
@click.option(
    "--burstiness",
    callback=_parse_burstiness,
    type=float,
    default=1.0,
    show_default=True,
    help="With --rate: gamma shape of the gaps between arrivals (1: Poisson, <1: burstier; "
    "0.02 to 1e6).",
)
@click.option(
    "--duration",
    callback=finite,
    type=click.FloatRange(min=0, min_open=True),
    help="With --rate: seconds each rate sends requests (instead of -n requests); requests "
    f"still unanswered {DURATION_GRACE:g} s after it are counted unfinished.",
)
@click.option(
    "--ramp-up",
    callback=finite,
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --rate: seconds over which the rate rises from 0 to R.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    help="With --rate: at most this many requests in flight (the schedule slips behind).",
)
@click.option(
    "--shared-prefix",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Synthetic prompts start with the same N tokens: measures the prompt cache on purpose.",
)
@click.option(
    "--slo-attainment",
    callback=finite,
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.9,
    show_default=True,
    is_eager=True,
    help="Share of requests that must meet --slo for a run to meet it.",
)
@click.option(
    "--slo",
    callback=_parse_slo,
    metavar="SPEC",
    help="Objectives every request should meet, e.g. ttft=200ms,tpot=50ms,e2e=2s: "
    "reports goodput (requests per second that met them all).",
)
@click.option(
    "--find-capacity",
    type=click.Choice(["rate", "concurrency"]),
    help="Search the highest rate (or concurrency) whose run meets --slo: doubling, then "
    "bisecting (starting from the first --rate or -c).",
)
@click.option(
    "--scrape-interval",
    callback=finite,
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds between samples of the server's /metrics and /slots (0: none).",
)
@click.option(
    "--turns",
    type=click.IntRange(min=1, max=100),
    default=1,
    show_default=True,
    help="Each request a session of this many turns, each sending the conversation so far "
    "(its history may come from the server's cache: that is the point). -n counts sessions.",
)
@click.option(
    "--replay",
    is_flag=True,
    help="Send --prompts-file's requests at the times their 'timestamp' fields recorded "
    "(a trace, replayed as it was), once per --repeat.",
)
@click.option(
    "--length-spread",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.0,
    show_default=True,
    callback=finite,
    help="Synthetic prompts' and answers' lengths drawn uniformly within ±this share of "
    "--prompt-tokens and --max-tokens (0: all alike).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1, max=100),
    default=1,
    show_default=True,
    help="Run every level this many times (fresh prompts each): the spread between them "
    "is the noise --baseline compares against.",
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A previous --json report: print how every level changed, with 95% intervals.",
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report (tables, and the plots when matplotlib is there).",
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
@click.option(
    "--prometheus-port",
    type=click.IntRange(0, 65535),
    help="Serve the run's client metrics (every request's GenAI histograms) for Prometheus "
    "on this port while it runs; at the end, wait for one last scrape (0: a free port, "
    "printed).",
)
@click.option(
    "--prometheus-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the --prometheus-port endpoint (0.0.0.0: reachable from other hosts).",
)
@click.option(
    "--prometheus-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    callback=finite,
    help="With --prometheus-port: seconds to wait after the run for Prometheus's last "
    "scrape, so that it holds the final figures (0: exit at once).",
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
    rates: list[float],
    burstiness: float,
    duration: float | None,
    ramp_up: float,
    max_concurrency: int | None,
    shared_prefix: int,
    slo_attainment: float,
    slo: SLO | None,
    find_capacity: str | None,
    scrape_interval: float,
    turns: int,
    replay: bool,
    length_spread: float,
    repeat: int,
    baseline: Path | None,
    html: Path | None,
    plot: Path | None,
    otlp_endpoint: str | None,
    prometheus_port: int | None,
    prometheus_host: str,
    prometheus_wait: float,
    as_json: bool,
) -> None:
    """Measure a llama-server under load, closed or open loop.

    Reports request and token throughput and the mean, median, p90 and p99 of time to
    first token (TTFT), time per output token (TPOT), inter-token latency (ITL) and
    end-to-end latency, as this client measured them and as llama.cpp's own timings
    report them, beside the server's busy slots and waiting requests sampled during the
    run. Every run sends prompts no earlier request sent (unless --prompts-file repeats
    them), and says when the server's cache served more than the chat template's prefix.
    Exits with status 1 when every request failed, or no request was scheduled.

    \b
    Examples:
      llamatelemetry bench --url http://127.0.0.1:8080 -n 64 -c 1,2,4,8 --plot bench.png
      llamatelemetry bench --model model.gguf --prompt-tokens 512 --max-tokens 256 --json
      llamatelemetry bench --rate 1,2,4 --duration 30 --slo ttft=500ms,tpot=50ms
    """
    if model is not None and ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
        raise CliError("--url and --model: use one (--model starts its own server)")
    if model is None and (ctx_size is not None or threads is not None):
        raise CliError("--ctx-size and --threads are for the server --model starts")
    if prompts_file is not None and prompt_tokens is not None:
        raise CliError("--prompt-tokens and --prompts-file: use one")
    if prompts_file is not None and shared_prefix:
        raise CliError("--shared-prefix is for synthetic prompts, not --prompts-file")
    if not rates and find_capacity != "rate":
        for name, given in (("--duration", duration is not None), ("--ramp-up", ramp_up > 0),
                            ("--burstiness", burstiness != 1.0),
                            ("--max-concurrency", max_concurrency is not None)):  # fmt: skip
            if given:
                raise CliError(f"{name} is for open-loop runs: add --rate")
    for rate in rates:  # a schedule of more requests than one can hold is refused now
        try:
            Arrivals(rate, burstiness, ramp_up, duration)
        except ValueError as exc:
            raise CliError(f"--rate {rate:g}: {exc}") from None
    if find_capacity is not None and slo is None:
        raise CliError("--find-capacity searches for the highest load meeting --slo: add --slo")
    if slo is not None and slo.needs_stream and not stream:
        raise CliError("--slo with ttft or tpot needs streamed answers: drop --no-stream")
    explicit_levels = ctx.get_parameter_source("levels") is ParameterSource.COMMANDLINE
    if replay and (prompts_file is None or rates or find_capacity or explicit_levels):
        raise CliError("--replay sends a --prompts-file trace as recorded: give --prompts-file, "
                       "and no -c, --rate or --find-capacity")  # fmt: skip
    if length_spread and prompts_file is not None:
        raise CliError("--length-spread is for synthetic prompts, not --prompts-file")
    if (rates or find_capacity or replay) and not explicit_levels:
        levels = []  # only what was asked for: no default closed-loop level
    if slo is None and ctx.get_parameter_source("slo_attainment") is ParameterSource.COMMANDLINE:
        raise CliError("--slo-attainment is the share of requests meeting --slo: add --slo")
    if prometheus_port is None:
        for name in ("--prometheus-host", "--prometheus-wait"):
            source = ctx.get_parameter_source(name[2:].replace("-", "_"))
            if source is ParameterSource.COMMANDLINE:
                raise CliError(f"{name} is for the client metrics' endpoint: add --prometheus-port")
    if html is not None and not html.parent.is_dir():
        raise CliError(f"--html: no folder {html.parent} to write {html.name} in")
    if plot is not None and not plot.parent.is_dir():
        raise CliError(f"--plot: no folder {plot.parent} to write {plot.name} in")
    if plot is not None:
        _check_plot_available()
    earlier = None
    if baseline is not None:
        try:  # checked whole now: nothing in it may fail the comparison after the run
            earlier = load_baseline(baseline)
        except ValueError as exc:  # it names the file, and the line or field
            raise CliError(f"--baseline: {exc}") from None
        except OSError as exc:
            raise CliError(f"--baseline: {baseline}: {exc.strerror or exc}") from None
    file_prompts = None
    if prompts_file is not None:
        try:  # every line checked now: no request of the run fails for what it says
            file_prompts = load_prompts_file(prompts_file)
        except ValueError as exc:
            raise CliError(f"--prompts-file: {exc}") from None
        except OSError as exc:
            raise CliError(f"--prompts-file: {prompts_file}: {exc.strerror or exc}") from None
        if replay:
            if not all(isinstance(p, Prompt) and p.at is not None for p in file_prompts):
                raise CliError("--replay: every line of --prompts-file needs its 'timestamp'")
            requests = len(file_prompts)  # the whole trace, once
    prompt_tokens = prompt_tokens or DEFAULT_PROMPT_TOKENS
    workload_options = {
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": temperature,
        "seed": seed,
        "ignore_eos": ignore_eos,
        "warmup": warmup,
        "max_concurrency": max_concurrency,
        "turns": turns,
    }
    arrivals = {"burstiness": burstiness, "ramp_up": ramp_up, "duration": duration}
    config = {
        "requests": requests,
        "concurrency": levels,
        "rates": rates,
        **arrivals,
        "prompt_tokens": None if file_prompts else prompt_tokens,
        "shared_prefix": shared_prefix,
        "prompts_file": str(prompts_file) if prompts_file else None,
        "find_capacity": find_capacity,
        "scrape_interval": scrape_interval,
        "repeat": repeat,
        "replay": replay,
        "length_spread": length_spread,
        **workload_options,
    }
    plan = _Plan(
        levels, rates, workload_options, requests, prompt_tokens, shared_prefix, file_prompts,
        str(prompts_file) if prompts_file else None, seed, arrivals, slo, find_capacity,
        scrape_interval, repeat, replay, length_spread,
    )  # fmt: skip
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    with ExitStack() as stack:
        try:
            telemetry = None
            if otlp_endpoint is not None or prometheus_port is not None:
                telemetry = _setup_telemetry(otlp_endpoint, prometheus_port, prometheus_host)
                stack.callback(telemetry.shutdown)  # flushes every span before exit
                if prometheus_port is not None:
                    where = f"client metrics for Prometheus at {telemetry.prometheus_url}"
                    err_console().print(Text(where, style="dim"), soft_wrap=True)
            started = None
            if model is not None:
                slots = _slots(levels, max_concurrency, bool(rates or find_capacity or replay))
                size = (
                    ctx_size
                    if ctx_size is not None
                    else _ctx_size([slots], prompt_tokens + shared_prefix, max_tokens, file_prompts)
                )
                server = stack.enter_context(_started_server(model, slots, size, threads, as_json))
                url, api_key = server.url, None
                started = {"model": str(model), **_started(server)}
            progress = _Progress(requests, disabled=as_json, warmup=warmup > 0)
            results, capacity, prompts = asyncio.run(
                _run(url, api_key, plan, timeout, telemetry, progress)
            )
            if prometheus_port is not None:  # requests were sent: Prometheus gets the last
                stack.push(_last_scrape(telemetry, prometheus_wait))
        except KeyboardInterrupt:
            print_interrupted(err_console(), "the benchmark was stopped.")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        target = redact_url(url.rstrip("/"))  # a password in --url stays out of the report
        report = _report(target, config, results, started_at, slo, capacity, prompts, started)
        changes = [] if earlier is None else compare_reports(report, earlier)
        if earlier is not None:
            report["comparison"] = {
                "baseline": str(baseline),
                "changes": [change.to_dict() for change in changes],
            }
        failed_everywhere = all(r.completed == 0 for r in results)

        if as_json:
            print_json(report)
        elif not failed_everywhere:
            console = out_console()
            name = report["model"] or "unknown model"
            prompt = (
                "prompts from " + str(prompts_file)
                if file_prompts
                else _prompt_length(prompt_tokens, shared_prefix, prompts)
            )
            mode = "streaming" if stream else "not streaming"
            per_level = f"{duration:g} s per rate" if duration else f"{requests} requests per level"
            what = f"{per_level} · {prompt} · max {max_tokens} tokens · {mode}"
            if started is not None:
                what += "\n" + _server_line(started)
            console.print(Text.assemble(
                ("Benchmark ", "bold"), (target, "cyan"), f"  ({name})\n", (what, "dim"),
            ), soft_wrap=True)  # fmt: skip
            fewest, template = prompts.get("fewest_tokens"), prompts.get("template_tokens")
            if not file_prompts and template is not None and prompt_tokens < (fewest or 0):
                console.print(Text(
                    f"! --prompt-tokens {prompt_tokens} is less than the chat template's own "
                    f"{template} tokens and two words: the server counts "
                    f"about {fewest} tokens a prompt", style="yellow",
                ), soft_wrap=True)  # fmt: skip
            console.print()
            for result in results:
                _print_run(console, result, slo)
            if len(results) > 1:
                _print_sweep(console, results, slo)
            if find_capacity is not None and slo is not None:
                _print_capacity(console, find_capacity, capacity, results, slo)
            if earlier is not None:
                _print_changes(console, changes, str(baseline))
        if failed_everywhere:
            samples = [s for r in results for s in r.error_samples()]
            total = sum(r.requests for r in results)
            if total == 0:  # only empty schedules: nothing failed, and nothing was measured
                held = dict.fromkeys(
                    f"{a.expected(a.duration):.2g} at {a.rate:g} req/s"
                    for a in (r.arrivals for r in results)
                    if a is not None and a.duration is not None
                )
                raise CliError(
                    f"no request was scheduled: --duration {duration:g} s holds on average "
                    f"{', '.join(held)} requests; lengthen --duration or raise --rate"
                )
            raise CliError(
                f"all {total} requests to {target} failed", samples[0] if samples else ""
            )
        if html is not None:
            path = write_html(report, results, html)
            if not as_json:
                err_console().print(Text(f"report written to {path}", style="dim"))
        if plot is not None:
            from ..bench import plot_results

            path = plot_results(results, plot, title=f"llamatelemetry bench · {target}")
            if not as_json:
                err_console().print(Text(f"plot written to {path}", style="dim"))
