"""The load generator: N chat requests, C at a time, each one timed from the client's side
and from the server's own ``timings``.

Client-side, per request: TTFT (request sent to the first chunk with generated text),
ITL (the gaps between chunks with text), TPOT ((end-to-end - TTFT) / (output tokens - 1))
and end-to-end latency. Server-side, from llama.cpp's ``timings``: TTFT = ``prompt_ms``,
TPOT = ``predicted_ms / (predicted_n - 1)``, end-to-end = ``prompt_ms + predicted_ms``.
The difference between the two sides is time spent queueing for a slot and on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..api import AsyncLlamaCppClient, ChatCompletion, Timings
from ._prompts import Messages
from ._stats import Summary

__all__ = [
    "METRICS",
    "RequestRecord",
    "RunResult",
    "Workload",
    "open_client",
    "run_load",
    "run_sweep",
]

#: The latency metrics, in the order they are shown.
METRICS = ("ttft", "tpot", "itl", "e2e")
METRIC_TITLES = {
    "ttft": "Time to first token",
    "tpot": "Time per output token",
    "itl": "Inter-token latency",
    "e2e": "End-to-end latency",
}
ERROR_SAMPLES = 5  # distinct error messages kept per run


@dataclass(frozen=True)
class Workload:
    """What each run sends: one request per prompt, with these generation settings.

    ``temperature`` None keeps the server's default; ``seed`` is passed to every request
    (None: the server picks). ``ignore_eos`` makes a real model generate all ``max_tokens``.
    ``warmup`` requests (from the same prompts) run before each measured run and are not
    counted.
    """

    prompts: Sequence[Messages]
    max_tokens: int = 128
    stream: bool = True
    temperature: float | None = None
    seed: int | None = 0
    ignore_eos: bool = False
    warmup: int = 1

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("a workload needs at least one prompt")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def request_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            # the client's own sampling defaults off: the server's apply
            "top_p": None,
            "top_k": None,
            "frequency_penalty": None,
            "presence_penalty": None,
        }
        if self.ignore_eos:
            options["ignore_eos"] = True
        return options


@dataclass
class RequestRecord:
    """One request as measured (times in seconds; ``started`` counts from the run's start)."""

    index: int
    started: float = 0.0
    latency: float = 0.0  # end-to-end, or until the failure
    ttft: float | None = None  # streaming only
    itl: list[float] = field(default_factory=list)  # streaming only
    output_tokens: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    server_ttft: float | None = None
    server_tpot: float | None = None
    server_latency: float | None = None
    server_output_tokens: int | None = None
    model: str | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot(self) -> float | None:
        """Client-side time per output token after the first (streaming only)."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    def add_server(self, timings: Timings | None) -> None:
        if timings is None:
            return
        if timings.prompt_ms is not None:
            self.server_ttft = timings.prompt_ms / 1000.0
        if timings.predicted_n is not None:
            self.server_output_tokens = timings.predicted_n
        if timings.predicted_ms is not None:
            if timings.predicted_n is not None and timings.predicted_n > 1:
                self.server_tpot = timings.predicted_ms / (timings.predicted_n - 1) / 1000.0
            if timings.prompt_ms is not None:
                self.server_latency = (timings.prompt_ms + timings.predicted_ms) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        """The record in milliseconds, without the per-chunk gaps."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 3)

        return {
            "index": self.index,
            "ok": self.ok,
            "start_ms": ms(self.started),
            "e2e_ms": ms(self.latency),
            "ttft_ms": ms(self.ttft),
            "tpot_ms": ms(self.tpot),
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "server_ttft_ms": ms(self.server_ttft),
            "server_tpot_ms": ms(self.server_tpot),
            "server_e2e_ms": ms(self.server_latency),
            "error_type": self.error_type,
            "error": self.error,
        }


@dataclass
class RunResult:
    """Every request of one run at one concurrency level, and what they add up to."""

    concurrency: int
    stream: bool
    max_tokens: int
    records: list[RequestRecord]
    duration: float  # seconds from the first request's start to the last one's end

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.records if r.ok)

    @property
    def errors(self) -> int:
        return self.requests - self.completed

    @property
    def input_tokens(self) -> int:
        return sum(r.prompt_tokens or 0 for r in self.records if r.ok)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.records if r.ok)

    @property
    def request_throughput(self) -> float:
        """Completed requests per second."""
        return self.completed / self.duration if self.duration > 0 else 0.0

    @property
    def output_throughput(self) -> float:
        """Generated tokens per second, over all requests together."""
        return self.output_tokens / self.duration if self.duration > 0 else 0.0

    @property
    def model(self) -> str | None:
        return next((r.model for r in self.records if r.model), None)

    def values(self, metric: str, side: str = "client") -> list[float]:
        """The measurements (seconds) of ``metric`` ("ttft", "tpot", "itl", "e2e") on ``side``
        ("client" or "server") over the completed requests; ITL is client-side only."""
        done = [r for r in self.records if r.ok]
        getter: Callable[[RequestRecord], float | None]
        if side == "client":
            if metric == "itl":
                return [gap for r in done for gap in r.itl]
            getter = {
                "ttft": lambda r: r.ttft,
                "tpot": lambda r: r.tpot,
                "e2e": lambda r: r.latency,
            }[metric]
        elif side == "server":
            if metric == "itl":
                return []
            getter = {
                "ttft": lambda r: r.server_ttft,
                "tpot": lambda r: r.server_tpot,
                "e2e": lambda r: r.server_latency,
            }[metric]
        else:
            raise ValueError(f"side must be 'client' or 'server', got {side!r}")
        return [v for v in map(getter, done) if v is not None]

    def summary(self, metric: str, side: str = "client") -> Summary | None:
        """The distribution of ``metric`` in milliseconds (None when nothing measured it)."""
        found = Summary.of(self.values(metric, side))
        return None if found is None else found.scaled(1000.0)

    def error_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            if r.error_type is not None:
                counts[r.error_type] = counts.get(r.error_type, 0) + 1
        return counts

    def error_samples(self) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            if r.error is not None and r.error not in seen:
                seen.append(r.error)
                if len(seen) == ERROR_SAMPLES:
                    break
        return seen

    def to_dict(self, *, per_request: bool = True) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for metric in METRICS:
            sides = {}
            for side in ("client", "server"):
                found = self.summary(metric, side)
                sides[side] = None if found is None else found.to_dict()
            metrics[f"{metric}_ms"] = sides
        data: dict[str, Any] = {
            "concurrency": self.concurrency,
            "stream": self.stream,
            "max_tokens": self.max_tokens,
            "requests": self.requests,
            "completed": self.completed,
            "errors": self.errors,
            "duration_s": round(self.duration, 6),
            "request_throughput": round(self.request_throughput, 6),
            "output_throughput": round(self.output_throughput, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model": self.model,
            "metrics": metrics,
            "error_types": self.error_types(),
            "error_samples": self.error_samples(),
        }
        if per_request:
            data["per_request"] = [r.to_dict() for r in self.records]
        return data


def open_client(
    url: str,
    *,
    api_key: str | None = None,
    concurrency: int = 1,
    timeout: float = 600.0,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> AsyncLlamaCppClient:
    """A client fit for load: a pool as large as the concurrency and no retries (a failed
    request is counted, not hidden). With a provider, every request is also a span."""
    options: dict[str, Any] = {
        "timeout": timeout,
        "max_retries": 0,
        "max_connections": max(concurrency, 1),
        "max_keepalive_connections": max(concurrency, 1),
    }
    if tracer_provider is None and meter_provider is None:
        return AsyncLlamaCppClient(url, api_key, **options)
    from ..telemetry import InstrumentedAsyncLlamaCppClient

    return InstrumentedAsyncLlamaCppClient(
        url, api_key, tracer_provider=tracer_provider, meter_provider=meter_provider, **options
    )


async def _one(
    client: AsyncLlamaCppClient, messages: Messages, workload: Workload, record: RequestRecord
) -> None:
    """Send one request and fill ``record`` in (``record.started`` is set by the caller)."""
    options = workload.request_options()
    clock = time.perf_counter
    started = clock()
    try:
        if workload.stream:
            stream = await client.chat.completions.create(messages=messages, stream=True, **options)
            chunks = 0
            last = started
            async with stream:
                async for chunk in stream:
                    if chunk.choices:
                        delta = chunk.choices[0].delta
                        if delta.content or delta.reasoning_content:
                            now = clock()
                            if record.ttft is None:
                                record.ttft = now - started
                            else:
                                record.itl.append(now - last)
                            last = now
                            chunks += 1
                    if chunk.usage is not None:
                        record.prompt_tokens = chunk.usage.prompt_tokens
                        record.output_tokens = chunk.usage.completion_tokens
                        details = chunk.usage.prompt_tokens_details
                        record.cached_tokens = details.cached_tokens if details else None
                    if chunk.timings is not None:
                        record.add_server(chunk.timings)
                    if chunk.model:
                        record.model = chunk.model
            if not record.output_tokens:
                record.output_tokens = chunks
        else:
            reply = cast(
                ChatCompletion, await client.chat.completions.create(messages=messages, **options)
            )
            if reply.usage is not None:
                record.prompt_tokens = reply.usage.prompt_tokens
                record.output_tokens = reply.usage.completion_tokens
                details = reply.usage.prompt_tokens_details
                record.cached_tokens = details.cached_tokens if details else None
            record.add_server(reply.timings)
            record.model = reply.model
    except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
        record.error_type = type(exc).__name__
        record.error = str(exc) or type(exc).__name__
    finally:
        record.latency = clock() - started


async def run_load(
    client: AsyncLlamaCppClient,
    workload: Workload,
    concurrency: int,
    *,
    on_request: Callable[[RequestRecord], None] | None = None,
) -> RunResult:
    """Run the workload's warm-up, then one request per prompt with at most ``concurrency``
    in flight; ``on_request`` is told of each measured request as it ends."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    prompts = workload.prompts
    if workload.warmup:
        gate = asyncio.Semaphore(concurrency)

        async def warm(i: int) -> None:
            async with gate:
                await _one(client, prompts[i % len(prompts)], workload, RequestRecord(i))

        await asyncio.gather(*(warm(i) for i in range(workload.warmup)))

    gate = asyncio.Semaphore(concurrency)
    records = [RequestRecord(i) for i in range(len(prompts))]
    origin = time.perf_counter()

    async def measured(record: RequestRecord) -> None:
        async with gate:
            record.started = time.perf_counter() - origin
            await _one(client, prompts[record.index], workload, record)
        if on_request is not None:
            on_request(record)

    await asyncio.gather(*(measured(r) for r in records))
    duration = max((r.started + r.latency for r in records), default=0.0)
    return RunResult(concurrency, workload.stream, workload.max_tokens, records, duration)


async def run_sweep(
    client: AsyncLlamaCppClient,
    workload: Workload,
    levels: Sequence[int],
    *,
    on_request: Callable[[RequestRecord], None] | None = None,
    on_level: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """`run_load` once per concurrency level, in order; ``on_level`` is told as each begins."""
    results = []
    for level in levels:
        if on_level is not None:
            on_level(level)
        results.append(await run_load(client, workload, level, on_request=on_request))
    return results
