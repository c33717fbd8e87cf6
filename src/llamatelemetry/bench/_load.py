"""The load generator: N chat requests, C at a time (closed loop) or on a schedule of
arrivals (open loop, ``_schedule``), each one timed from the client's side and from the
server's own ``timings`` into a `RequestRecord` (``_records`` defines the figures),
gathered into a `RunResult` per level with the server's side sampled meanwhile
(``_watch``) and the generator's own CPU time.

A request ends within its client's ``timeout``, all of it (its connection, the wait for
its answer and its whole stream: `open_client` makes it the ``total_timeout`` too); an
answer without a single output token is an error (`EMPTY_ANSWER`), and an open-loop run
of a duration stops waiting for its requests its ``grace`` after that duration
(`UNFINISHED`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..api import AsyncLlamaCppClient
from ..api._internal import WireTimes, wire_times
from ._delay_probe import DelayProbe
from ._endpoints import DEFAULT_DOCUMENTS, GENERATING, endpoint_of, finish, request_of, send
from ._gpu_watch import GpuWatch
from ._phase import MEASURED, WARMUP, mark_phases, phase
from ._prompts import FilePrompts, Item, Prompt, PromptSource, messages_of
from ._records import UNFINISHED, RequestRecord, RunResult
from ._schedule import Arrivals, arrival_times
from ._watch import ServerWatch

if TYPE_CHECKING:
    from ._workers import Workers

#: How far ahead of its start a run with worker processes gives them their orders.
START_MARGIN = 0.05
_NOTHING: Item = [{"role": "user", "content": ""}]  # a prompt where a run has none

__all__ = ["Workload", "open_client", "run_load", "run_sweep"]


@dataclass(frozen=True)
class Workload:
    """What each run sends: ``requests`` requests (with a list of prompts: one per prompt)
    from ``prompts``, with these generation settings.

    ``prompts`` is a list (each run sends the same ones: the server's cache may serve them
    again, and the report says so) or a `PromptSource`, which hands every run, warm-up
    and level prompts no earlier request sent. ``temperature`` None keeps the server's
    default; ``seed`` is passed to every request (None: the server picks). ``ignore_eos``
    makes a real model generate all ``max_tokens``. ``warmup`` requests run before each
    measured run and are not counted. ``max_concurrency`` caps the requests in flight of
    an open-loop run (the schedule then slips, and the lag says by how much).
    """

    prompts: Sequence[Item] | PromptSource
    max_tokens: int = 128
    stream: bool = True
    temperature: float | None = None
    seed: int | None = 0
    ignore_eos: bool = False
    warmup: int = 1
    requests: int | None = None
    max_concurrency: int | None = None
    turns: int = 1  # >1: each request is a session of this many turns, history replayed
    endpoint: str = "chat"  # one of ENDPOINTS (`_endpoints`)
    documents: int = DEFAULT_DOCUMENTS  # rerank: the documents each query is ranked against

    def __post_init__(self) -> None:
        if isinstance(self.prompts, Sequence):
            if not self.prompts:
                raise ValueError("a workload needs at least one prompt")
            if any(isinstance(p, Prompt) and not p.messages for p in self.prompts):
                raise ValueError(
                    "a prompt given as a length alone has no text yet: make it with "
                    "with_lengths_made(client, prompts) (run_benchmark does)"
                )
            if self.requests is None:
                object.__setattr__(self, "requests", len(self.prompts))
            object.__setattr__(self, "prompts", FilePrompts(self.prompts))
        elif self.requests is None:
            raise ValueError("a workload from a prompt source needs requests=N")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.turns < 1:
            raise ValueError(f"turns must be >= 1, got {self.turns}")
        endpoint_of(self.endpoint)  # one of ENDPOINTS, or a ValueError that lists them
        if self.turns > 1 and self.endpoint not in GENERATING:
            raise ValueError(f"turns are a conversation's: {self.endpoint} has none")
        if self.documents < 1:
            raise ValueError(f"documents must be >= 1, got {self.documents}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def source(self) -> PromptSource:
        return cast(PromptSource, self.prompts)

    def request_settings(self) -> dict[str, Any]:
        """What every request of the workload is sent with (`request_of` adds its own
        content and output length)."""
        return {
            "max_tokens": self.max_tokens, "stream": self.stream,
            "temperature": self.temperature, "seed": self.seed,
            "ignore_eos": self.ignore_eos, "documents": self.documents,
        }  # fmt: skip


def _client_options(concurrency: int, timeout: float) -> dict[str, Any]:
    return {
        "timeout": timeout,
        "total_timeout": timeout,  # a whole request, stream and all: not each socket wait
        "max_retries": 0,
        "max_connections": max(concurrency, 1),
        "max_keepalive_connections": max(concurrency, 1),
    }


def open_client(
    url: str,
    *,
    api_key: str | None = None,
    concurrency: int = 1,
    timeout: float = 600.0,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> AsyncLlamaCppClient:
    """A client fit for load: a pool as large as the concurrency, no retries (a failed
    request is counted, not hidden), and ``timeout`` seconds for each request in all (a
    server trickling its answer forever fails it then, as an ``APITimeoutError``). With a
    provider, every request is also a span (with ``llamatelemetry.bench.phase`` when sent
    during a benchmark's phase) and metric points (none for the requests of a benchmark's
    calibration and warm-ups).

    ``tracer_provider`` (an OpenTelemetry SDK one) is given a span processor of this
    library's for good, once per provider: closing the client does not remove it (the SDK
    has no way to). It marks only the spans started during a benchmark's phase; every
    other span the provider starts, here or elsewhere in the program, is left as it is."""
    options = _client_options(concurrency, timeout)
    if tracer_provider is None and meter_provider is None:
        return AsyncLlamaCppClient(url, api_key, **options)
    from ..telemetry import InstrumentedAsyncLlamaCppClient

    if tracer_provider is not None:
        mark_phases(tracer_provider)
    return InstrumentedAsyncLlamaCppClient(
        url, api_key, tracer_provider=tracer_provider, meter_provider=meter_provider, **options
    )


async def _one(
    client: AsyncLlamaCppClient,
    item: Item,
    workload: Workload,
    record: RequestRecord,
    history: Sequence[Mapping[str, Any]] = (),
    answer: list[str] | None = None,
) -> None:
    """Send one request of the workload's endpoint (after a session's ``history``) and
    fill ``record`` in (``record.started`` is set by the caller); ``answer`` gathers the
    reply's text. A generating request's answer without a single output token (none
    seen, none counted by the server) is an error (`EMPTY_ANSWER`): every request asks
    for at least one."""
    request = request_of(item, history, workload.request_settings())
    endpoint = endpoint_of(workload.endpoint)
    clock = time.perf_counter
    begun = clock()
    wire = WireTimes()  # the socket's times: the client's own work is not the server's
    token = wire_times.set(wire)
    failure: BaseException | None = None
    try:
        await send(endpoint, client, request, record, wire, answer)
    except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
        failure = exc
    finally:
        wire_times.reset(token)
        finish(record, wire, begun, failure, client.total_timeout)


async def run_load(
    client: AsyncLlamaCppClient,
    workload: Workload,
    concurrency: int | None = None,
    *,
    arrivals: Arrivals | None = None,
    replay: bool = False,
    watch: ServerWatch | None = None,
    gpu: GpuWatch | None = None,
    on_request: Callable[[RequestRecord], None] | None = None,
    on_start: Callable[[], None] | None = None,
    workers: Workers | None = None,
) -> RunResult:
    """Run the workload's warm-up, then its requests: closed loop with at most
    ``concurrency`` in flight, open loop on the ``arrivals`` schedule (whatever the server
    does), or ``replay``: a trace's requests at the times it recorded (`Prompt.at`).
    ``watch`` samples the server meanwhile, ``gpu`` the GPUs; ``on_start`` is told when
    the warm-up is over and the run's clock starts (its ``duration`` counts from then),
    ``on_request`` of each measured request as it ends.

    An open-loop run of a duration stops waiting ``arrivals.grace`` seconds after its
    duration: the requests still in flight then (or still waiting under
    ``max_concurrency``, never sent) are cancelled and counted `UNFINISHED`; the others
    are bounded by the client's timeout."""
    if sum((concurrency is not None, arrivals is not None, replay)) != 1:
        raise ValueError(
            "give one of: a concurrency (closed loop), arrivals (open loop), replay=True"
        )
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    source = workload.source
    if workload.warmup:
        warm_gate = asyncio.Semaphore(concurrency or workload.max_concurrency or workload.warmup)
        warm_prompts = source.take(workload.warmup)

        async def warm(i: int) -> None:
            async with warm_gate:
                await _one(client, warm_prompts[i], workload, RequestRecord(i))

        with phase(WARMUP):
            await asyncio.gather(*(warm(i) for i in range(workload.warmup)))

    schedule = None
    if arrivals is not None:
        schedule = arrival_times(arrivals, None if arrivals.duration else workload.requests)
    count = len(schedule) if schedule is not None else cast(int, workload.requests)
    prompts = source.take(count * workload.turns)
    if replay:
        times = [p.at for p in prompts if isinstance(p, Prompt) and p.at is not None]
        if len(times) != len(prompts):
            raise ValueError("replay needs a trace: every request with its timestamp")
        schedule = [at - min(times) for at in times]
    plan = Plan(
        # the workload's settings (not its prompts' source, which no worker needs)
        workload=replace(workload, prompts=prompts[:1] or [_NOTHING], requests=1, warmup=0),
        items=list(prompts),
        sessions=list(range(count)),
        schedule=schedule,
        cap=concurrency or workload.max_concurrency,
        arrivals=arrivals,
    )
    if on_start is not None:
        on_start()
    cpu_start = time.process_time()
    origin = time.perf_counter()
    if workers is not None:
        origin += START_MARGIN  # the workers have their orders before the run's clock starts
    # The loop that reads the answers is probed: this one, or each worker's (this one
    # only waits for them then).
    probe = DelayProbe() if workers is None else None
    if probe is not None:
        probe.start()
    if watch is not None:
        watch.start(origin)
    if gpu is not None:
        gpu.start()
    cpu_elsewhere = 0.0
    delays: list[float] = []
    try:
        if workers is None:
            records = await drive(client, plan, origin, on_request)
        else:
            records, cpu_elsewhere, delays = await workers.drive(plan, origin, on_request)
    finally:
        if probe is not None:
            delays = probe.stop()
        samples = await watch.stop() if watch is not None else []
        gpus = gpu.stop() if gpu is not None else None
    failed_samples = watch.run_failures if watch is not None else 0
    duration = max((r.started + r.latency for r in records), default=0.0)
    return RunResult(
        concurrency,
        workload.stream,
        workload.max_tokens,
        records,
        duration,
        arrivals=arrivals,
        replayed=replay,
        server=samples,
        server_failures=failed_samples,
        cpu_seconds=time.process_time() - cpu_start + cpu_elsewhere,
        gpu=gpus,
        delays=delays,
        workers=1 if workers is None else workers.used(plan),
    )


