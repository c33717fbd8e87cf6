"""The GenAI client and server histograms, with the semantic conventions' units and buckets."""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter

from ..api import Timings
from . import _recorder
from ._attributes import count
from ._bulk import record_many
from ._recorder import Points

__all__ = [
    "GenAIMetrics",
    "metric_point",
    "TOKEN_BUCKETS",
    "DURATION_BUCKETS",
    "TTFT_BUCKETS",
    "TPOT_BUCKETS",
]

TOKEN_BUCKETS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
DURATION_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
]
ACCEPTANCE_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]

# The attributes a metric point carries: low-cardinality ones only (never ids or content).
_METRIC_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
    "error.type",
    "llama_cpp.cold_start",  # only on calls that waited for a model load
)


def metric_point(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: attributes[k] for k in _METRIC_KEYS if k in attributes}


def prompt_split(attributes: dict[str, Any]) -> tuple[int, int] | None:
    """An answer's prompt tokens as (taken from the cache, evaluated): llama.cpp's timings
    say both, the usage of an OpenAI-style answer says the whole and the cached part."""
    cached = count(attributes.get("llama_cpp.timings.cache_n"))
    evaluated = count(attributes.get("llama_cpp.timings.prompt_n"))
    if cached is not None and evaluated is not None:
        return cached, evaluated
    whole = count(attributes.get("gen_ai.usage.input_tokens"))
    cached = count(attributes.get("gen_ai.usage.cache_read.input_tokens"))
    if whole is not None and cached is not None and cached <= whole:
        return cached, whole - cached
    return None


# A point's attributes with each token type added, by the point's attributes: built once.
_typed_points: dict[Any, tuple[tuple[str, dict[str, Any], Any], ...]] = {}


class GenAIMetrics:
    """One instance per meter. Points go through the process's deferred recorder, so the
    caller's thread only queues them (see ``_recorder``)."""

    __slots__ = (
        "token_usage",
        "duration",
        "time_to_first_chunk",
        "time_per_output_chunk",
        "server_ttft",
        "server_tpot",
        "acceptance",
        "cached_prompt_tokens",
        "evaluated_prompt_tokens",
        "_recorder",
    )

    def __init__(self, meter: Meter) -> None:
        self._recorder = _recorder.recorder

        def histogram(name: str, unit: str, description: str, buckets: list[Any]) -> Histogram:
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )

        self.token_usage = histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used.",
            TOKEN_BUCKETS,
        )
        self.duration = histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration.", DURATION_BUCKETS
        )
        self.time_to_first_chunk = histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
            "Time from issuing a streaming request to receiving its first chunk.",
            TTFT_BUCKETS,
        )
        self.time_per_output_chunk = histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            "s",
            "Time between consecutive chunks of a streaming response.",
            TPOT_BUCKETS,
        )
        self.server_ttft = histogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time the server took to its first output token (llama.cpp's prompt_ms).",
            TTFT_BUCKETS,
        )
        self.server_tpot = histogram(
            "gen_ai.server.time_per_output_token",
            "s",
            "Time per output token after the first (llama.cpp's predicted_ms / (n - 1)).",
            TPOT_BUCKETS,
        )
        self.acceptance = histogram(
            "llama_cpp.speculative.acceptance_rate",
            "1",
            "Share of the drafted tokens the model accepted, per request (speculative decoding).",
            ACCEPTANCE_BUCKETS,
        )
        self.cached_prompt_tokens = meter.create_counter(
            "llama_cpp.client.cached_prompt_tokens",
            unit="{token}",
            description="Prompt tokens the server took from its prompt cache, per the answers.",
        )
        self.evaluated_prompt_tokens = meter.create_counter(
            "llama_cpp.client.evaluated_prompt_tokens",
            unit="{token}",
            description="Prompt tokens the server evaluated (not from its cache), per the answers.",
        )
        self._recorder.attach(meter)

    def record(
        self,
        attributes: dict[str, Any],
        duration: float,
        context: Context | None = None,
        timings: Timings | None = None,
        client: bool = True,
    ) -> None:
        """Record one finished operation from its final span attributes (which must not
        change after) and the server's timings; ``context`` is the operation's own, for
        exemplars. ``client=False``: the server's figures only (another instrumentation
        records the client's: duration and tokens)."""
        self._recorder.defer_points(
            self._add_operation, duration, (attributes, timings, client), context
        )

    def record_first_chunk(
        self, seconds: float, point: dict[str, Any], context: Context | None
    ) -> None:
        """A stream's time to its first chunk."""
        self._recorder.defer_points(self._add_first_chunk, seconds, point, context)

    def record_chunk_gaps(
        self, gaps: list[float], point: dict[str, Any], context: Context | None
    ) -> None:
        """Times between consecutive chunks of one stream (``gaps`` must not change
        after): one queued entry, each value a point of ``time_per_output_chunk``."""
        self._recorder.defer(self._record_gaps, gaps, point, context)

    def _record_gaps(
        self, gaps: list[float], point: dict[str, Any], context: Context | None
    ) -> None:
        record_many(self.time_per_output_chunk, gaps, point, context)

    def _add_first_chunk(
        self, points: Points, seconds: float, point: dict[str, Any], context: Context | None
    ) -> None:
        points.add(self.time_to_first_chunk, seconds, point, context)

    def _add_operation(
        self,
        points: Points,
        duration: float,
        operation: tuple[dict[str, Any], Timings | None, bool],
        context: Context | None,
    ) -> None:
        attributes, timings, client = operation
        point = metric_point(attributes)
        items = tuple(point.items())
        if client:
            points.add(self.duration, duration, point, context, items)
        if "error.type" in point:
            return
        if client:
            self._add_tokens(points, attributes, items, context)
        split = prompt_split(attributes)
        if split is not None:
            points.count(self.cached_prompt_tokens, split[0], point, context, items)
            points.count(self.evaluated_prompt_tokens, split[1], point, context, items)
        if timings is None:
            return
        ttft = timings.ttft_s
        if ttft is not None:
            points.add(self.server_ttft, ttft, point, context, items)
        tpot = timings.tpot_s
        if tpot is not None:
            points.add(self.server_tpot, tpot, point, context, items)
        acceptance = timings.draft_acceptance
        if acceptance is not None:
            points.add(self.acceptance, acceptance, point, context, items)

    def _add_tokens(
        self,
        points: Points,
        attributes: dict[str, Any],
        items: tuple[tuple[str, Any], ...],
        context: Context | None,
    ) -> None:
        typed = _typed_points.get(items)
        if typed is None:
            if len(_typed_points) >= 1024:  # points are few; bound it anyway
                _typed_points.clear()
            typed = _typed_points[items] = tuple(
                (key, dict(kind), kind)
                for key, kind in (
                    ("gen_ai.usage.input_tokens", (*items, ("gen_ai.token.type", "input"))),
                    ("gen_ai.usage.output_tokens", (*items, ("gen_ai.token.type", "output"))),
                )
            )
        for key, typed_point, typed_items in typed:
            tokens = attributes.get(key)
            if tokens is not None:
                points.add(self.token_usage, tokens, typed_point, context, typed_items)
