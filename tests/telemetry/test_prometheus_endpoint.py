"""The Prometheus endpoint's last scrape: a short-lived process waits until a scrape that
began after its last figure has been answered, and no earlier one counts."""

from __future__ import annotations

import itertools
import math
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from llamatelemetry.telemetry import _prometheus, setup_telemetry
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


def waiting(endpoint: PrometheusEndpoint) -> threading.Event:
    """Set once a ``wait_for_scrape`` has begun to wait: every scrape that begins after it
    is one that the wait counts (a handshake, where a sleep would only make it likely)."""
    began = threading.Event()
    answered = endpoint._answered
    wait = answered.wait

    def spy(timeout: float | None = None) -> bool:
        began.set()
        return wait(timeout)

    answered.wait = spy  # type: ignore[method-assign]
    return began


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
        began = waiting(endpoint)
        waited = pool.submit(endpoint.wait_for_scrape, 30)
        assert began.wait(10)  # the wait has begun
        collector.value = 7  # recorded after the early scrape began
        collector.release.set()
        assert "held_total 0.0" in early.result().text  # it took the old figure...
        time.sleep(0.3)
        assert not waited.done()  # ...so the wait goes on
        late = httpx.get(endpoint.url, timeout=10)
        assert waited.result(30) is True
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
    began = waiting(endpoint)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(endpoint.wait_for_scrape, 2)
        assert began.wait(10)
        httpx.get(endpoint.url.replace("/metrics", "/favicon.ico"), timeout=5)
        httpx.post(endpoint.url, timeout=5)
        assert waited.result(5) is False
    assert endpoint.scrapes == 0


class _Big:
    """A collector whose exposition outgrows the socket buffers: writes block on a reader."""

    def __init__(self, delay: float = 0.0, rows: int = 60_000) -> None:
        self.delay = delay
        self.rows = rows

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        time.sleep(self.delay)
        family = CounterMetricFamily("big", "a large figure", labels=["i"])
        for i in range(self.rows):
            family.add_metric([f"{i:060d}"], i)
        yield family


class _Collector:
    """One fixed figure."""

    def __init__(self, value: float) -> None:
        self.value = value

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily("seven", "a fixed figure", value=self.value)


def _endpoint(collector: Any) -> PrometheusEndpoint:
    registry = CollectorRegistry()
    registry.register(collector)
    return PrometheusEndpoint(registry, "127.0.0.1", 0)


def test_a_scrape_cut_by_its_scraper_is_not_answered() -> None:
    """The scraper reads a little of a large answer and resets the connection: the server's
    write fails, so nothing was taken."""
    endpoint = _endpoint(_Big())
    try:
        port = int(endpoint.url.split(":")[2].split("/")[0])
        began = waiting(endpoint)
        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(endpoint.wait_for_scrape, 4)
            assert began.wait(10)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(17)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            assert waited.result(10) is False
        assert endpoint.scrapes == 0
        assert len(httpx.get(endpoint.url, timeout=30).content) > 4_000_000  # whole ones count
        assert endpoint.scrapes == 1
    finally:
        endpoint.close()


@pytest.mark.parametrize(("timeout_header", "answered"), [("0.3", False), ("60", True)])
def test_a_scrape_prometheus_gave_up_on_is_not_answered(
    timeout_header: str, answered: bool
) -> None:
    """Prometheus says how long it waits (X-Prometheus-Scrape-Timeout-Seconds): an answer
    written after that went to a scraper that no longer reads it."""
    endpoint = _endpoint(_Big(delay=0.6))  # always later than 0.3 s
    try:
        began = waiting(endpoint)
        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(endpoint.wait_for_scrape, 60)  # ends at the answered scrape
            assert began.wait(10)
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": timeout_header}
            httpx.get(endpoint.url, headers=headers, timeout=60)
            if not answered:  # that one did not end the wait: the next, unhurried, does
                httpx.get(endpoint.url, timeout=60)
            assert waited.result(60) is True
        assert endpoint.scrapes == 1
    finally:
        endpoint.close()


def test_a_filtered_scrape_is_not_answered(held: tuple[PrometheusEndpoint, _Held]) -> None:
    endpoint, collector = held
    collector.release.set()
    began = waiting(endpoint)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(endpoint.wait_for_scrape, 1)
        assert began.wait(10)
        filtered = httpx.get(endpoint.url, params={"name[]": "nothing"}, timeout=5)
        assert filtered.status_code == 200 and "held" not in filtered.text
        assert waited.result(5) is False


def test_wait_timeouts(held: tuple[PrometheusEndpoint, _Held]) -> None:
    endpoint, collector = held
    collector.release.set()
    for bad in (math.nan, -1.0):
        with pytest.raises(ValueError, match="timeout must be >= 0 seconds"):
            endpoint.wait_for_scrape(bad)
    assert endpoint.wait_for_scrape(0) is False
    began = waiting(endpoint)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(endpoint.wait_for_scrape, math.inf)  # however long it takes
        assert began.wait(10)
        time.sleep(0.3)
        assert not waited.done()
        httpx.get(endpoint.url, timeout=5)
        assert waited.result(30) is True


