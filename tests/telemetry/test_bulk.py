"""``record_many`` leaves every reader's histogram exactly as ``record`` per value would."""

from __future__ import annotations

import logging
import math
import random
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import aggregation as aggregation_module
from opentelemetry.sdk.metrics._internal import measurement_consumer
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import set_span_in_context

from llamatelemetry.telemetry._bulk import record_many, record_one, record_points

POINT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny", "server.port": 8080}
BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]
DELTA = {Histogram: AggregationTemporality.DELTA}


def readers_for(setup: str) -> tuple[list[InMemoryMetricReader], list[View]]:
    if setup == "cumulative":
        return [InMemoryMetricReader()], []
    if setup == "delta":
        return [InMemoryMetricReader(preferred_temporality=DELTA)], []
    if setup == "two readers":
        return [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA)], []
    if setup == "view keeping one attribute":
        return [InMemoryMetricReader()], [View(instrument_name="h", attribute_keys={"server.port"})]
    if setup == "exponential view":
        view = View(instrument_name="h", aggregation=ExponentialBucketHistogramAggregation())
        return [InMemoryMetricReader()], [view]
    if setup == "two views":
        return [InMemoryMetricReader()], [
            View(instrument_name="h"),
            View(instrument_name="h", name="h.port", attribute_keys={"server.port"}),
        ]
    raise AssertionError(setup)


SETUPS = [
    "cumulative",
    "delta",
    "two readers",
    "view keeping one attribute",
    "exponential view",
    "two views",
]


def points(
    readers: list[InMemoryMetricReader], exemplars: bool = False, exact: bool = False
) -> list[Any]:
    """Everything exported but the timestamps (and the exemplars, unless asked for: their
    values and whether they have a span; ``exact``: which span and trace)."""
    out = []
    for reader in readers:
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        fields = {
                            k: v
                            for k, v in vars(point).items()
                            if k not in ("time_unix_nano", "start_time_unix_nano", "exemplars")
                        }
                        if exemplars:
                            fields["exemplars"] = sorted(
                                (e.value, e.span_id, e.trace_id, repr(e.filtered_attributes))
                                if exact
                                else (e.value, bool(e.span_id), repr(e.filtered_attributes))
                                for e in point.exemplars
                            )
                        out.append((metric.name, repr(sorted(fields.items()))))
    return sorted(out)


def run(
    setup: str,
    batches: list[list[float]],
    record: Callable[..., None],
    exemplars: bool = False,
    sampled: bool = True,
) -> list[Any]:
    # The SDK's exemplar reservoirs sample with the global random: the same draws for both
    # ways of recording, so that exemplars compare equal by design, not by luck.
    random.seed(f"exemplars of {setup}")
    readers, views = readers_for(setup)
    provider = MeterProvider(metric_readers=readers, views=views)
    histogram = provider.get_meter("t").create_histogram(
        "h", unit="s", explicit_bucket_boundaries_advisory=BUCKETS
    )
    tracer = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF).get_tracer("t")
    with tracer.start_as_current_span("stream") as span:
        context = set_span_in_context(span)
    collected = []
    for i, batch in enumerate(batches):
        record(histogram, batch, POINT if i % 3 else {**POINT, "error.type": "x"}, context)
        if i % 2:  # collections between batches: delta readers start afresh
            collected.append(points(readers, exemplars))
    collected.append(points(readers, exemplars))
    provider.shutdown()
    return collected


def one_by_one(histogram: Any, values: list[float], attributes: Any, context: Any) -> None:
    for value in values:
        histogram.record(value, attributes, context)


@pytest.mark.parametrize("setup", SETUPS)
def test_record_many_exports_what_record_per_value_does(setup: str) -> None:
    rng = random.Random(setup)
    batches = [
        [rng.choice((0.0, 0.005, 1e-7, 3.0)) if rng.random() < 0.1 else rng.expovariate(60)
         for _ in range(rng.choice((1, 2, 64, 200)))]
        for _ in range(9)
    ]  # fmt: skip
    expected = run(setup, batches, one_by_one)
    assert any(expected)
    assert run(setup, batches, record_many) == expected


