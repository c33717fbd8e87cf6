"""What a load run measured: a `RequestRecord` per request, timed from the client's side
and from the server's own ``timings``, and a `RunResult` per concurrency level that adds
them up.

Client-side, per request: TTFT (request sent to the first chunk with generated text),
ITL (the gaps between chunks with text), TPOT ((end-to-end - TTFT) / (output tokens - 1))
and end-to-end latency. Server-side, from llama.cpp's ``timings``: its ``ttft_s``,
``tpot_s`` and ``e2e_s`` (``prompt_ms``, ``predicted_ms / (predicted_n - 1)``, their sum).
The difference between the two sides is time spent queueing for a slot and on the wire.

Tools name these figures differently: our TPOT is vLLM's TPOT and guidellm's ITL (one
figure per request); our ITL is vLLM's ITL (every gap of every request, pooled).
`METRIC_DEFINITIONS` says so wherever the figures are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..api import Timings
from ._distribution_summary import DEFAULT_PERCENTILES, Summary, percentile, percentile_name
from ._gpu_watch import GpuSummary
from ._schedule import Arrivals
from ._watch import ServerSample

__all__ = [
    "EMPTY_ANSWER",
    "ITL_NOTE",
    "METRICS",
    "METRIC_DEFINITIONS",
    "METRIC_TITLES",
    "RequestRecord",
    "RunResult",
    "TPOT_NOTE",
    "TurnSummary",
    "UNFINISHED",
]

#: The latency metrics, in the order they are shown.
METRICS = ("ttft", "tpot", "itl", "e2e")
METRIC_TITLES = {
    "ttft": "Time to first token",
    "tpot": "Time per output token (TPOT)",
    "itl": "Inter-token latency (ITL)",
    "e2e": "End-to-end latency",
}
#: What each figure is, in the JSON report (``metric_definitions``) and the HTML one:
#: other tools give the same names to other figures.
METRIC_DEFINITIONS = {
    "ttft": "Time to first token, per request. Client: from the request's first byte "
    "written to its socket to the arrival of the first streamed chunk with generated text "
    "(waiting for a slot and the wire included). "
    "Server: llama.cpp's prompt_ms (the prompt's processing alone).",
    "tpot": "Time per output token, one figure per request: (end-to-end - TTFT) / (output "
    "tokens - 1), then its distribution over the requests. Server: llama.cpp's "
    "predicted_ms / (predicted_n - 1). The same figure as vLLM's TPOT and guidellm's ITL "
    "((last token - first token) / (tokens - 1)); guidellm's own TPOT divides by all the "
    "tokens.",
    "itl": "Inter-token latency: every gap between two consecutive streamed chunks with "
    "text, of all requests pooled into one distribution (a chunk may hold several tokens; "
    "long answers weigh more). The same figure as vLLM's ITL; not guidellm's ITL, which is "
    "our TPOT. Client-side only.",
    "e2e": "End-to-end latency, per request. Client: from the request's first byte written "
    "to the arrival of the end of its answer. Server: llama.cpp's prompt_ms + predicted_ms.",
}
#: The same, in a line under a table.
TPOT_NOTE = (
    "TPOT: each request's (end-to-end − TTFT) / (output tokens − 1) = vLLM's TPOT = guidellm's ITL"
)
ITL_NOTE = "ITL: every gap between streamed chunks, all requests pooled = vLLM's ITL"
ERROR_SAMPLES = 5  # distinct error messages kept per run
#: The error type of a request answered without a single output token: an error, never
#: goodput (a stream of nothing but ``[DONE]``, a reply whose ``choices`` are empty).
EMPTY_ANSWER = "EmptyAnswer"
#: The error type of a request a run stopped waiting for: an open-loop run of a duration
#: ends its ``grace`` after it, and what is still in flight (or still waiting to be sent)
#: then is unfinished.
UNFINISHED = "Unfinished"
#: Tokens two different prompts may share at their start by chance (a first word, say).
CACHE_SLACK_TOKENS = 8
#: Above this share of the median TTFT or ITL, the generator's own delay (p99) is warned of.
DELAY_SHARE = 0.1
#: A send delay below this (ms) is a request's own setup, not a generator falling behind.
SEND_DELAY_FLOOR_MS = 5.0
#: The server's figures sampled during a run (`ServerSample` fields).
SERVER_FIGURES = ("busy_slots", "deferred", "context_used", "generated_per_s", "prompt_per_s")


def _ms(seconds: float | None, digits: int = 4) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, digits)


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 2)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class RequestRecord:
    """One request as measured (times in seconds; ``started`` counts from the run's start)."""

    index: int
    started: float = 0.0  # when its first byte left
    latency: float = 0.0  # end-to-end, or until the failure
    # from the generator's start on it to its first byte written: the client's own work
    # and the connection's opening, in no latency
    send_delay: float = 0.0
    ttft: float | None = None  # streaming only
    itl: list[float] = field(default_factory=list)  # streaming only
    output_tokens: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    server_ttft: float | None = None
    server_tpot: float | None = None
    server_latency: float | None = None
    server_output_tokens: int | None = None
    draft_tokens: int | None = None  # speculative decoding: drafted, and accepted
    draft_accepted: int | None = None
    scheduled: float | None = None  # open loop: when it was due to leave
    session: int | None = None  # a multi-turn session's number, and this request's turn
    turn: int | None = None
    history_tokens: int = 0  # tokens of the session so far: the cache may hold them
    chunks: int = 0  # stream chunks received
    model: str | None = None
    response_id: str | None = None  # the answer's own id: the server's logs may name it
    # token times by the kernel's receive stamps: the most the generator read one late
    # (None: its token times are the event loop's own, not the kernel's)
    read_lag: float | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def lag(self) -> float | None:
        """Open loop: how late the generator sent it (its schedule slipped by this much)."""
        return None if self.scheduled is None else max(self.started - self.scheduled, 0.0)

    @property
    def tpot(self) -> float | None:
        """Client-side time per output token after the first (streaming only)."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    def add_server(self, timings: Timings | None) -> None:
        if timings is None:
            return
        self.server_ttft = timings.ttft_s
        self.server_tpot = timings.tpot_s
        self.server_latency = timings.e2e_s
        if timings.predicted_n is not None:
            self.server_output_tokens = timings.predicted_n
        self.draft_tokens = timings.draft_n
        self.draft_accepted = timings.draft_n_accepted

    def to_dict(self) -> dict[str, Any]:
        """The record in milliseconds, without the per-chunk gaps."""

        def ms(value: float | None) -> float | None:
            return _ms(value, 3)

        return {
            "index": self.index,
            "ok": self.ok,
            "start_ms": ms(self.started),
            "lag_ms": ms(self.lag),
            "session": self.session,
            "turn": self.turn,
            "e2e_ms": ms(self.latency),
            "send_delay_ms": ms(self.send_delay),
            "ttft_ms": ms(self.ttft),
            "tpot_ms": ms(self.tpot),
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "server_ttft_ms": ms(self.server_ttft),
            "server_tpot_ms": ms(self.server_tpot),
            "server_e2e_ms": ms(self.server_latency),
            "draft_tokens": self.draft_tokens,
            "draft_accepted": self.draft_accepted,
            "response_id": self.response_id,
            "read_lag_ms": ms(self.read_lag),
            "error_type": self.error_type,
            "error": self.error,
        }


@dataclass(frozen=True)
class TurnSummary:
    """One turn of a multi-turn run's sessions: its requests, their TTFT (client and
    server, ms), prompt tokens and tokens the server's cache served."""

    turn: int
    requests: int
    completed: int
    ttft: Summary | None
    server_ttft: Summary | None
    prompt_tokens: Summary | None
    cached_tokens: Summary | None

    def to_dict(self) -> dict[str, Any]:
        def of(found: Summary | None) -> dict[str, float | int] | None:
            return None if found is None else found.to_dict()

        return {
            "turn": self.turn,
            "requests": self.requests,
            "completed": self.completed,
            "ttft_ms": of(self.ttft),
            "server_ttft_ms": of(self.server_ttft),
            "prompt_tokens": of(self.prompt_tokens),
            "cached_tokens": of(self.cached_tokens),
        }


