"""A whole benchmark from one `BenchConfig`: the server (given, or started for it), the
prompts, every closed-loop level, open-loop rate and replay it asks for (``repeat`` times
each), a capacity search, and the `BenchReport` of it all. What ``llamatelemetry bench``
runs, with nothing printed: a `BenchProgress` is told of each level and request as they
go, and the ``llamatelemetry.bench`` logger of each level's outcome."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..api import AsyncLlamaCppClient, redact_url
from ._config import BenchConfig, BenchConfigError
from ._gpu_watch import GpuWatch
from ._load import Workload, open_client, run_load
from ._prompts import (
    FilePrompts,
    PromptSource,
    synthetic_source,
    template_prefix_tokens,
    with_lengths_made,
)
from ._records import RequestRecord, RunResult
from ._report import BenchReport
from ._schedule import Arrivals
from ._server import started_server
from ._slo import find_capacity
from ._watch import ServerWatch
from ._workers import Workers, auto_workers

__all__ = ["BenchProgress", "run_benchmark"]

log = logging.getLogger("llamatelemetry.bench")

#: One run: closed loop at a concurrency, open loop at a rate, or (neither) a replay.
_Run = Callable[[int | None, float | None], Awaitable[RunResult]]


class BenchProgress:
    """What a running benchmark tells as it goes; this one shows nothing. Subclass it to
    show progress (the command line draws a bar per level)."""

    def starting_server(self, model: Path) -> AbstractContextManager[object]:
        """Held while the server for ``model`` starts (loading a model takes a while)."""
        return nullcontext()

    def server(self, url: str) -> None:
        """The server the runs load, once known (with a model: the one started), its URL
        as the client has it (no password in it)."""

    def level(self, concurrency: int | None, arrivals: Arrivals | None, total: int | None) -> None:
        """A run begins: closed loop at ``concurrency``, open loop on ``arrivals``, or
        (neither) a trace's replay; ``total`` requests (None: as many as its duration
        holds). Its warm-up comes first."""

    def measuring(self) -> None:
        """The run's warm-up is over: its measured requests (and its clock) start."""

    def request(self, record: RequestRecord) -> None:
        """A measured request ended (``record.ok`` says whether it completed)."""

    def finished(self, result: RunResult) -> None:
        """The run ended."""


