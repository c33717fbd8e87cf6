"""The Prometheus endpoint's last scrape: a short-lived process waits until a scrape that
began after its last figure has been answered, and no earlier one counts."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from llamatelemetry.telemetry import setup_telemetry
from llamatelemetry.telemetry._prometheus import PrometheusEndpoint


class _Held:
    """A collector that holds every scrape until released: a scrape in flight."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.value = 0

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        value = self.value  # what the scrape takes, at its start
        self.entered.set()
        assert self.release.wait(10)
        yield CounterMetricFamily("held", "a held figure", value=value)


@pytest.fixture
def held() -> Iterator[tuple[PrometheusEndpoint, _Held]]:
    registry = CollectorRegistry()
    collector = _Held()
    registry.register(collector)
    endpoint = PrometheusEndpoint(registry, "127.0.0.1", 0)
    yield endpoint, collector
    collector.release.set()
    endpoint.close()


def test_a_scrape_in_flight_when_the_wait_begins_does_not_count(
    held: tuple[PrometheusEndpoint, _Held],
) -> None:
    endpoint, collector = held
    with ThreadPoolExecutor(3) as pool:
        early = pool.submit(httpx.get, endpoint.url, timeout=10)
        assert collector.entered.wait(5)  # the early scrape is collecting
        collector.entered.clear()
        waited = pool.submit(endpoint.wait_for_scrape, 10)
        time.sleep(0.2)  # the wait has begun
        collector.value = 7  # recorded after the early scrape began
        collector.release.set()
        assert "held_total 0.0" in early.result().text  # it took the old figure...
        time.sleep(0.3)
        assert not waited.done()  # ...so the wait goes on
        late = httpx.get(endpoint.url, timeout=10)
        assert waited.result(5) is True
        assert "held_total 7.0" in late.text
    assert endpoint.scrapes == 2


def test_without_a_scrape_the_wait_ends_at_its_timeout(
    held: tuple[PrometheusEndpoint, _Held],
) -> None:
    endpoint, collector = held
    collector.release.set()
    httpx.get(endpoint.url, timeout=10)  # before the wait: not the one waited for
    began = time.monotonic()
    assert endpoint.wait_for_scrape(0.5) is False
    assert 0.5 <= time.monotonic() - began < 1.5


def test_only_answered_metric_scrapes_count(held: tuple[PrometheusEndpoint, _Held]) -> None:
    endpoint, collector = held
    collector.release.set()
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(endpoint.wait_for_scrape, 2)
        time.sleep(0.1)
        httpx.get(endpoint.url.replace("/metrics", "/favicon.ico"), timeout=5)
        httpx.post(endpoint.url, timeout=5)
        assert waited.result(5) is False
    assert endpoint.scrapes == 0


def test_the_telemetry_handle_waits_for_its_endpoint() -> None:
    telemetry = setup_telemetry("scraped", prometheus_port=0, set_global=False)
    try:
        counter = telemetry.meter_provider.get_meter("t").create_counter("jobs")
        with ThreadPoolExecutor(1) as pool:
            counter.add(3)
            waited = pool.submit(telemetry.wait_for_scrape, 10)
            time.sleep(0.1)
            text = httpx.get(telemetry.prometheus_url, timeout=5).text  # type: ignore[arg-type]
            assert waited.result(5) is True
        assert re.search(r"(?m)^jobs_total\{.*\} 3\.0$", text)
    finally:
        telemetry.shutdown()
    plain = setup_telemetry("no endpoint", set_global=False)
    with pytest.raises(RuntimeError, match="prometheus_port"):
        plain.wait_for_scrape(1)
    plain.shutdown()


def test_an_ipv6_host_is_served() -> None:
    registry = CollectorRegistry()
    try:
        endpoint = PrometheusEndpoint(registry, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert endpoint.url.startswith("http://[::1]:")
        assert httpx.get(endpoint.url, timeout=5).status_code == 200
    finally:
        endpoint.close()