def one_at_a_time(histogram: Any, values: list[float], attributes: Any, context: Any) -> None:
    for value in values:
        record_one(histogram, value, attributes, context)


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "not-sampled"])
@pytest.mark.parametrize("setup", SETUPS)
def test_record_one_exports_what_record_does_exemplars_included(setup: str, sampled: bool) -> None:
    rng = random.Random(setup)
    batches = [[rng.expovariate(60) for _ in range(rng.choice((1, 3, 20)))] for _ in range(9)]
    expected = run(setup, batches, one_by_one, exemplars=True, sampled=sampled)
    assert any(expected)
    assert run(setup, batches, one_at_a_time, exemplars=True, sampled=sampled) == expected


def test_the_bulk_path_is_taken_with_the_sdk_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Else the figures of the benchmarks would silently go back to a record per chunk."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("t").create_histogram("h", unit="s")
    calls: list[float] = []
    real = histogram.record

    def counted(value: float, *args: Any, **kwargs: Any) -> None:
        calls.append(value)
        real(value, *args, **kwargs)

    monkeypatch.setattr(histogram, "record", counted)
    record_many(histogram, [0.01] * 100, POINT)
    assert calls == [0.01]
    [point] = points([reader])
    assert "('count', 100)" in point[1]


def test_non_finite_and_negative_values_are_refused_as_record_refuses_them() -> None:
    values = [0.01, math.inf, -1.0, math.nan, 0.02]
    for setup in ("cumulative", "delta"):
        assert run(setup, [values], record_many) == run(setup, [values], one_by_one)


def exported(readers: list[InMemoryMetricReader]) -> list[Any]:
    """As ``points``, with each exemplar's value, span and trace exactly."""
    return points(readers, exemplars=True, exact=True)


def record_each(histogram: Any, values: list[float], contexts: list[Any], point: Any) -> None:
    for value, context in zip(values, contexts, strict=True):
        histogram.record(value, point, context)


@pytest.mark.parametrize("exemplar_filter", ["trace_based", "always_on", "always_off"])
@pytest.mark.parametrize("setup", [*SETUPS, "fixed-size reservoir"])
def test_record_points_exports_what_record_per_value_does_each_exemplar_its_own_span(
    setup: str, exemplar_filter: str
) -> None:
    """The points of many operations at once, each value with its own operation's span
    (half of them sampled): counts, sums, buckets and every exemplar (value, span, trace)
    are those of one ``record`` per value."""
    from opentelemetry.sdk.metrics import (
        AlwaysOffExemplarFilter,
        AlwaysOnExemplarFilter,
        TraceBasedExemplarFilter,
    )
    from opentelemetry.sdk.metrics._internal.exemplar import SimpleFixedSizeExemplarReservoir

    filters = {
        "trace_based": TraceBasedExemplarFilter,
        "always_on": AlwaysOnExemplarFilter,
        "always_off": AlwaysOffExemplarFilter,
    }
    rng = random.Random(setup + exemplar_filter)
    on, off = (TracerProvider(sampler=s).get_tracer("t") for s in (ALWAYS_ON, ALWAYS_OFF))
    batches = []
    for _ in range(7):
        size = rng.choice((1, 2, 5, 40, 150))
        values = [
            rng.choice((0.0, 0.005, 0.5, 3.0, -1.0, math.nan)) if rng.random() < 0.1
            else rng.expovariate(60) for _ in range(size)
        ]  # fmt: skip
        contexts = [
            None if rng.random() < 0.1
            else set_span_in_context((on if rng.random() < 0.5 else off).start_span("op"))
            for _ in range(size)
        ]  # fmt: skip
        batches.append((values, contexts))

    def run_points(record: Callable[..., None]) -> list[Any]:
        random.seed(f"exemplars of {setup}")  # the fixed-size reservoir draws from it
        if setup == "fixed-size reservoir":
            readers = [InMemoryMetricReader()]
            views = [View(instrument_name="h", exemplar_reservoir_factory=lambda _: (
                lambda **kwargs: SimpleFixedSizeExemplarReservoir(size=3)))]  # fmt: skip
        else:
            readers, views = readers_for(setup)
        provider = MeterProvider(
            metric_readers=readers, views=views, exemplar_filter=filters[exemplar_filter]()
        )
        histogram = provider.get_meter("t").create_histogram(
            "h", unit="s", explicit_bucket_boundaries_advisory=BUCKETS
        )
        collected = []
        for i, (values, contexts) in enumerate(batches):
            point = POINT if i % 3 else {**POINT, "error.type": "x"}
            record(histogram, values, contexts, point)  # refused values: logged, as record does
            if i % 2:
                collected.append(exported(readers))
        collected.append(exported(readers))
        provider.shutdown()
        return collected

    expected = run_points(record_each)
    assert any(expected)
    assert run_points(record_points) == expected


