"""Idle sleep on both backends: a server that freed its model after ``sleep_idle_seconds``
says so without waking, and the call that wakes it is marked as a cold start, where a
slow first token on an awake server is not."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.server._options import ServerOptions
from llamatelemetry.telemetry import InstrumentedLlamaCppClient
from llamatelemetry.testing import TinyModelFiles

from ..telemetry.test_pipeline import points
from ._support import BACKENDS, MESSAGES, manager


@pytest.fixture(scope="module", params=BACKENDS)
def sleepy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_files: TinyModelFiles,
) -> Iterator[ServerManager]:
    backend = request.param
    with manager(backend, request, tmp_path_factory.mktemp(f"sleep-{backend}")) as server:
        server.start(tiny_files.model.path, sleep_idle_seconds=1, n_threads=1)
        yield server


def wait_asleep(client: LlamaCppClient, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not client.props.is_sleeping():
        assert time.monotonic() < deadline, "the server did not fall asleep"
        time.sleep(0.1)


def states(span_exporter: Any) -> list[tuple[Any, Any]]:
    return [
        (s.attributes.get("llama_cpp.model.state"), s.attributes.get("llama_cpp.cold_start"))
        for s in span_exporter.get_finished_spans()
        if s.name.startswith(("chat", "text_completion"))
    ]


def test_a_sleeping_server_says_so_without_waking(sleepy: ServerManager) -> None:
    with sleepy.client() as client:
        client.completions.create("Once", max_tokens=2)
        assert client.props.is_sleeping() is False
        wait_asleep(client)
        assert client.props.is_sleeping() is True  # asking did not wake it
        assert client.health.check() == {"status": "ok"}  # nor did a health check
        assert client.props.is_sleeping() is True
        reply = client.completions.create("Once", max_tokens=2)  # a request wakes it
        assert reply.usage is not None and reply.usage.completion_tokens == 2
        assert client.props.is_sleeping() is False


def test_the_wake_up_call_is_a_cold_start(
    sleepy: ServerManager, providers: Any, span_exporter: Any
) -> None:
    tracer_provider, meter_provider, _ = providers
    with InstrumentedLlamaCppClient(
        sleepy.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)
        wait_asleep(client)
        time.sleep(0.1)
        woken = client.chat.completions.create(messages=MESSAGES, max_tokens=2, stream=True)
        list(woken)
        client.chat.completions.create(messages=MESSAGES, max_tokens=2)  # right after: awake
    assert states(span_exporter) == [("loaded", None), ("sleeping", True), (None, None)]


def test_a_slow_first_token_on_an_awake_server_is_no_cold_start(
    chat_server: ServerManager, providers: Any, span_exporter: Any
) -> None:
    """A long prompt makes the first token slow; the server was awake all along."""
    tracer_provider, meter_provider, _ = providers
    long_prompt = [{"role": "user", "content": "GGUF " * 80}]
    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        time.sleep(1.05)  # idle long enough that the telemetry asks
        client.chat.completions.create(messages=long_prompt, max_tokens=2, cache_prompt=False)
    assert states(span_exporter) == [("loaded", None)]


def test_sleep_idle_seconds_is_checked_and_rendered(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    argv = ServerOptions(model, sleep_idle_seconds=30).to_argv()
    assert argv[argv.index("--sleep-idle-seconds") + 1] == "30"
    assert (
        ServerOptions(model, sleep_idle_seconds=30).to_embedded_config()["sleep_idle_seconds"] == 30
    )
    assert "--sleep-idle-seconds" not in ServerOptions(model).to_argv()
    with pytest.raises(ValueError, match="sleep_idle_seconds must be >= 1"):
        ServerOptions(model, sleep_idle_seconds=0)
    with pytest.raises(TypeError, match="sleep_idle_seconds must be an integer"):
        ServerOptions(model, sleep_idle_seconds=1.5)  # type: ignore[arg-type]


def collected(reader: Any) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Each metric's points in one collection, as (attributes, value)."""
    return {
        name: [(dict(p.attributes), p.value) for p in found]
        for name, found in points(reader).items()
    }


def scraped_asleep(
    scrape: Callable[[], Any], asleep: Callable[[], bool], idle_seconds: float = 1.0
) -> Any:
    """Scrape every 0.2 s until ``asleep()`` (10 s at most: else the scraping kept it awake),
    then for longer than its idle time, and say it sleeps after every scrape (a scrape that
    woke it would be seen: the reload takes longer than the 0.2 s); the last result."""
    deadline = time.monotonic() + 10
    while not asleep():
        assert time.monotonic() < deadline, "scraped, it never fell asleep"
        scrape()
        time.sleep(0.2)
    for _ in range(round(1.2 * idle_seconds / 0.2)):
        last = scrape()
        assert asleep(), "a scrape woke it"
        time.sleep(0.2)
    return last


def test_scraped_every_few_tenths_of_a_second_it_still_falls_asleep(
    sleepy: ServerManager,
) -> None:
    """llama.cpp's /slots wakes a sleeping server and resets its idle timer: a bridge that
    read it at every scrape kept the model in memory for good. Scraped both ways at once:
    a bridge collected every 0.2 s, and the exporter command as a user runs it, itself
    scraped as often (each of its scrapes scraping the server: --interval 0)."""
    import httpx
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llamatelemetry.telemetry import LlamaServerMetrics

    from ..cli.test_exporter import exporting

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with (
        exporting(sleepy.url) as port,
        sleepy.client() as client,
        sleepy.client() as asker,
    ):
        url = f"http://127.0.0.1:{port}/metrics"
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)

        def scrape() -> tuple[dict[str, Any], str]:
            return collected(reader), httpx.get(url, trust_env=False).text

        try:
            client.completions.create("Once upon a time", max_tokens=3)
            busy, exported = scrape()  # right after a request: its slot holds its tokens
            assert sum(v for _, v in busy["llama_cpp.server.context.tokens"]) > 0
            assert "llama_cpp_server_context_tokens{" in exported
            asleep, exported = scraped_asleep(scrape, asker.props.is_sleeping)
            assert [v for _, v in asleep["llama_cpp.server.up"]] == [1]
            assert [v for _, v in asleep["llama_cpp.server.context.tokens"]] == [0]  # freed
            assert sum(v for _, v in asleep["llama_cpp.server.slots.busy"]) == 0
            assert [v for _, v in asleep["llama_cpp.server.generated_tokens"]] == [
                v for _, v in busy["llama_cpp.server.generated_tokens"]
            ]
            [held] = [
                line
                for line in exported.splitlines()
                if line.startswith("llama_cpp_server_context_tokens{")
            ]
            assert held.endswith(" 0.0")
            reply = client.completions.create("Once", max_tokens=2)  # a request wakes it
            assert reply.usage is not None and reply.usage.completion_tokens == 2
            assert not asker.props.is_sleeping()
            awake = collected(reader)
            assert sum(v for _, v in awake["llama_cpp.server.context.tokens"]) > 0
        finally:
            bridge.close()
            provider.shutdown()