def run_benchmark(
    config: BenchConfig,
    *,
    progress: BenchProgress | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> BenchReport:
    """Run the benchmark ``config`` describes and return its report; print nothing.

    With ``config.model``, a llama-server is started for it first (on a free port) and
    stopped at the end. With a provider, every request is a span and metric points, the
    calibration's and warm-ups' marked as such and left out of the metrics. Failed
    requests are counted in the report, never raised. What stops the benchmark: a
    `BenchConfigError` (a URL or key the client refuses, a capacity search's rate that no
    schedule holds), the client's `APIError` when the prompts' calibration cannot reach
    the server, `FileNotFoundError` or `ServerStartError` when the model's server does
    not start. It runs its own event loop: call it where none is running."""
    progress = progress or BenchProgress()
    if config.workers != 1 and (tracer_provider is not None or meter_provider is not None):
        raise BenchConfigError(
            "{workers} other than 1 sends from worker processes, whose requests no tracer "
            "or meter provider of this process sees: use one worker to trace or measure them"
        )
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    url, api_key, started = config.target, config.api_key, None
    with ExitStack() as stack:
        if config.model is not None:
            with progress.starting_server(config.model):
                server, started = stack.enter_context(started_server(config))
            url, api_key = server.url, None
        runs = _Runs(config, progress, tracer_provider, meter_provider)
        results, capacity, prompts = asyncio.run(runs.all(url, api_key))
    return BenchReport(
        config, redact_url(url.rstrip("/")), started_at, tuple(results), prompts,
        capacity, started, None if runs.gpu is None else runs.gpu.why,
    )  # fmt: skip


class _Runs:
    """Every run of one benchmark, against one client."""

    def __init__(
        self,
        config: BenchConfig,
        progress: BenchProgress,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.made = 0
        self.gpu: GpuWatch | None = None
        self.pool: Workers | None = None
        self.done: dict[tuple[int | None, float | None], RunResult] = {}

    def in_flight(self) -> int:
        """The most requests a run may have in flight."""
        config = self.config
        in_flight = max([*config.levels, config.max_concurrency or 0, 1])
        if config.rates or config.find_capacity:
            in_flight = max(in_flight, config.max_concurrency or 1024)
        return in_flight

    def workers(self, url: str, api_key: str | None) -> Workers | None:
        """The worker processes the runs are spread over; None: this process sends."""
        config = self.config
        count = config.workers
        if count == "auto":
            count = auto_workers(max([*config.levels, config.max_concurrency or 0, 1]))
        if count == 1:
            return None
        log.info("starting %d bench worker processes", count)
        return Workers(count, url, api_key, self.in_flight(), config.timeout)

    def client(self, url: str, api_key: str | None) -> AsyncLlamaCppClient:
        """A client with room for every request a run may have in flight."""
        config = self.config
        in_flight = self.in_flight()
        try:
            return open_client(
                url, api_key=api_key, concurrency=in_flight, timeout=config.timeout,
                tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
            )  # fmt: skip
        except ValueError as exc:  # a malformed URL or key
            setting = "api_key" if "api_key" in str(exc) else "url"
            raise BenchConfigError(f"{{{setting}}}: {{problem}}", problem=str(exc)) from None

    async def source(self, client: AsyncLlamaCppClient) -> PromptSource:
        config = self.config
        if config.file_prompts is not None:
            made = await with_lengths_made(client, config.file_prompts, config.seed)
            return FilePrompts(made, str(config.prompts_file))
        return await synthetic_source(
            client, config.synthetic_tokens, config.seed, config.shared_prefix,
            spread=config.length_spread, max_tokens=config.max_tokens,
        )  # fmt: skip

    async def all(
        self, url: str, api_key: str | None
    ) -> tuple[list[RunResult], float | None, dict[str, Any]]:
        """Every run asked for; the capacity found (when searching); the prompts'
        description."""
        config = self.config
        client = self.client(url, api_key)
        self.progress.server(client.base_url)
        watch = None
        if config.scrape_interval:
            watch = ServerWatch(url, api_key, config.scrape_interval)
        self.gpu = GpuWatch(config.scrape_interval or 1.0) if config.gpu else None
        self.pool = await asyncio.to_thread(self.workers, url, api_key)
        async with client:
            # Calibration and warm-ups are sent in phases of their own: with telemetry,
            # their spans say so and they are left out of the metrics.
            source = await self.source(client)
            prefix = await template_prefix_tokens(client)
            if prefix is not None:
                prefix += getattr(source, "shared_tokens", 0)
            workload = Workload(
                source, requests=config.requests_per_run, max_tokens=config.max_tokens,
                stream=config.stream, temperature=config.temperature, seed=config.seed,
                ignore_eos=config.ignore_eos, warmup=config.warmup,
                max_concurrency=config.max_concurrency, turns=config.turns,
                endpoint=config.endpoint, documents=config.documents,
            )  # fmt: skip

            async def run(concurrency: int | None, rate: float | None) -> RunResult:
                return await self.one(client, workload, watch, prefix, concurrency, rate)

            results: list[RunResult] = []
            capacity = None
            try:
                for _ in range(config.repeat if config.replay else 0):
                    results.append(await run(None, None))
                for level in config.levels:
                    for _ in range(config.repeat):
                        results.append(await run(level, None))
                for rate in config.rates:
                    for _ in range(config.repeat):
                        results.append(await run(None, rate))
                if config.find_capacity is not None:
                    capacity, tried = await self.search(run)
                    results.extend(r for r in tried if all(r is not s for s in results))
            finally:
                if watch is not None:
                    await watch.aclose()
                if self.gpu is not None:
                    self.gpu.close()
                if self.pool is not None:
                    self.pool.close()
            return results, capacity, source.describe()

    async def one(
        self,
        client: AsyncLlamaCppClient,
        workload: Workload,
        watch: ServerWatch | None,
        prefix: int | None,
        concurrency: int | None,
        rate: float | None,
    ) -> RunResult:
        """One run: closed loop at ``concurrency``, open loop at ``rate``, or (neither) the
        trace replayed."""
        config = self.config
        self.made += 1
        arrivals = None
        total: int | None = config.requests_per_run * config.turns  # each turn a request
        if rate is not None:
            # Each run its own arrivals (repeats included), repeatable with a seed.
            seed = None if config.seed is None else config.seed + self.made
            try:  # a capacity search may double a rate past what a schedule holds
                arrivals = config.arrivals(rate, seed)
            except ValueError as exc:
                raise BenchConfigError("{rates} {rate}: {problem}", rate=f"{rate:g}",
                                       problem=str(exc)) from None  # fmt: skip
            total = None if arrivals.duration else total
        replay = concurrency is None and rate is None
        self.progress.level(concurrency, arrivals, total)
        result = await run_load(
            client, workload, concurrency, arrivals=arrivals, replay=replay, watch=watch,
            gpu=self.gpu, on_request=self.progress.request, on_start=self.progress.measuring,
            workers=self.pool,
        )  # fmt: skip
        self.progress.finished(result)
        result.cache_prefix_tokens = prefix
        result.percentiles = tuple(float(q) for q in config.percentiles)
        self.done[(concurrency, rate)] = result
        what = "replay" if replay else f"rate {rate:g}" if rate else f"concurrency {concurrency}"
        log.info("%s: %d of %d requests completed in %.2f s",
                 what, result.completed, result.requests, result.duration)  # fmt: skip
        return result

    async def search(self, run: _Run) -> tuple[float | None, list[RunResult]]:
        """The highest load meeting the SLO, from the first rate (or level), reusing the
        sweep's runs of the levels it tries."""
        config = self.config
        assert config.slo is not None
        by_rate = config.find_capacity == "rate"

        async def search_run(level: float) -> RunResult:
            key = (None, level) if by_rate else (int(level), None)
            if key in self.done:  # the sweep ran this level already
                return self.done[key]
            return await run(*key)

        start = (config.rates or (1.0,))[0] if by_rate else float((config.levels or (1,))[0])
        return await find_capacity(
            search_run, config.slo, start, integer=not by_rate,
            # more in flight than a run has requests measures nothing new
            ceiling=None if by_rate else float(config.requests_per_run),
        )  # fmt: skip