@dataclass
class RunResult:
    """Every request of one run at one level (a concurrency, or an open-loop schedule of
    arrivals), what they add up to, the server as sampled meanwhile, and the CPU time the
    generator itself spent."""

    concurrency: int | None
    stream: bool
    max_tokens: int
    records: list[RequestRecord]
    duration: float  # seconds from the first request's start to the last one's end
    arrivals: Arrivals | None = None
    server: list[ServerSample] = field(default_factory=list)
    server_failures: int = 0  # scrapes of /metrics or /slots that failed during the run
    cpu_seconds: float | None = None  # the generator's process CPU time during the run
    cache_prefix_tokens: int | None = None  # what the cache may serve without a warning
    replayed: bool = False  # a trace sent at its recorded times
    gpu: GpuSummary | None = None  # the machine's GPUs meanwhile (bench --gpu)
    # how long the generator's event loop left bytes waiting in its sockets (seconds),
    # probed all through the run (`_delay_probe`)
    delays: list[float] = field(default_factory=list)
    workers: int = 1  # the processes that sent its requests (each with its event loop)
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES  # those its reports give

    @property
    def rate(self) -> float | None:
        """The open-loop rate asked for (requests per second); None for a closed loop."""
        return None if self.arrivals is None else self.arrivals.rate

    @property
    def level(self) -> str:
        if self.replayed:
            return "trace replay"
        return (
            f"{self.rate:g} req/s" if self.rate is not None else f"concurrency {self.concurrency}"
        )

    def lag(self) -> Summary | None:
        """How late the generator sent its open-loop requests, in milliseconds."""
        found = Summary.of(r.lag for r in self.records if r.lag is not None)
        return None if found is None else found.scaled(1000.0)

    def cached(self) -> Summary | None:
        """Prompt tokens per request the server took from its cache."""
        return Summary.of(
            r.cached_tokens for r in self.records if r.ok and r.cached_tokens is not None
        )

    def cache_hit_ratio(self) -> float | None:
        """Of the prompt tokens of the completed requests whose answers said how many came
        from the server's cache, the share that did; None when no answer said."""
        said = [
            r for r in self.records
            if r.ok and r.cached_tokens is not None and r.prompt_tokens
        ]  # fmt: skip
        prompt = sum(r.prompt_tokens or 0 for r in said)
        return sum(r.cached_tokens or 0 for r in said) / prompt if prompt else None

    def cache_warning(self) -> str | None:
        """Words for the reader when the server's cache served more of some prompts than
        the chat template's fixed prefix (and any prefix shared on purpose): then the run
        measured the cache too."""
        cached = self.cached()
        if cached is None or self.cache_prefix_tokens is None:
            return None
        allowed = self.cache_prefix_tokens + CACHE_SLACK_TOKENS
        over = [
            r for r in self.records
            if r.ok and (r.cached_tokens or 0) > allowed + r.history_tokens
        ]  # fmt: skip
        if not over:
            return None
        return (
            f"{len(over)} of {self.completed} requests found more than {allowed} prompt "
            f"tokens in the server's cache (up to {cached.max:.0f}; the chat template's "
            f"prefix and any shared prefix are {self.cache_prefix_tokens}): prompts were "
            "sent twice, or begin alike, so this run measured the prompt cache too"
        )

    # The generator's CPU is its whole process's (every thread: an OTLP exporter's too).

    def cpu_per_request(self) -> float | None:
        """The generator's CPU seconds per request."""
        return (
            None
            if self.cpu_seconds is None or not self.records
            else self.cpu_seconds / len(self.records)
        )

    def cpu_per_chunk(self) -> float | None:
        """The generator's CPU seconds per stream chunk received."""
        chunks = sum(r.chunks for r in self.records)
        return None if self.cpu_seconds is None or not chunks else self.cpu_seconds / chunks

    def generator_delay(self) -> Summary | None:
        """How late the generator took what arrived on its sockets, in milliseconds: each
        client-side time (a token's, the end's) may read late by this much."""
        found = Summary.of(self.delays)
        return None if found is None else found.scaled(1000.0)

    def read_lag(self) -> Summary | None:
        """Where token times are the kernel's receive stamps: the most each request's
        tokens waited in the generator before it read them (ms). Not in any latency."""
        found = Summary.of(r.read_lag for r in self.records if r.read_lag is not None)
        return None if found is None else found.scaled(1000.0)

    def kernel_timed(self) -> bool:
        """Whether every streamed request's token times are the kernel's receive stamps
        (the generator's own delay is then in none of them)."""
        timed = [r for r in self.records if r.ok and r.ttft is not None]
        return bool(timed) and all(r.read_lag is not None for r in timed)

    def send_delay(self) -> Summary | None:
        """How long the requests waited in the generator before their first byte left
        (its own work, a new connection's opening), in milliseconds. Not in any latency:
        a closed-loop run whose requests wait here has fewer of them in flight than it
        was asked for."""
        found = Summary.of(r.send_delay for r in self.records if r.send_delay)
        return None if found is None else found.scaled(1000.0)

    def in_flight(self) -> float | None:
        """The requests in flight on average over the run (their latencies over its
        duration): below a closed loop's concurrency by its start and end, and by any
        wait in the generator before they left."""
        if self.duration <= 0 or not self.records:
            return None
        return sum(r.latency for r in self.records) / self.duration

    def send_warning(self) -> str | None:
        """Words for the reader when the requests waited in the generator (median) more
        than `DELAY_SHARE` of the median TTFT (or end-to-end latency) before leaving, and
        more than `SEND_DELAY_FLOOR_MS` (opening a connection alone takes about one)."""
        waited = self.send_delay()
        if waited is None:
            return None
        for metric, name in (("ttft", "time to first token"), ("e2e", "end-to-end latency")):
            found = self.summary(metric)
            if found is None:
                continue
            if waited.median > max(DELAY_SHARE * found.median, SEND_DELAY_FLOOR_MS):
                in_flight = self.in_flight()
                fewer = (
                    f" ({in_flight:,.1f} in flight on average, of {self.concurrency} asked for)"
                    if in_flight is not None and self.concurrency is not None
                    else ""
                )
                return (
                    f"requests waited {waited.median:,.1f} ms (median; p99 {waited.p99:,.1f} ms) "
                    f"in the generator before leaving, more than a tenth of the median {name} "
                    f"({found.median:,.1f} ms): the load sent was lighter than asked for{fewer}; "
                    "more --workers send it"
                )
            return None
        return None

    def read_together(self) -> float | None:
        """The share of streamed tokens that came in one read with the next one (a gap of
        exactly 0): their times are the later one's, the newest bytes' arrival. Tokens
        the server sent together are among them; so are those a late generator found
        waiting together."""
        gaps = [gap for r in self.records if r.ok for gap in r.itl]
        return None if not gaps else sum(1 for gap in gaps if gap == 0.0) / len(gaps)

    def delay_warning(self) -> str | None:
        """Words for the reader when the generator's own delay skews what it measured.

        Token times by the event loop's reading (no kernel stamps): when the delay's p99
        is more than `DELAY_SHARE` of the median client-side TTFT or ITL. By the kernel's
        stamps, a token reads late only when the loop read it after the next one came,
        and took the next one's time: when the read lag's p99 is past the median ITL and
        more than `DELAY_SHARE` of the tokens came in one read with the next."""
        if self.kernel_timed():
            lag, itl = self.read_lag(), self.summary("itl")
            together = self.read_together() or 0.0
            if lag is None or itl is None or lag.p99 <= itl.median or together <= DELAY_SHARE:
                return None
            return (
                f"the generator read tokens up to {lag.p99:,.1f} ms (p99) after the kernel "
                f"received them, more than the median inter-token latency ({itl.median:,.1f} "
                f"ms): {together:.0%} of the tokens came in one read with the next, and "
                "took its time; fewer streams per generator (--workers) measure the server "
                "better"
            )
        delay = self.generator_delay()
        if delay is None:
            return None
        for metric, name in (("itl", "inter-token latency"), ("ttft", "time to first token")):
            found = self.summary(metric)
            if found is not None and found.median > 0 and delay.p99 > DELAY_SHARE * found.median:
                return (
                    f"the generator itself took up to {delay.p99:,.1f} ms (p99; median "
                    f"{delay.median:,.2f} ms) to read what the server sent, "
                    f"{delay.p99 / found.median:.0%} of the median {name} "
                    f"({found.median:,.1f} ms): client-side latencies read late by up to that; "
                    "fewer streams per generator (--workers) measure the server better"
                )
        return None

    def generator_load(self) -> float | None:
        """The generator's CPU time over the run's wall time: near 1.0, its one event loop
        was the bottleneck, and the latencies include its own delays."""
        if self.cpu_seconds is None or self.duration <= 0:
            return None
        return self.cpu_seconds / self.duration

    def server_summary(self, field_name: str) -> Summary | None:
        """A sampled server figure over the run (``busy_slots``, ``deferred``,
        ``context_used``, ``generated_per_s``, ``prompt_per_s``)."""
        return Summary.of(
            float(v) for v in (getattr(s, field_name) for s in self.server) if v is not None
        )

    @property
    def total_slots(self) -> int | None:
        return next((s.total_slots for s in self.server if s.total_slots), None)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.records if r.ok)

    @property
    def errors(self) -> int:
        """Requests that did not complete: failed, or unfinished (`unfinished` of them)."""
        return self.requests - self.completed

    @property
    def unfinished(self) -> int:
        """Requests still in flight, or never sent, when the run stopped waiting for them."""
        return sum(1 for r in self.records if r.error_type == UNFINISHED)

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
    def input_throughput(self) -> float:
        """Prompt (input) tokens per second the server read, over all requests together."""
        return self.input_tokens / self.duration if self.duration > 0 else 0.0

    @property
    def output_throughput(self) -> float:
        """Generated tokens per second, over all requests together."""
        return self.output_tokens / self.duration if self.duration > 0 else 0.0

    @property
    def model(self) -> str | None:
        return next((r.model for r in self.records if r.model), None)

    @property
    def draft_acceptance(self) -> float | None:
        """Of the tokens the server drafted (speculative decoding), the share it accepted,
        over the completed requests; None when it drafted none."""
        done = [r for r in self.records if r.ok and r.draft_tokens]
        drafted = sum(r.draft_tokens or 0 for r in done)
        if not drafted:
            return None
        return sum(r.draft_accepted or 0 for r in done) / drafted

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

    def quantiles(self, metric: str, side: str = "client") -> dict[str, float] | None:
        """``metric``'s `percentiles` in milliseconds, by name (``p50``, ``p99.9``); None
        when nothing measured it."""
        ordered = sorted(self.values(metric, side))
        if not ordered:
            return None
        return {percentile_name(q): percentile(ordered, q) * 1000.0 for q in self.percentiles}

    def summary(self, metric: str, side: str = "client") -> Summary | None:
        """The distribution of ``metric`` in milliseconds (None when nothing measured it)."""
        found = Summary.of(self.values(metric, side))
        return None if found is None else found.scaled(1000.0)

    def by_turn(self) -> list[TurnSummary]:
        """A multi-turn run's figures turn by turn (empty for single requests): how TTFT
        and the prompt cache change as a session's history grows."""
        turns = sorted({r.turn for r in self.records if r.turn is not None})
        found = []
        for turn in turns:
            mine = [r for r in self.records if r.turn == turn]
            done = [r for r in mine if r.ok]
            ttft = Summary.of(r.ttft for r in done if r.ttft is not None)
            server = Summary.of(r.server_ttft for r in done if r.server_ttft is not None)
            found.append(TurnSummary(
                turn=turn, requests=len(mine), completed=len(done),
                ttft=None if ttft is None else ttft.scaled(1000.0),
                server_ttft=None if server is None else server.scaled(1000.0),
                prompt_tokens=Summary.of(r.prompt_tokens for r in done if r.prompt_tokens),
                cached_tokens=Summary.of(
                    r.cached_tokens for r in done if r.cached_tokens is not None
                ),
            ))  # fmt: skip
        return found

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
            sides: dict[str, Any] = {}
            for side in ("client", "server"):
                found = self.summary(metric, side)
                entry: dict[str, Any] | None = None if found is None else dict(found.to_dict())
                asked = self.quantiles(metric, side)
                if entry is not None and asked is not None:
                    entry["percentiles"] = {k: round(v, 3) for k, v in asked.items()}
                sides[side] = entry
            metrics[f"{metric}_ms"] = sides
        server: dict[str, Any] = {}
        for name in SERVER_FIGURES:
            found = self.server_summary(name)
            server[name] = None if found is None else found.to_dict()
        lag, cached, delay = self.lag(), self.cached(), self.generator_delay()
        sent, read_lag = self.send_delay(), self.read_lag()
        data: dict[str, Any] = {
            "level": self.level,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "replay": self.replayed,
            "arrivals": None if self.arrivals is None else asdict(self.arrivals),
            "stream": self.stream,
            "max_tokens": self.max_tokens,
            "requests": self.requests,
            "completed": self.completed,
            "errors": self.errors,
            "unfinished": self.unfinished,
            "duration_s": round(self.duration, 6),
            "request_throughput": round(self.request_throughput, 6),
            "output_throughput": round(self.output_throughput, 6),
            "input_throughput": round(self.input_throughput, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model": self.model,
            "draft_acceptance": self.draft_acceptance,
            "lag_ms": None if lag is None else lag.to_dict(),
            "cached_tokens": None if cached is None else cached.to_dict(),
            "cache_hit_ratio": _round(self.cache_hit_ratio(), 4),
            "cache_prefix_tokens": self.cache_prefix_tokens,
            "cache_warning": self.cache_warning(),
            "generator": {
                "cpu_s": None if self.cpu_seconds is None else round(self.cpu_seconds, 6),
                "cpu_per_request_ms": _ms(self.cpu_per_request()),
                "cpu_per_chunk_us": _us(self.cpu_per_chunk()),
                "load": None
                if self.generator_load() is None
                else round(self.generator_load() or 0, 4),
                "workers": self.workers,
                "send_delay_ms": None if sent is None else sent.to_dict(),
                "in_flight_mean": _round(self.in_flight(), 3),
                "send_warning": self.send_warning(),
                "delay_ms": None if delay is None else delay.to_dict(),
                "delay_warning": self.delay_warning(),
                "kernel_timed": self.kernel_timed(),
                "read_lag_ms": None if read_lag is None else read_lag.to_dict(),
                "tokens_read_together": _round(self.read_together(), 4),
            },
            "server": {"total_slots": self.total_slots, **server},
            "server_samples": [s.to_dict() for s in self.server],
            "server_sample_failures": self.server_failures,
            "gpu": None if self.gpu is None else self.gpu.to_dict(self.output_tokens),
            "metrics": metrics,
            "by_turn": [turn.to_dict() for turn in self.by_turn()] or None,
            "error_types": self.error_types(),
            "error_samples": self.error_samples(),
        }
        if per_request:
            data["per_request"] = [r.to_dict() for r in self.records]
        return data
