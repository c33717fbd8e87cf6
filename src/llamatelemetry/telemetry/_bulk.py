"""Many values of one histogram with one set of attributes, at a fraction of the SDK's cost.

A stream records the time between every two of its chunks. The SDK's ``Histogram.record``
cleans, hashes and looks up the attributes for each value (about 12 µs, more than the
client spends reading the chunk), though all the values of a stream share them. Here the
first value goes through ``record`` (which creates the point and validates everything),
and the others go straight into the aggregations that ``record`` found, each reader's own:
the count, sum, min, max and buckets come out exactly as if every value had been recorded.
The stream's span is offered as an exemplar with a batch's last value (and its first, when
the first goes through ``record``). Once a point's aggregations are known, the next batches
and single values (``record_one``) go straight to them.

``record_points`` does the same for the points of many operations that share attributes
(the deferred recorder's batches), each value with its own operation's context: only the
exemplars the default reservoir would keep are offered.

This reaches into the SDK's objects; whenever they are not as expected (another SDK, a
proxy instrument, a newer version, a point past the cardinality limit) every value goes
through ``record``. And names that are all there may mean something else in another
release, so before the first value goes straight to an aggregation, a check proves the
copied arithmetic on the installed SDK: fixed values (on bucket boundaries, between them,
past the last, with two sets of attributes, sampled and unsampled spans, collections in
between) are recorded both ways into throwaway providers, one with a cumulative reader and
one with a delta reader, and every exported figure must be the same: count, sum, min, max,
buckets, bounds, attributes, and the exemplars of ``record_one`` and ``record_points``
(under the trace-based filter and under the one that offers every value). If any differs, every
value goes through ``record``, and one DEBUG line on ``llamatelemetry.telemetry`` says why.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram
from opentelemetry.trace import INVALID_SPAN, get_current_span

from .._fastpath import FastPath

__all__ = ["FAST_PATH", "record_many", "record_one", "record_points"]

log = logging.getLogger("llamatelemetry.telemetry")

try:
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation as _ExplicitBuckets,
    )
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
except ImportError:  # another SDK, or none
    _hash_attributes = None  # type: ignore[assignment]
    Measurement = None  # type: ignore[assignment,misc]
    _ExplicitBuckets = None  # type: ignore[assignment,misc]


def record_many(
    histogram: Histogram,
    values: Sequence[float],
    attributes: Mapping[str, Any],
    context: Context | None = None,
) -> None:
    """``histogram.record(value, attributes, context)`` for every value, in order."""
    _record(histogram, values, attributes, context, False)


def _record(
    histogram: Histogram,
    values: Sequence[float],
    attributes: Mapping[str, Any],
    context: Context | None,
    checking: bool,
) -> None:
    """``record_many``; ``checking``: for the check, so the fast path is not yet trusted."""
    kept = [value for value in values if 0 <= value < math.inf]  # NaN is not either
    if len(kept) < len(values):  # record refuses those values, and says so
        for value in values:
            if not 0 <= value < math.inf:
                histogram.record(value, attributes, context)
    if not kept:
        return
    targets = _known_targets(histogram, attributes)
    if targets is None:  # the first value makes the point, and finds its aggregations
        histogram.record(kept[0], attributes, context)
        kept = kept[1:]
        targets = _remember(histogram, attributes) if checking or FAST_PATH.trusted else None
        if targets is None:
            for value in kept:
                histogram.record(value, attributes, context)
            return
        if not kept:
            return
    now = time.time_ns()
    instrument: Any = histogram
    context = context or get_current()  # as record does
    *middle, last = kept
    # Not offered as an exemplar, a measurement is read for its value only and not kept:
    # one serves them all (a frozen dataclass, hence object.__setattr__).
    carrier = Measurement(0.0, now, instrument, context)
    for aggregation in targets:
        if not _add_to_buckets(aggregation, middle):
            for value in middle:
                object.__setattr__(carrier, "value", value)
                aggregation.aggregate(carrier, False)
    _offer(histogram, targets, Measurement(last, now, instrument, context, attributes))


def record_one(
    histogram: Histogram,
    value: float,
    attributes: Mapping[str, Any],
    context: Context | None = None,
) -> None:
    """``histogram.record(value, attributes, context)``; once a point has been recorded
    through ``record``, the next values of the same point go straight to its aggregations
    (at about half the cost: the attributes are not looked up again)."""
    record_many(histogram, (value,), attributes, context)


def _known_targets(histogram: Histogram, attributes: Mapping[str, Any]) -> list[Any] | None:
    """The aggregations of this point, when a value of it was recorded before and the
    histogram's readers are still the same ones."""
    try:
        known = _known.get((id(histogram), tuple(attributes.items())))
    except TypeError:  # an attribute value that cannot be hashed (a list)
        return None
    if known is None or known[0] is not histogram or known[1] is not _storages(histogram):
        return None  # another histogram at a reused id, or a reader added or removed since
    return known[2]


