"""One measured record per API call of the demo; the summary (table or JSON) is built from them.

`measured_call` is the single place every demo call passes through: the hook that ties
each record to the OpenTelemetry span(s) its call produced (``span_ids``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from ..api import APIStatusError, Timings, Usage

__all__ = ["CallRecord", "SpanLog", "measured_call"]

Status = Literal["ok", "skipped", "error"]


@dataclass
class CallRecord:
    """What one API call did and how long it took (milliseconds; tokens when known)."""

    operation: str
    endpoint: str
    status: Status = "ok"
    latency_ms: float = 0.0
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    server_prompt_ms: float | None = None
    server_predicted_per_second: float | None = None
    first_chunk_ms: float | None = None
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    span_ids: list[str] = field(default_factory=list)
    started_at: float = field(default=0.0, repr=False)

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.perf_counter() - self.started_at) * 1000.0

    def add_usage(self, usage: Usage | None) -> None:
        """Take the token counts of an OpenAI-style ``usage``."""
        if usage is not None:
            self.prompt_tokens = usage.prompt_tokens
            self.completion_tokens = usage.completion_tokens

    def add_timings(self, timings: Timings | None) -> None:
        """Take llama.cpp's own measurements of the request."""
        if timings is not None:
            self.server_prompt_ms = timings.prompt_ms
            self.server_predicted_per_second = timings.predicted_per_second

    def skip(self, error: APIStatusError) -> None:
        """Mark the call as one this server cannot do, keeping the server's own message."""
        self.status = "skipped"
        self.summary = f"skipped: {error.message} (HTTP {error.status_code})"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        data = asdict(self)
        del data["started_at"]
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


class SpanLog(Protocol):
    """Where the demo's finished spans are collected (see `_telemetry.DemoTelemetry`)."""

    def mark(self) -> int:
        """A position in the log: the spans finished so far."""
        ...

    def ids_since(self, mark: int) -> list[str]:
        """The ids of the spans finished after ``mark``."""
        ...


@contextmanager
def measured_call(
    calls: list[CallRecord], operation: str, endpoint: str, spans: SpanLog | None = None
) -> Iterator[CallRecord]:
    """TELEMETRY HOOK: every API call of the demo runs inside this block.

    Measures the client-side latency and appends the finished record to ``calls``, also
    when the call raises (status "error"). With ``spans``, the record keeps the ids of the
    spans the call finished: the instrumented client's CLIENT span (a stream's ends when
    the stream is closed, inside the block).
    """
    mark = spans.mark() if spans is not None else 0
    record = CallRecord(operation, endpoint, started_at=time.perf_counter())
    try:
        yield record
    except BaseException:
        record.status = "error"
        raise
    finally:
        record.latency_ms = record.elapsed_ms()
        if spans is not None:
            record.span_ids = spans.ids_since(mark)
        calls.append(record)