# --- the self-check: the SDK's private objects are written to only once proven ----------

Aggregation = aggregation_module._ExplicitBucketHistogramAggregation
ON_BOUNDARIES = [list(BUCKETS), [0.0, *BUCKETS, 0.7, 0.003], BUCKETS[::-1] * 3]


def not_used(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines saying a fast path is not used on these versions."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("llamatelemetry") and "not used" in r.getMessage()
    ]


def upper_bound_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release of the SDK whose buckets hold their lower bound, not their upper one: its
    ``record`` puts a value on a boundary one bucket up. Its private names are all there."""
    real = Aggregation.aggregate

    def aggregate(self: Any, measurement: Any, should_sample_exemplar: bool = True) -> None:
        real(self, measurement, should_sample_exemplar)
        i = bisect_left(self._boundaries, measurement.value)
        if i < len(self._boundaries) and self._boundaries[i] == measurement.value:
            with self._lock:
                self._value[i] -= 1
                self._value[i + 1] += 1

    monkeypatch.setattr(Aggregation, "aggregate", aggregate)


@pytest.mark.usefixtures("fresh_checks")
def test_an_sdk_whose_buckets_mean_otherwise_gets_a_record_per_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upper_bound_exclusive(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    expected = run("cumulative", ON_BOUNDARIES, one_by_one)
    assert run("cumulative", ON_BOUNDARIES, record_many) == expected
    assert run("two views", ON_BOUNDARIES, record_many) == run(
        "two views", ON_BOUNDARIES, one_by_one
    )
    assert run("cumulative", ON_BOUNDARIES, one_at_a_time) == expected
    [line] = not_used(caplog)  # once, however many points and histograms
    assert "record" in line


def exemplars_by_another_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release of the SDK whose ``record`` no longer asks the provider's exemplar filter
    (``_sdk_config.exemplar_filter`` is still there, unused): it offers no exemplar."""

    def consume_measurement(self: Any, measurement: Any) -> None:
        for storage in self._reader_storages.values():
            storage.consume_measurement(measurement, False)

    monkeypatch.setattr(
        measurement_consumer.SynchronousMeasurementConsumer,
        "consume_measurement",
        consume_measurement,
    )


@pytest.mark.usefixtures("fresh_checks")
def test_an_sdk_that_offers_exemplars_otherwise_gets_a_record_per_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exemplars_by_another_filter(monkeypatch)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    rng = random.Random(7)
    batches = [[rng.expovariate(60) for _ in range(rng.choice((1, 3, 20)))] for _ in range(9)]
    expected = run("cumulative", batches, one_by_one, exemplars=True)
    assert run("cumulative", batches, one_at_a_time, exemplars=True) == expected
    assert run("cumulative", batches, record_many, exemplars=True) == expected
    assert len(not_used(caplog)) == 1


@pytest.mark.usefixtures("fresh_checks")
def test_the_installed_sdk_passes_the_check_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    test_the_bulk_path_is_taken_with_the_sdk_installed(pytest.MonkeyPatch())
    assert not_used(caplog) == []


@pytest.mark.usefixtures("fresh_checks")
def test_an_sdk_whose_buckets_keep_their_first_exemplar_gets_a_record_per_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``record_points`` offers each bucket only the value the default reservoir keeps (its
    last): a release whose reservoir kept the first would export other exemplars, so the
    check refuses the fast path and every value goes through ``record``."""
    from opentelemetry.sdk.metrics._internal.exemplar import exemplar_reservoir

    offer = exemplar_reservoir.ExemplarBucket.offer

    def first_kept(self: Any, *args: Any) -> None:
        if self._ExemplarBucket__offered:
            return
        offer(self, *args)

    monkeypatch.setattr(exemplar_reservoir.ExemplarBucket, "offer", first_kept)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    on = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    values = [0.002, 0.003, 0.004, 0.03, 0.04]
    contexts = [set_span_in_context(on.start_span("op")) for _ in values]

    def exported_by(record: Callable[..., None]) -> list[Any]:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        histogram = provider.get_meter("t").create_histogram(
            "h", explicit_bucket_boundaries_advisory=BUCKETS
        )
        record(histogram, values, contexts, POINT)
        record(histogram, values, contexts, POINT)  # the point known: the fast path's turn
        return exported([reader])

    assert exported_by(record_points) == exported_by(record_each)
    [line] = not_used(caplog)
    assert "record" in line