def _remember(histogram: Histogram, attributes: Mapping[str, Any]) -> list[Any] | None:
    """The aggregations ``record`` just used for this point, kept for the next values."""
    targets = _aggregations(histogram, attributes)
    if targets:
        try:
            key = (id(histogram), tuple(attributes.items()))
            if len(_known) >= MAX_KNOWN:
                _known.clear()
            _known[key] = (histogram, _storages(histogram), targets)
        except TypeError:  # not hashable: found again every time
            pass
    return targets


def _storages(histogram: Histogram) -> Any:
    return getattr(getattr(histogram, "_measurement_consumer", None), "_reader_storages", None)


def _offer(histogram: Any, targets: list[Any], measurement: Any) -> None:
    """``measurement`` into each aggregation, offered as an exemplar when the SDK's
    exemplar filter says so (as ``record`` does)."""
    sample = histogram._measurement_consumer._sdk_config.exemplar_filter.should_sample(
        measurement.value, measurement.time_unix_nano, measurement.attributes, measurement.context
    )
    for aggregation in targets:
        aggregation.aggregate(measurement, sample)


# The aggregations of the points record_one has seen: (histogram, its readers, them).
_known: dict[tuple[int, tuple[tuple[str, Any], ...]], tuple[Any, Any, list[Any]]] = {}
MAX_KNOWN = 4096


def _add_to_buckets(aggregation: Any, values: list[float]) -> bool:
    """What ``aggregate`` does for each value of an explicit-bucket histogram (the
    default), done for all of them under one hold of its lock; False for any other kind."""
    if type(aggregation) is not _ExplicitBuckets or not values:
        return not values
    buckets: Any = aggregation  # the SDK's own annotations of these fields are loose
    with buckets._lock:
        if buckets._value is None:
            buckets._value = buckets._get_empty_bucket_counts()
        counts, bounds, total = buckets._value, buckets._boundaries, buckets._sum
        for value in values:
            total += value  # in order, so the sum is the same to the last bit
            counts[bisect_left(bounds, value)] += 1
        buckets._sum = total
        if buckets._record_min_max:
            buckets._min = min(buckets._min, min(values))
            buckets._max = max(buckets._max, max(values))
    return True


def _aggregations(histogram: Histogram, attributes: Mapping[str, Any]) -> list[Any] | None:
    """Each reader's aggregation of ``attributes`` for ``histogram``, as ``record`` just
    used them; None when they cannot be found for certain."""
    if _hash_attributes is None or Measurement is None:
        return None
    try:
        if not histogram._is_enabled():  # type: ignore[attr-defined]
            return []
        storages = histogram._measurement_consumer._reader_storages  # type: ignore[attr-defined]
        found: list[Any] = []
        for storage in storages.values():
            matches = storage._instrument_view_instrument_matches.get(histogram)
            if not matches:
                return None
            for match in matches:
                if match._reset_on_collect:  # a delta reader's collection swaps aggregations
                    return None
                keys = match._view._attribute_keys
                kept = (
                    dict(attributes)
                    if keys is None
                    else {k: v for k, v in attributes.items() if k in keys}
                )
                aggregation = match._attributes_aggregation.get(_hash_attributes(kept))
                if aggregation is None:  # past the cardinality limit: the overflow point
                    return None
                found.append(aggregation)
        return found
    except (AttributeError, TypeError):
        log.debug("recording histogram values one by one", exc_info=True)
        return None


try:
    from opentelemetry.sdk.metrics._internal.exemplar import (
        AlignedHistogramBucketExemplarReservoir as _LastPerBucket,
    )
except ImportError:  # another SDK, or none
    _LastPerBucket = None  # type: ignore[assignment,misc]


def record_points(
    histogram: Histogram,
    values: Sequence[float],
    contexts: Sequence[Context | None],
    attributes: Mapping[str, Any],
) -> None:
    """``histogram.record(value, attributes, context)`` for each value and its own
    operation's context, in order: the points of many operations that share attributes.

    Counts, sum (added in the same order), min, max and buckets come out as ``record``
    makes them, and so do the exemplars: the default reservoir of a bucket histogram keeps
    the last value offered to each bucket, so only the last value of each bucket that the
    exemplar filter samples is offered (any other reservoir is offered every sampled
    value, as ``record`` would)."""
    _record_points(histogram, values, contexts, attributes, False)