@dataclass(frozen=True)
class Plan:
    """A run's measured requests, whichever process sends them: the sessions numbered
    ``sessions`` (a session's turns are requests ``number * turns + turn``), their
    prompts in the same order (``items``: a session's turns one after another), each
    session's time to leave when the run is open loop (``schedule``, seconds from the
    start, in the same order), at most ``cap`` sessions under way at once; ``workload``
    for its settings (its own prompts are not these)."""

    workload: Workload
    items: list[Item]
    sessions: list[int]
    schedule: list[float] | None
    cap: int | None
    arrivals: Arrivals | None

    def share(self, part: int, parts: int) -> Plan:
        """Every ``parts``-th session from the ``part``-th, with its share of the cap."""
        turns = self.workload.turns
        picked = range(part, len(self.sessions), parts)
        cap = None if self.cap is None else self.cap // parts + (part < self.cap % parts)
        return Plan(
            workload=self.workload,
            items=[self.items[k * turns + t] for k in picked for t in range(turns)],
            sessions=[self.sessions[k] for k in picked],
            schedule=None if self.schedule is None else [self.schedule[k] for k in picked],
            cap=cap,
            arrivals=self.arrivals,
        )


async def drive(
    client: AsyncLlamaCppClient,
    plan: Plan,
    origin: float,
    on_request: Callable[[RequestRecord], None] | None = None,
) -> list[RequestRecord]:
    """Send ``plan``'s sessions from ``origin`` (``perf_counter``: the same clock in every
    process), at most ``plan.cap`` at once, each at its scheduled time; their records,
    ``started`` counted from ``origin``. An open-loop run of a duration stops waiting
    ``arrivals.grace`` seconds after it, and counts what is left `UNFINISHED`."""
    workload, arrivals, turns, items = plan.workload, plan.arrivals, plan.workload.turns, plan.items
    records = [RequestRecord(n * turns + t) for n in plan.sessions for t in range(turns)]
    sent: set[int] = set()  # the records whose request left, and those that ended
    ended: set[int] = set()
    gate = asyncio.Semaphore(plan.cap) if plan.cap else None
    wait = origin - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)

    async def session(k: int) -> None:
        """One request, or a session's turns one after another, each sending the whole
        conversation so far (its history may come from the server's cache: that is what
        a session measures)."""
        first = records[k * turns]
        if plan.schedule is not None:
            first.scheduled = plan.schedule[k]
            delay = origin + first.scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        if gate is not None:
            await gate.acquire()
        try:
            history: list[Mapping[str, Any]] = []
            previous: RequestRecord | None = None
            for turn in range(turns):
                record = records[k * turns + turn]
                item = items[k * turns + turn]
                if turns > 1:
                    record.session, record.turn = plan.sessions[k], turn
                if previous is not None:
                    record.history_tokens = (previous.prompt_tokens or 0) + previous.output_tokens
                answer: list[str] | None = [] if turn < turns - 1 else None
                record.started = time.perf_counter() - origin
                sent.add(record.index)
                await _one(client, item, workload, record, history, answer)
                ended.add(record.index)
                if on_request is not None:
                    on_request(record)
                if not record.ok:
                    for rest in records[k * turns + turn + 1 : (k + 1) * turns]:
                        rest.error_type = "SessionAborted"  # a failed session does not go on
                        rest.error = f"turn {turn} of this session failed"
                    break
                history += [
                    *messages_of(item),
                    {"role": "assistant", "content": "".join(answer or [])},
                ]
                previous = record
        finally:
            if gate is not None:
                gate.release()

    stop_at = None
    if arrivals is not None and arrivals.duration is not None:
        stop_at = origin + arrivals.duration + arrivals.grace
    tasks: list[asyncio.Task[None]] = []
    try:
        with phase(MEASURED):  # the tasks copy the phase now
            tasks = [asyncio.ensure_future(session(k)) for k in range(len(plan.sessions))]
        if stop_at is None or not tasks:
            await asyncio.gather(*tasks)
        else:
            done, pending = await asyncio.wait(tasks, timeout=stop_at - time.perf_counter())
            for task in done:
                task.result()  # a crash of the generator itself is raised, not counted
            if pending:
                assert arrivals is not None
                now = time.perf_counter() - origin
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                _unfinished(records, sent, ended, now, arrivals)
    finally:
        for task in tasks:
            task.cancel()  # none left, unless the run itself was interrupted
    return records


