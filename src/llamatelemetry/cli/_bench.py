"""``llamatelemetry bench``: a load generator for any llama-server (or one it starts).

The measuring lives in `llamatelemetry.bench` (`run_benchmark` runs what a `BenchConfig`
says, and the config holds the rules between the options); this module parses the
options into a config, sets up what only the command line offers (an OTLP pipeline, a
Prometheus endpoint, a baseline, files to write), shows progress, and prints the report.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any, Literal, cast

import click
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from ..api import DEFAULT_BASE_URL, APIError
from ..bench import (
    DURATION_GRACE,
    ENDPOINTS,
    SLO,
    Arrivals,
    BenchConfig,
    BenchConfigError,
    BenchProgress,
    BenchReport,
    RequestRecord,
    RunResult,
    burstiness_problem,
    compare_reports,
    load_baseline,
    run_benchmark,
    write_csv,
    write_html,
)
from ..bench._internal import (
    DEFAULT_DOCUMENTS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    DEFAULT_REQUESTS,
    MAX_CONCURRENCY,
    MAX_DOCUMENTS,
    MAX_OUTPUT_TOKENS,
    MAX_RATE,
    MAX_REPEAT,
    MAX_WORKERS,
    MIN_RATE,
    percentiles_problem,
)
from ..server import ServerStartError
from ._client import API_KEY_ENV, BASE_URL_ENV
from ._output import err_console, json_option, out_console, print_json
from ._render import print_bench
from ._telemetry import _last_scrape, _setup_telemetry
from ._user_errors import (
    EXIT_INTERRUPTED,
    CliError,
    api_errors,
    finite,
    print_interrupted,
    start_error,
)

__all__ = ["bench"]

#: How the options name a `BenchConfig` setting where ``--field-name`` would not.
_FLAGS = {"concurrency": "-c", "rates": "--rate", "no_stream": "--no-stream"}


def _workers_value(ctx: click.Context, param: click.Parameter, value: str) -> int | Literal["auto"]:
    """``--workers``: a count from 1 to the most there may be, or ``auto``."""
    if value == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of workers nor 'auto'") from None
    if not 1 <= count <= MAX_WORKERS:
        raise click.BadParameter(f"{count} is not within 1..{MAX_WORKERS}")
    return count


def _flag(setting: str) -> str:
    return _FLAGS.get(setting, "--" + setting.replace("_", "-"))


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
        if not MIN_RATE <= rate < MAX_RATE:  # NaN fails here too
            raise click.BadParameter(
                f"{rate:g} is not a rate of {MIN_RATE:g} to 1e6 requests per second"
            )
        if rate not in rates:
            rates.append(rate)
    return rates


def _parse_percentiles(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    """``"50,90,99.9"`` → ``(50.0, 90.0, 99.9)``, in the order given."""
    found: list[float] = []
    for part in value.split(","):
        try:
            found.append(float(part))
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not a percentile") from None
    problem = percentiles_problem(found)
    if problem is not None:
        raise click.BadParameter(problem)
    return tuple(found)


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


class _Progress(BenchProgress):
    """One bar per run on stderr, after a spinner while a started server loads its model;
    nothing at all when ``disabled``. Also keeps the URL the runs load, for errors."""

    def __init__(self, disabled: bool, warmup: bool = False) -> None:
        self._disabled = disabled
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
        self._shown = False
        self._task: Any = None
        self._errors = 0
        self.url: str | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shown:
            self._bar.stop()

    def starting_server(self, model: Path) -> AbstractContextManager[object]:
        return nullcontext() if self._disabled else err_console().status(f"Loading {model.name} …")

    def server(self, url: str) -> None:
        self.url = url

    def level(self, concurrency: int | None, arrivals: Arrivals | None, total: int | None) -> None:
        if not self._shown:  # the bars start with the first run: after any spinner
            self._bar.start()
            self._shown = True
        if arrivals is not None:
            label = f"{arrivals.rate:>7.3g} req/s"
        elif concurrency is not None:
            label = f"concurrency {concurrency:>3}"
        else:
            label = "trace replay"
        self._errors = 0
        self._task = self._bar.add_task(
            label, total=total, errors="", start=False, warmup=self._warmup, duration=None
        )

    def measuring(self) -> None:
        """The level's warm-up is over: its clock starts."""
        self._bar.start_task(self._task)

    def finished(self, result: RunResult) -> None:
        """The level ended: its bar shows the duration its report gives."""
        self._bar.update(self._task, duration=result.duration)
        self._bar.stop_task(self._task)

    def request(self, record: RequestRecord) -> None:
        if not record.ok:
            self._errors += 1
        self._bar.update(
            self._task, advance=1, errors=f"{self._errors} errors" if self._errors else ""
        )


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
    help='A dataset, cycled in order: JSONL ({"prompt": "..."}, {"messages": [...]} or '
    'ShareGPT {"conversations": [...]} a line), ShareGPT JSON or Parquet; a request\'s '
    "output length from it wins over --max-tokens.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1, max=MAX_OUTPUT_TOKENS),  # llama.cpp reads it into an int32
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
    "--endpoint",
    type=click.Choice(ENDPOINTS),
    default="chat",
    show_default=True,
    help="What each request calls: /v1/chat/completions, /v1/completions, /v1/responses, "
    "/v1/messages, /v1/embeddings or /v1/rerank. With --model, the server started for "
    "embeddings or rerank computes them (rerank: with ranking pooling).",
)
@click.option(
    "--documents",
    type=click.IntRange(min=1, max=MAX_DOCUMENTS),
    default=DEFAULT_DOCUMENTS,
    show_default=True,
    help="With --endpoint rerank: the documents each query is ranked against (the "
    "query's words shuffled, each as long as the query).",
)
@click.option(
    "--percentiles",
    callback=_parse_percentiles,
    default="50,90,99",
    show_default=True,
    metavar="Q[,Q...]",
    help="The percentiles of every latency in the tables and the CSV, e.g. "
    "50,90,95,99,99.9 (the JSON has them too, beside its median, p90 and p99).",
)
@click.option(
    "--workers",
    callback=_workers_value,
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Processes sending the load, each with its own event loop: past about 64 "
    "streams one loop reads tokens late (the report's generator delay says by how much). "
    "auto: one per 64 requests in flight, up to the cores.",
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
    "--gpu",
    is_flag=True,
    help="Sample this machine's NVIDIA GPUs during each run: utilisation, peak memory, "
    "energy per output token (the gpu extra and a driver; the server on this machine).",
)
@click.option(
    "--turns",
    type=click.IntRange(min=1, max=MAX_REPEAT),
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
    type=click.IntRange(min=1, max=MAX_REPEAT),
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
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as CSV: one row per request in this file, one per level beside it "
    "(bench.csv and bench.levels.csv).",
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
    workers: int | Literal["auto"],
    endpoint: str,
    documents: int,
    percentiles: tuple[float, ...],
    slo_attainment: float,
    slo: SLO | None,
    find_capacity: str | None,
    scrape_interval: float,
    gpu: bool,
    turns: int,
    replay: bool,
    length_spread: float,
    repeat: int,
    baseline: Path | None,
    html: Path | None,
    csv_path: Path | None,
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

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE

    try:  # the rules between the options are the config's; it also reads --prompts-file
        config = BenchConfig(
            url=url if model is None or given("url") else None,
            api_key=api_key if model is None else None,  # a started server has no key
            model=model, ctx_size=ctx_size, threads=threads, requests=requests,
            concurrency=levels if given("levels") else None, prompt_tokens=prompt_tokens,
            prompts_file=prompts_file, max_tokens=max_tokens, ignore_eos=ignore_eos,
            stream=stream, temperature=temperature, seed=seed, warmup=warmup,
            timeout=timeout, rates=rates, burstiness=burstiness, duration=duration,
            ramp_up=ramp_up, max_concurrency=max_concurrency, shared_prefix=shared_prefix,
            slo=slo, find_capacity=cast(Literal["rate", "concurrency"] | None, find_capacity),
            scrape_interval=scrape_interval, gpu=gpu, turns=turns, replay=replay,
            length_spread=length_spread, repeat=repeat, workers=workers,
            percentiles=percentiles, endpoint=endpoint, documents=documents,
        )  # fmt: skip
    except BenchConfigError as exc:
        raise CliError(exc.worded(_flag)) from None
    # The options of what only the command line does: the rules between them are here.
    if slo is None and given("slo_attainment"):
        raise CliError("--slo-attainment is the share of requests meeting --slo: add --slo")
    if workers != 1 and (otlp_endpoint is not None or prometheus_port is not None):
        raise CliError(
            "--workers other than 1 sends from worker processes, whose requests are not "
            "traced or measured: drop --otlp-endpoint and --prometheus-port, or --workers"
        )
    if prometheus_port is None:
        for name in ("prometheus_host", "prometheus_wait"):
            if given(name):
                raise CliError(
                    f"{_flag(name)} is for the client metrics' endpoint: add --prometheus-port"
                )
    for option, path in (("--html", html), ("--csv", csv_path), ("--plot", plot)):
        if path is not None and not path.parent.is_dir():
            raise CliError(f"{option}: no folder {path.parent} to write {path.name} in")
    if plot is not None:
        _check_plot_available()
    earlier = None if baseline is None else _baseline(baseline)

    with ExitStack() as stack:
        try:
            telemetry = None
            if otlp_endpoint is not None or prometheus_port is not None:
                telemetry = _setup_telemetry(otlp_endpoint, prometheus_port, prometheus_host)
                stack.callback(telemetry.shutdown)  # flushes every span before exit
                if prometheus_port is not None:
                    where = f"client metrics for Prometheus at {telemetry.prometheus_url}"
                    err_console().print(Text(where, style="dim"), soft_wrap=True)
            report = _run(config, _Progress(disabled=as_json, warmup=warmup > 0), telemetry)
            if prometheus_port is not None:  # requests were sent: Prometheus gets the last
                stack.push(_last_scrape(telemetry, prometheus_wait))
        except KeyboardInterrupt:
            print_interrupted(err_console(), "the benchmark was stopped.")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        data = report.to_dict()
        changes = [] if earlier is None else compare_reports(data, earlier)
        if earlier is not None:
            data["comparison"] = {
                "baseline": str(baseline),
                "changes": [change.to_dict() for change in changes],
            }
        failed_everywhere = report.completed == 0
        if as_json:
            print_json(data)
        elif not failed_everywhere:
            print_bench(out_console(), report, changes, None if baseline is None else str(baseline))
        if failed_everywhere:
            _fail(report)
        if html is not None:
            path = write_html(data, list(report.runs), html)
            if not as_json:
                err_console().print(Text(f"report written to {path}", style="dim"))
        if csv_path is not None:
            per_request, per_level = write_csv(data, csv_path)
            if not as_json:
                err_console().print(
                    Text(f"CSV written to {per_request} and {per_level}", style="dim")
                )
        if plot is not None:
            from ..bench import plot_results

            title = f"llamatelemetry bench · {report.url}"
            path = plot_results(list(report.runs), plot, title=title)
            if not as_json:
                err_console().print(Text(f"plot written to {path}", style="dim"))


def _baseline(path: Path) -> dict[str, Any]:
    """An earlier --json report, checked whole now: nothing in it may fail the comparison
    after the run."""
    try:
        return load_baseline(path)
    except ValueError as exc:  # it names the file, and the line or field
        raise CliError(f"--baseline: {exc}") from None
    except OSError as exc:
        raise CliError(f"--baseline: {path}: {exc.strerror or exc}") from None


def _run(config: BenchConfig, progress: _Progress, telemetry: Any) -> BenchReport:
    """`run_benchmark`, its errors worded for the command line."""
    providers = {}
    if telemetry is not None:
        providers = {
            "tracer_provider": telemetry.tracer_provider,
            "meter_provider": telemetry.meter_provider,
        }
    try:
        with progress:
            return run_benchmark(config, progress=progress, **providers)
    except BenchConfigError as exc:
        raise CliError(exc.worded(_flag)) from None
    except FileNotFoundError as exc:  # the model --model names
        raise CliError(f"{exc.strerror}: {exc.filename}") from None
    except ServerStartError as exc:
        raise start_error(exc) from None
    except APIError as exc:  # the prompts' calibration could not reach the server
        with api_errors(progress.url or config.target):
            raise exc from None


def _fail(report: BenchReport) -> None:
    """No request completed: say why, exit with status 1."""
    results = report.runs
    if report.requests == 0:  # only empty schedules: nothing failed, nothing was measured
        held = dict.fromkeys(
            f"{a.expected(a.duration):.2g} at {a.rate:g} req/s"
            for a in (r.arrivals for r in results)
            if a is not None and a.duration is not None
        )
        raise CliError(
            f"no request was scheduled: --duration {report.config.duration:g} s holds on "
            f"average {', '.join(held)} requests; lengthen --duration or raise --rate"
        )
    samples = [s for r in results for s in r.error_samples()]
    raise CliError(
        f"all {report.requests} requests to {report.url} failed", samples[0] if samples else ""
    )