def test_the_telemetry_handle_waits_for_its_endpoint() -> None:
    telemetry = setup_telemetry("scraped", prometheus_port=0, set_global=False)
    try:
        counter = telemetry.meter_provider.get_meter("t").create_counter("jobs")
        assert telemetry._prometheus is not None
        began = waiting(telemetry._prometheus)
        with ThreadPoolExecutor(1) as pool:
            counter.add(3)
            waited = pool.submit(telemetry.wait_for_scrape, 30)
            assert began.wait(10)
            text = httpx.get(telemetry.prometheus_url, timeout=5).text  # type: ignore[arg-type]
            assert waited.result(30) is True
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


def _port(endpoint: PrometheusEndpoint) -> int:
    return int(endpoint.url.rsplit(":", 1)[1].split("/")[0])


def _connection_threads() -> int:
    """The endpoint's threads serving a connection (by their name)."""
    return sum(t.name == "llamatelemetry-prometheus-connection" for t in threading.enumerate())


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (an end of stream or a reset), without
    blocking; what it sent before is read and dropped."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except OSError:  # reset
        return True
    return False


def test_slow_connections_are_cut_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slowloris: connections that send nothing, or a header a byte at a time (faster
    than the per-operation timeout), more of them than the endpoint serves at once. Those
    beyond the cap are closed at once, the rest once their head limit has passed; the
    endpoint's threads stay within the cap, and a scrape afterwards is answered."""
    cap, head_limit = 4, 1.0
    monkeypatch.setattr(_prometheus, "HEAD_LIMIT_S", head_limit)
    monkeypatch.setattr(_prometheus, "CONNECTION_LIMIT_S", 3.0)
    monkeypatch.setattr(_prometheus, "MAX_CONNECTIONS", cap)
    registry = CollectorRegistry()
    registry.register(_Collector(7))
    endpoint = PrometheusEndpoint(registry, "127.0.0.1", 0)
    baseline = threading.active_count()  # the endpoint's own threads included

    silent: list[socket.socket] = []
    trickling: list[socket.socket] = []
    closed: dict[socket.socket, float] = {}  # when the server closed it
    peak_named = peak_delta = 0

    def connect(count: int) -> None:
        for kind in (silent, trickling):
            kind.extend(
                socket.create_connection(("127.0.0.1", _port(endpoint))) for _ in range(count)
            )

    try:
        connect(cap // 2)  # the cap filled first (the listen backlog could hold the rest
        filled = time.monotonic() + 10  # back, to be accepted once the first are cut)
        while _connection_threads() < cap and time.monotonic() < filled:
            time.sleep(0.01)
        connect(3)  # and more
        slow = silent + trickling
        opened = time.monotonic()
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: "
        trickle = {s: itertools.chain(head, itertools.repeat(ord("a"))) for s in trickling}
        for s in slow:
            s.setblocking(False)
        while len(closed) < len(slow) and time.monotonic() - opened < 20:  # a generous guard
            for s in trickling:  # a byte every 0.1 s: never 30 s silent
                if s not in closed:
                    try:
                        s.send(bytes([next(trickle[s])]))
                    except OSError:
                        closed[s] = time.monotonic()
            for s in slow:
                if s not in closed and _closed_by_server(s):
                    closed[s] = time.monotonic()
            peak_named = max(peak_named, _connection_threads())
            peak_delta = max(peak_delta, threading.active_count() - baseline)
            time.sleep(0.1)
        print(
            f"threads: baseline {baseline}, peak +{peak_delta} ({peak_named} named);"
            f" slow connections closed by the server: {len(closed)}/{len(slow)}, the last"
            f" {max(closed.values(), default=math.nan) - opened:.2f} s after opening"
        )
        assert peak_delta <= cap and peak_named <= cap
        assert len(closed) == len(slow)  # every one was closed by the server...
        assert max(closed.values()) - opened < head_limit + 10  # ...soon after its deadline
        deadline = time.monotonic() + 10
        while _connection_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        after = threading.active_count() - baseline
        print(f"threads after: +{after} ({_connection_threads()} named)")
        assert _connection_threads() == 0 and after <= 0
        assert endpoint.refused + endpoint.cut == len(slow)  # closed at once, or reaped
        assert endpoint.refused == len(slow) - cap  # the extra ones, at once
        answer = httpx.get(endpoint.url, timeout=10)  # the slow ones are gone: served
        assert answer.status_code == 200 and "seven_total 7.0" in answer.text
        assert endpoint.scrapes == 1
    finally:
        for s in silent + trickling:
            s.close()
        endpoint.close()


def test_a_slow_reader_is_cut_at_the_connection_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that reads a large answer a byte at a time keeps the per-operation timeout
    from ever running out: the whole connection has a limit, and its scrape is no answer."""
    monkeypatch.setattr(_prometheus, "CONNECTION_LIMIT_S", 3.0)
    endpoint = _endpoint(_Big(rows=120_000))  # more than the socket buffers take
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", _port(endpoint)))
            opened = time.monotonic()
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(20)
            taken = 0
            while time.monotonic() - opened < 30:  # a generous guard
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # reset by the server
                    break  # (what it had sent before is still here to read: not the server's)
                try:
                    if not sock.recv(1):
                        break
                except OSError:
                    break
                taken += 1
                time.sleep(0.05)
            else:
                pytest.fail(f"still served {time.monotonic() - opened:.1f} s later")
        print(f"cut {time.monotonic() - opened:.2f} s after opening, {taken} bytes read")
        deadline = time.monotonic() + 10
        while _connection_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _connection_threads() == 0
        assert endpoint.cut == 1 and endpoint.scrapes == 0  # cut: no answer
    finally:
        endpoint.close()