def _record_points(
    histogram: Histogram,
    values: Sequence[float],
    contexts: Sequence[Context | None],
    attributes: Mapping[str, Any],
    checking: bool,
) -> None:
    """``record_points``; ``checking``: for the check, so the fast path is not yet trusted."""
    if len(values) == 1 or _LastPerBucket is None:
        for value, context in zip(values, contexts, strict=True):
            _record(histogram, (value,), attributes, context, checking)
        return
    kept = [i for i, value in enumerate(values) if 0 <= value < math.inf]
    if len(kept) < len(values):
        for i, value in enumerate(values):
            if not 0 <= value < math.inf:
                histogram.record(value, attributes, contexts[i])
    if not kept:
        return
    targets = _known_targets(histogram, attributes)
    if targets is None:  # the first value makes the point, and finds its aggregations
        first = kept.pop(0)
        histogram.record(values[first], attributes, contexts[first])
        targets = _remember(histogram, attributes) if checking or FAST_PATH.trusted else None
        if targets is None:
            for i in kept:
                histogram.record(values[i], attributes, contexts[i])
            return
        if not kept:
            return
    instrument: Any = histogram
    should_sample = instrument._measurement_consumer._sdk_config.exemplar_filter.should_sample
    now = time.time_ns()
    here = get_current()
    for aggregation in targets:
        offered = _offered(aggregation, values, contexts, kept, attributes, should_sample, now)
        run: list[float] = []
        for i in kept:
            if i in offered:
                if run and not _add_to_buckets(aggregation, run):
                    _one_by_one(aggregation, run, instrument, now, here)
                run = []
                aggregation.aggregate(
                    Measurement(values[i], now, instrument, offered[i], attributes), True
                )
            else:
                run.append(values[i])
        if run and not _add_to_buckets(aggregation, run):
            _one_by_one(aggregation, run, instrument, now, here)


def _offered(
    aggregation: Any,
    values: Sequence[float],
    contexts: Sequence[Context | None],
    kept: list[int],
    attributes: Mapping[str, Any],
    should_sample: Any,
    now: int,
) -> dict[int, Context]:
    """The values this aggregation's reservoir must be offered, with their contexts: of
    those the exemplar filter samples, the last of each bucket for the default reservoir
    (the filter is asked only about those that could be it), all for another."""
    here = get_current()
    offered: dict[int, Context] = {}
    reservoir = getattr(aggregation, "_reservoir", None)
    if type(aggregation) is not _ExplicitBuckets or type(reservoir) is not _LastPerBucket:
        for i in kept:
            context = contexts[i] or here  # as record does
            if should_sample(values[i], now, attributes, context):
                offered[i] = context
        return offered
    bounds = aggregation._boundaries
    # A bucket keeps its last offer's value, but the span of its last offer that had one
    # (the SDK does not clear it): when the last is spanless, the last with a span before
    # it is offered too.
    done: set[int] = set()
    spanless: set[int] = set()
    for i in reversed(kept):
        bucket = bisect_left(bounds, values[i])
        if bucket in done:
            continue
        context = contexts[i] or here
        has_span = get_current_span(context) != INVALID_SPAN
        if bucket in spanless and not has_span:
            continue
        if should_sample(values[i], now, attributes, context):
            offered[i] = context
            if has_span:
                done.add(bucket)
                spanless.discard(bucket)
            else:
                spanless.add(bucket)
    return offered


def _one_by_one(
    aggregation: Any, values: list[float], instrument: Any, now: int, context: Context
) -> None:
    carrier = Measurement(0.0, now, instrument, context)
    for value in values:
        object.__setattr__(carrier, "value", value)
        aggregation.aggregate(carrier, False)


# --- the self-check ------------------------------------------------------------------------

