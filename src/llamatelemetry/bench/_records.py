"""What a load run measured: a `RequestRecord` per request, timed from the client's side
and from the server's own ``timings``, and a `RunResult` per concurrency level that adds
them up.

Client-side, per request: TTFT (request sent to the first chunk with generated text),
ITL (the gaps between chunks with text), TPOT ((end-to-end - TTFT) / (output tokens - 1))
and end-to-end latency. Server-side, from llama.cpp's ``timings``: its ``ttft_s``,
``tpot_s`` and ``e2e_s`` (``prompt_ms``, ``predicted_ms / (predicted_n - 1)``, their sum).
The difference between the two sides is time spent queueing for a slot and on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..api import Timings
from ._stats import Summary

__all__ = ["METRICS", "METRIC_TITLES", "RequestRecord", "RunResult"]

#: The latency metrics, in the order they are shown.
METRICS = ("ttft", "tpot", "itl", "e2e")
METRIC_TITLES = {
    "ttft": "Time to first token",
    "tpot": "Time per output token",
    "itl": "Inter-token latency",
    "e2e": "End-to-end latency",
}
ERROR_SAMPLES = 5  # distinct error messages kept per run


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
    draft_tokens: int | None = None  # speculative decoding: drafted, and accepted
    draft_accepted: int | None = None
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
            "draft_tokens": self.draft_tokens,
            "draft_accepted": self.draft_accepted,
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
            "draft_acceptance": self.draft_acceptance,
            "metrics": metrics,
            "error_types": self.error_types(),
            "error_samples": self.error_samples(),
        }
        if per_request:
            data["per_request"] = [r.to_dict() for r in self.records]
        return data
