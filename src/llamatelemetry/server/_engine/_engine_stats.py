"""`EngineStats`: what an `InferenceEngine` has done, counted by a thread-safe recorder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._inference_result import InferenceResult

__all__ = ["EngineStats"]


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of what the engine has done since it was created.

    ``requests`` counts every call sent to the server (each prompt of a batch, each
    embed call), whatever its outcome; ``failures`` those that raised, ``cancelled`` the
    streams closed before their end. Token, latency, TTFT and speed figures cover the
    ``generations`` that succeeded (embed calls are counted in ``embed_requests`` only).
    ``mean_tokens_per_second`` is the plain mean of the per-request server figures.
    Arguments rejected before sending are not counted.
    """

    requests: int
    generations: int
    embed_requests: int
    failures: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    total_latency_s: float
    mean_latency_s: float | None
    mean_ttft_s: float | None
    mean_tokens_per_second: float | None
    uptime_s: float


class _StatsRecorder:
    """Thread-safe accumulation (batch workers record concurrently)."""

    def __init__(self) -> None:
        # Reentrant: a stream closed by garbage collection may record from inside a
        # thread that already holds the lock.
        self._lock = threading.RLock()
        self.requests = 0
        self.generations = 0
        self.embed_requests = 0
        self.failures = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_latency_s = 0.0
        self.ttft_sum = 0.0
        self.ttft_n = 0
        self.tps_sum = 0.0
        self.tps_n = 0

    def request(self, *, embed: bool = False) -> None:
        with self._lock:
            self.requests += 1
            if embed:
                self.embed_requests += 1

    def failure(self) -> None:
        with self._lock:
            self.failures += 1

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    def success(self, result: InferenceResult) -> None:
        with self._lock:
            self.generations += 1
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            self.total_latency_s += result.latency_s
            if result.ttft_s is not None:
                self.ttft_sum += result.ttft_s
                self.ttft_n += 1
            if result.tokens_per_second is not None:
                self.tps_sum += result.tokens_per_second
                self.tps_n += 1

    def snapshot(self, uptime_s: float) -> EngineStats:
        with self._lock:
            return EngineStats(
                requests=self.requests,
                generations=self.generations,
                embed_requests=self.embed_requests,
                failures=self.failures,
                cancelled=self.cancelled,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                total_latency_s=self.total_latency_s,
                mean_latency_s=(
                    self.total_latency_s / self.generations if self.generations else None
                ),
                mean_ttft_s=self.ttft_sum / self.ttft_n if self.ttft_n else None,
                mean_tokens_per_second=self.tps_sum / self.tps_n if self.tps_n else None,
                uptime_s=uptime_s,
            )
