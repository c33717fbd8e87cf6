"""The context (KV cache) and the prompt cache, as the clients' answers and the server's
/slots and /metrics tell them, against a real llama-server (a fresh one: the figures are
compared with its own, which no other test may move)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, LlamaServerMetrics
from llamatelemetry.telemetry._slot_use import Slots
from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

from .test_pipeline import MESSAGES, points


@pytest.fixture(scope="module")
def fresh(tiny_files: TinyModelFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two slots of 256 tokens each, on a server only this module uses."""
    with ServerManager(port=0, log_dir=tmp_path_factory.mktemp("cache-figures")) as server:
        server.start(tiny_files.model.path, n_parallel=2, ctx_size=512, n_threads=1)
        yield server.url


@pytest.fixture
def client(fresh: str, providers: Any) -> Iterator[InstrumentedLlamaCppClient]:
    tracer_provider, meter_provider, _ = providers
    with InstrumentedLlamaCppClient(
        fresh, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        yield client


def test_the_prompt_cache_counters_add_up_what_the_answers_say(
    client: InstrumentedLlamaCppClient, providers: Any, span_exporter: Any
) -> None:
    reader = providers[2]
    replies = [
        client.chat.completions.create(messages=MESSAGES, max_tokens=2) for _ in range(3)
    ]  # the same prompt: the second and third find most of it in the cache
    client.completions.create("Once upon a time", max_tokens=2)
    client.complete("Once upon a time", max_tokens=2)  # native: timings, no usage
    found = points(reader)
    server = client.metrics.values()
    cached = [r.usage.prompt_tokens_details.cached_tokens for r in replies]  # type: ignore[union-attr]
    assert cached[0] < cached[1] == cached[2]
    spans = [s for s in span_exporter.get_finished_spans() if s.name != "metrics"]
    assert len(spans) == 5
    expected_cached = sum(s.attributes["llama_cpp.timings.cache_n"] for s in spans)
    expected_evaluated = sum(s.attributes["llama_cpp.timings.prompt_n"] for s in spans)
    assert expected_cached >= sum(cached)
    by_operation: dict[str, dict[str, int]] = {}
    for name in ("cached", "evaluated"):
        for point in found[f"llama_cpp.client.{name}_prompt_tokens"]:
            operation = point.attributes["gen_ai.operation.name"]
            by_operation.setdefault(name, {})[operation] = point.value
    assert sum(by_operation["cached"].values()) == expected_cached
    assert sum(by_operation["evaluated"].values()) == expected_evaluated
    # what the server counted: the same tokens (this module's server has seen nothing else)
    assert server["llamacpp:prompt_tokens_cached_total"] == expected_cached
    assert server["llamacpp:prompt_tokens_total"] == expected_evaluated


def test_a_native_answer_s_span_says_its_slot_and_what_it_holds(
    client: InstrumentedLlamaCppClient, span_exporter: Any
) -> None:
    client.complete("Once upon a time there was", max_tokens=5, id_slot=1)
    client.complete("Once", max_tokens=2, stream=True, id_slot=0).until_done()
    slots = {s["id"]: s["n_prompt_tokens"] for s in client.slots.list()}
    [first, second] = [
        s for s in span_exporter.get_finished_spans() if s.name.startswith("text_completion")
    ]
    assert first.attributes["llama_cpp.slot.id"] == 1
    assert first.attributes["llama_cpp.slot.context.tokens"] == slots[1]
    assert second.attributes["llama_cpp.slot.id"] == 0
    assert second.attributes["llama_cpp.slot.context.tokens"] == slots[0]
    assert slots[1] >= 5 + first.attributes["llama_cpp.timings.predicted_n"] - 1


def test_the_bridge_reports_each_slot_s_context(fresh: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with LlamaCppClient(fresh) as client:
        client.complete("Once upon a time", max_tokens=4, id_slot=0)
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)
        try:
            found = points(reader)
            listed = {s["id"]: s["n_prompt_tokens"] for s in client.slots.list()}
        finally:
            bridge.close()
            provider.shutdown()
    per_slot = {
        p.attributes["llama_cpp.slot.id"]: p.value
        for p in found["llama_cpp.server.slot.context.tokens"]
    }
    assert per_slot == listed and per_slot[0] > 0
    sizes = {
        p.attributes["llama_cpp.slot.id"]: p.value
        for p in found["llama_cpp.server.slot.context.size"]
    }
    assert sizes == {0: 256, 1: 256}
    [held] = found["llama_cpp.server.context.tokens"]
    [size] = found["llama_cpp.server.context.size"]
    assert (held.value, size.value) == (sum(listed.values()), 512)
    assert "llama_cpp.slot.id" not in held.attributes
    [peak] = found["llama_cpp.server.context.peak_tokens"]
    assert peak.value >= max(listed.values())


@pytest.mark.parametrize(
    "slot",
    [
        {"id": 0, "n_ctx": 64, "n_prompt_tokens": "7"},
        {"id": "0", "n_ctx": 64, "n_prompt_tokens": 7},
        {"id": 0, "n_ctx": True, "n_prompt_tokens": 7},
        {"id": 0, "n_ctx": -64, "n_prompt_tokens": 7},
        {"id": 0, "n_prompt_tokens": 7},
        {"id": 0, "n_ctx": 64, "n_prompt_tokens": -1},
    ],
)
def test_a_slot_with_unreadable_figures_counts_without_them(slot: dict[str, Any]) -> None:
    read = Slots.of([{**slot, "state": "processing"}, {"id": 1, "n_ctx": 64, "state": "idle"}])
    assert (read.busy, read.total) == (1, 2)
    assert [(u.id, u.size, u.tokens) for u in read.use] == [(1, 64, 0)]


def test_an_answer_s_odd_slot_fields_are_left_out(providers: Any, span_exporter: Any) -> None:
    """A server (or proxy) that says its slot as a negative number, or not at all; what
    the typed answer reads as a number ("1", true) is that number."""
    odd = iter([(-1, -5), (None, None), ("1", "5"), (True, False)])

    def reply(request: SeenRequest) -> Reply:
        if not request.path.startswith("/completion"):
            return Reply(404, {"error": {"code": 404, "message": "no"}})
        slot, held = next(odd)
        return Reply(
            200,
            {"content": "x", "stop": True, "id_slot": slot, "tokens_cached": held,
             "timings": {"prompt_n": 1, "cache_n": 0, "predicted_n": 1}},
        )  # fmt: skip

    tracer_provider, meter_provider, _ = providers
    with FaultServer(reply) as server, InstrumentedLlamaCppClient(
        server.url, tracer_provider=tracer_provider, meter_provider=meter_provider,
        max_retries=0,
    ) as client:  # fmt: skip
        texts = [client.complete("Once", max_tokens=1).content for _ in range(4)]
    assert texts == ["x"] * 4
    said = [
        {k: v for k, v in span.attributes.items() if k.startswith("llama_cpp.slot")}
        for span in span_exporter.get_finished_spans()
    ]
    assert said == [
        {},
        {},
        {"llama_cpp.slot.id": 1, "llama_cpp.slot.context.tokens": 5},
        {"llama_cpp.slot.id": 1, "llama_cpp.slot.context.tokens": 0},
    ]


def test_a_metrics_body_without_the_new_samples_reports_the_rest(tmp_path: Path) -> None:
    """An older llama-server: no prompt_tokens_cached_total, no n_tokens_max, slots without
    n_prompt_tokens."""
    metrics = "llamacpp:prompt_tokens_total 10\nllamacpp:tokens_predicted_total 4\n"
    slots = [{"id": 0, "n_ctx": 128, "state": 0}, {"id": 1, "n_ctx": 128, "state": 1}]

    def reply(request: SeenRequest) -> Reply:
        if request.path.startswith("/metrics"):
            return Reply(200, metrics.encode(), content_type="text/plain")
        if request.path.startswith("/slots"):
            return Reply(200, slots)
        return Reply(200, {"role": "single"})

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with FaultServer(reply) as server, LlamaCppClient(server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)
        found = points(reader)
        bridge.close()
    provider.shutdown()
    assert [p.value for p in found["llama_cpp.server.prompt_tokens"]] == [10]
    assert "llama_cpp.server.cached_prompt_tokens" not in found
    assert [p.value for p in found["llama_cpp.server.slots.busy"]] == [1]
    assert [p.value for p in found["llama_cpp.server.context.tokens"]] == [0]
    assert [p.value for p in found["llama_cpp.server.context.size"]] == [256]
