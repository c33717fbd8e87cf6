"""One measured record per API call of the demo; the summary (table or JSON) is built from them.

`measured_call` is the single place every demo call passes through: the hook where
OpenTelemetry spans will be attached.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..api import APIStatusError, Timings, Usage

__all__ = ["CallRecord", "measured_call"]

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


@contextmanager
def measured_call(calls: list[CallRecord], operation: str, endpoint: str) -> Iterator[CallRecord]:
    """TELEMETRY HOOK: every API call of the demo runs inside this block.

    Measures the client-side latency and appends the finished record to ``calls``, also
    when the call raises (status "error"). One OpenTelemetry span per record belongs here.
    """
    record = CallRecord(operation, endpoint, started_at=time.perf_counter())
    try:
        yield record
    except BaseException:
        record.status = "error"
        raise
    finally:
        record.latency_ms = record.elapsed_ms()
        calls.append(record)