_BOUNDS = [0.0, 0.005, 0.01, 0.1, 1.0]
_BATCHES = [
    [0.005],  # a point's first value alone: through record
    [0.0, 0.005, 0.01, 0.0075, 0.1, 1.0, 2.5, 1e-9],  # every boundary, between, past the last
    [0.1, 0.2, 0.3, 0.1, 1e9, 0.01],  # a sum whose last bit depends on the order
    [1.0],
    [0.3, 0.3, 0.3, 0.005, 0.0],
    [0.01, 0.02],
    [0.02, 0.03, 0.04, 0.05, 0.06],  # a bucket's last offer without a span (points' fifth)
]
_SAMPLED = [1, 1, 0, 1, 0, 1, 1]  # the trace flags of each batch's span
_POINTS: list[Mapping[str, Any]] = [
    {"gen_ai.operation.name": "chat", "server.port": 8080},
    {"error.type": "x", "n": 1},
]


def _span(flags: int, n: int = 0) -> Context:
    span_context = trace.SpanContext(
        trace_id=0x5CE77E1E5CE77E1E5CE77E1E5CE77E1E,
        span_id=0x5CE77E1E5CE77E1E + flags + 2 * n,
        is_remote=False,
        trace_flags=trace.TraceFlags(flags),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _figures(reader: Any) -> list[Any]:
    """Every exported point's figures but its times (and but the exemplars of ``many``,
    which has only the first and last value of a batch offered by design)."""
    out = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    exemplars = sorted(
                        (e.value, e.span_id, e.trace_id, sorted(e.filtered_attributes.items()))
                        for e in point.exemplars
                        if metric.name in ("one", "points")
                    )
                    figures = (point.count, point.sum, point.min, point.max)
                    buckets = (tuple(point.bucket_counts), tuple(point.explicit_bounds))
                    attributes = sorted(point.attributes.items(), key=repr)
                    out.append((metric.name, attributes, figures, buckets, exemplars))
    return sorted(out, key=repr)


def _collected(delta: bool, direct: bool, every_exemplar: bool = False) -> list[Any]:
    """What a reader collects of the check's values; ``every_exemplar``: under the filter
    that offers every value (spanless ones too) as an exemplar, not only sampled spans'."""
    from opentelemetry.sdk.metrics import (
        AlwaysOnExemplarFilter,
        MeterProvider,
        TraceBasedExemplarFilter,
    )
    from opentelemetry.sdk.metrics import Histogram as SdkHistogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    temporality: dict[type, AggregationTemporality] | None = None
    if delta:
        temporality = {SdkHistogram: AggregationTemporality.DELTA}
    reader = InMemoryMetricReader(preferred_temporality=temporality)
    provider = MeterProvider(
        metric_readers=[reader],
        exemplar_filter=AlwaysOnExemplarFilter() if every_exemplar else TraceBasedExemplarFilter(),
        shutdown_on_exit=False,
    )
    made: list[Any] = []
    try:
        meter = provider.get_meter("llamatelemetry.check")
        for name in ("many", "one", "points"):
            made.append(
                meter.create_histogram(name, unit="s", explicit_bucket_boundaries_advisory=_BOUNDS)
            )
        many, one, points = made
        collected = []
        for i, batch in enumerate(_BATCHES):
            attributes, context = _POINTS[i % 2], _span(_SAMPLED[i])
            for value in batch:
                if direct:
                    _record(one, (value,), attributes, context, True)
                else:
                    one.record(value, attributes, context)
                    many.record(value, attributes, context)
            if direct:
                _record(many, batch, attributes, context, True)
            # Many operations' points at once, each with its own span, some with none.
            contexts = [None if n % 5 == 4 else _span(n % 2, n) for n in range(len(batch))]
            if direct:
                _record_points(points, batch, contexts, attributes, True)
            else:
                for value, own in zip(batch, contexts, strict=True):
                    points.record(value, attributes, own)
            if i % 2:
                collected.append(_figures(reader))
        collected.append(_figures(reader))
        return collected
    finally:
        provider.shutdown()
        for key in [key for key, known in _known.items() if known[0] in made]:
            del _known[key]


def _check() -> str | None:
    if _hash_attributes is None or Measurement is None:
        return "the SDK's private modules are not there"
    _known.clear()  # points remembered before a check (only after a test forgot one)
    for delta, every in ((False, False), (True, False), (False, True)):
        direct = _collected(delta, True, every)
        through_record = _collected(delta, False, every)
        if direct != through_record:
            reader = ("delta" if delta else "cumulative") + (", every exemplar" if every else "")
            pairs = zip(direct, through_record, strict=True)  # as many collections each
            n, (ours, theirs) = next((n, p) for n, p in enumerate(pairs) if p[0] != p[1])
            return f"collection {n + 1} of a {reader} reader: {ours!r}, by record {theirs!r}"
    return None


FAST_PATH = FastPath("histogram values straight into the SDK's aggregations", _check, log)
