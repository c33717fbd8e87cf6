"""The load generator: N chat requests, C at a time, each one timed from the client's side
and from the server's own ``timings`` into a `RequestRecord` (``_records`` defines the
figures), gathered into a `RunResult` per concurrency level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..api import AsyncLlamaCppClient, ChatCompletion
from ._prompts import Messages
from ._records import RequestRecord, RunResult

__all__ = ["Workload", "open_client", "run_load", "run_sweep"]


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