def _unfinished(
    records: Sequence[RequestRecord],
    sent: set[int],
    ended: set[int],
    now: float,
    arrivals: Arrivals,
) -> None:
    """Count the requests of a run that stopped waiting ``now`` seconds in (its sessions
    cancelled) unfinished: those in flight, and those never sent."""
    when = f"{arrivals.grace:g} s after the {arrivals.duration:g} s duration"
    for record in records:
        if record.index in ended or record.error_type is not None:
            continue  # answered, failed, or a later turn of a failed session
        record.error_type = UNFINISHED
        if record.index in sent:
            record.error = f"still in flight when the run stopped waiting, {when}"
        else:  # waiting for a place under max_concurrency, or a later turn
            record.started, record.latency = now, 0.0
            record.error = f"never sent: still waiting when the run stopped, {when}"


async def run_sweep(
    client: AsyncLlamaCppClient,
    workload: Workload,
    levels: Sequence[int],
    *,
    rates: Sequence[Arrivals] = (),
    watch: ServerWatch | None = None,
    gpu: GpuWatch | None = None,
    on_request: Callable[[RequestRecord], None] | None = None,
    on_level: Callable[[int | float], None] | None = None,
    workers: Workers | None = None,
) -> list[RunResult]:
    """`run_load` once per concurrency level, then once per open-loop schedule, in order
    (fresh prompts for each when the workload has a `PromptSource`); ``on_level`` is told
    of each concurrency or rate as it begins."""
    options: dict[str, Any] = {
        "watch": watch, "gpu": gpu, "on_request": on_request, "workers": workers
    }  # fmt: skip
    results = []
    for level in levels:
        if on_level is not None:
            on_level(level)
        results.append(await run_load(client, workload, level, **options))
    for arrivals in rates:
        if on_level is not None:
            on_level(arrivals.rate)
        results.append(await run_load(client, workload, arrivals=arrivals, **options))
    return results
