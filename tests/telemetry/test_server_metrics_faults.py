"""``LlamaServerMetrics`` against llama-servers of our own that misbehave on purpose: one
that changes role between collections, routers whose models answer slowly or not at all,
answers that are costly to read."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.telemetry import LlamaServerMetrics
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

from .test_pipeline import points

MISSING = {
    "error": {
        "code": 400,
        "message": "model name is missing from the request",
        "type": "invalid_request_error",
    }
}
NOT_LOADED = {
    "error": {"code": 400, "message": "model is not loaded", "type": "invalid_request_error"}
}


def exposition(generated: float) -> str:
    return (
        "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n"
        "# TYPE llamacpp:tokens_predicted_total counter\n"
        f"llamacpp:tokens_predicted_total {generated}\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        "llamacpp:requests_processing 0\n"
    )


class Llama:
    """A llama-server as the real one answers in either role (tools/server/server.cpp):

    - alone (``role="single"``): ``/props`` without a role, ``/v1/models`` listing its model
      without a status, ``/metrics`` and ``/slots`` of its own (any ``?model=`` ignored);
    - a router: ``/props`` with ``"role": "router"``, ``/v1/models`` with each model's
      status, ``/metrics`` and ``/slots`` only with ``?model=`` of a loaded model (400
      otherwise), each answered after ``delays[model]`` seconds.
    """

    def __init__(self, models: dict[str, float] | None = None, role: str = "single") -> None:
        self.role = role
        self.models = models or {}  # loaded model -> seconds its instance takes to answer
        self.unloaded = ["cold"]
        self.server = FaultServer(self.answer)

    def answer(self, request: SeenRequest) -> Reply:
        path, _, query = request.path.partition("?")
        model = parse_qs(query).get("model", [None])[0]
        if self.role == "single":
            if path == "/props":
                return Reply(200, {"total_slots": 2, "model_path": "/models/solo.gguf"})
            if path in ("/v1/models", "/models"):
                return Reply(200, {"object": "list", "data": [{"id": "solo", "object": "model"}]})
            if path == "/metrics":
                return Reply(200, exposition(7), content_type="text/plain")
            if path == "/slots":
                return Reply(200, [{"id": 0, "is_processing": True}, {"id": 1}])
            return Reply(404, {"error": {"code": 404, "message": "File Not Found"}})
        if path == "/props" and model is None:
            return Reply(200, {"role": "router", "max_instances": 4})
        if path in ("/v1/models", "/models"):
            listed = [{"id": m, "status": {"value": "loaded"}} for m in self.models]
            listed += [{"id": m, "status": {"value": "unloaded"}} for m in self.unloaded]
            return Reply(200, {"object": "list", "data": listed})
        if path in ("/metrics", "/slots"):
            if model is None:
                return Reply(400, MISSING)
            if model not in self.models:
                return Reply(400, NOT_LOADED)
            delay = self.models[model]
            if path == "/metrics":
                return Reply(200, exposition(11), content_type="text/plain", delay=delay)
            return Reply(200, [{"id": 0, "is_processing": False}], delay=delay)
        return Reply(404, {"error": {"code": 404, "message": "File Not Found"}})


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def by_model(found: dict[str, list[Any]], name: str) -> dict[str | None, float]:
    """One instrument's points, by ``gen_ai.request.model`` (None: the server's own)."""
    return {p.attributes.get("gen_ai.request.model"): p.value for p in found.get(name, [])}


def test_a_server_that_changes_role_is_read_in_its_new_role_at_the_next_collection(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """Redeployed as a router between two collections (and back, and again), without ever
    being down: each next collection reports its figures in the new role. It kept reading
    it in the old one and reported only ``up``."""
    provider, metrics = reader
    llama = Llama({"hot": 0.0})
    with llama.server, LlamaCppClient(llama.server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=2)
        for role in ("single", "router", "single", "router"):
            llama.role = role
            found = points(metrics)
            generated = by_model(found, "llama_cpp.server.generated_tokens")
            busy = by_model(found, "llama_cpp.server.slots.busy")
            if role == "single":
                assert generated == {None: 7}, role
                assert busy == {None: 1}, role
                assert "llama_cpp.server.model.loaded" not in found
                assert by_model(found, "llama_cpp.server.up") == {None: 1}
            else:
                assert generated == {"hot": 11}, role
                assert busy == {"hot": 0}, role
                assert by_model(found, "llama_cpp.server.model.loaded") == {"hot": 1, "cold": 0}
                assert by_model(found, "llama_cpp.server.up") == {None: 1, "hot": 1}
        bridge.close()


def test_a_router_s_slow_models_are_read_at_once_within_the_timeout(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """Four loaded models, each of whose instances takes 0.8 s to answer /metrics and
    /slots: longer than timeout / models (2 s / 4), shorter than the timeout. Asked one
    after another (6.4 s) the router was reported down with no series; asked at once,
    every model is there."""
    provider, metrics = reader
    llama = Llama({name: 0.8 for name in ("a", "b", "c", "d")}, role="router")
    with llama.server, LlamaCppClient(llama.server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=2)
        found = points(metrics)
        bridge.close()
    assert by_model(found, "llama_cpp.server.up") == {None: 1, "a": 1, "b": 1, "c": 1, "d": 1}
    assert by_model(found, "llama_cpp.server.generated_tokens") == dict.fromkeys("abcd", 11)
    assert by_model(found, "llama_cpp.server.slots.total") == dict.fromkeys("abcd", 1)


def test_a_router_model_that_does_not_answer_in_time_is_the_only_one_left_out(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """One model's instance hangs: the router is up, the others' figures are kept, and
    that model alone is reported with ``up`` 0 (it was the whole router, down)."""
    provider, metrics = reader
    llama = Llama({"a": 0.0, "stuck": 30.0, "b": 0.0}, role="router")
    with llama.server, LlamaCppClient(llama.server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=1)
        found = points(metrics)
        assert bridge.up is True
        bridge.close()
    assert by_model(found, "llama_cpp.server.up") == {None: 1, "a": 1, "b": 1, "stuck": 0}
    assert by_model(found, "llama_cpp.server.generated_tokens") == {"a": 11, "b": 11}
    loaded = by_model(found, "llama_cpp.server.model.loaded")
    assert loaded == {"a": 1, "b": 1, "stuck": 1, "cold": 0}


def test_many_models_are_asked_a_bounded_number_at_a_time(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """Forty loaded models: never more than 8 requests of the bridge in flight at once."""
    provider, metrics = reader
    llama = Llama({f"m{i}": 0.05 for i in range(40)}, role="router")
    in_flight = {"now": 0, "most": 0}
    lock = threading.Lock()
    answer = llama.answer

    def counted(request: SeenRequest) -> Reply:
        if "model=" not in request.path:
            return answer(request)
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            reply = answer(request)
            threading.Event().wait(reply.delay)  # the answer's delay, counted as in flight
            reply.delay = 0
            return reply
        finally:
            with lock:
                in_flight["now"] -= 1

    llama.server.close()
    llama.server = FaultServer(counted)
    with llama.server, LlamaCppClient(llama.server.url, max_retries=0) as client:
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider, timeout=8)
        found = points(metrics)
        bridge.close()
    assert 1 < in_flight["most"] <= 8
    assert len(by_model(found, "llama_cpp.server.generated_tokens")) == 40


def test_metrics_text_is_read_for_the_reported_samples_only() -> None:
    """The bridge reads the samples it reports, as the Prometheus parser would (unlabelled
    samples, last one wins), and nothing else."""
    from llamatelemetry.api.resources.metrics import parse_prometheus
    from llamatelemetry.telemetry._server_metrics import read_values

    text = (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        "llamacpp:prompt_tokens_total 12\n"
        "llamacpp:prompt_tokens_total_other 99\n"
        'llamacpp:tokens_predicted_total{slot="1"} 5\n'
        "llamacpp:tokens_predicted_total{} 3.5 1700000000000\n"
        "llamacpp:requests_processing NaN\n"
        "llamacpp:requests_deferred +Inf\n"
        "llamacpp:n_decode_total 4e2\n"
    )
    expected = {s.name: s.value for s in parse_prometheus(text) if not s.labels}
    del expected["llamacpp:prompt_tokens_total_other"]  # not a reported sample
    found = read_values(text)

    def comparable(values: dict[str, float]) -> dict[str, Any]:
        return {name: "NaN" if value != value else value for name, value in values.items()}

    assert comparable(found) == comparable(expected)
    assert comparable(found)["llamacpp:requests_processing"] == "NaN"


def test_metrics_text_too_costly_to_read_is_refused() -> None:
    """More lines than a llama-server's /metrics ever has, or a reading past the scrape's
    end: refused, not parsed at length."""
    import time

    from llamatelemetry.telemetry._server_metrics import (
        MAX_METRICS_LINES,
        TooCostlyError,
        read_values,
    )

    many = "llamacpp:prompt_tokens_total 1\n" * (MAX_METRICS_LINES + 1)
    with pytest.raises(TooCostlyError, match="lines"):
        read_values(many)
    assert read_values(many[: -len("llamacpp:prompt_tokens_total 1\n")]) == {
        "llamacpp:prompt_tokens_total": 1.0
    }
    with pytest.raises(TooCostlyError, match="time was up"):
        read_values("llamacpp:prompt_tokens_total 1\n", end=time.monotonic() - 1)


def single_server(metrics: str) -> Callable[[SeenRequest], Reply]:
    """A single-model server with one idle slot whose /metrics answers ``metrics``."""

    def reply(request: SeenRequest) -> Reply:
        if request.path.startswith("/props"):
            return Reply(200, {"total_slots": 1})
        if request.path.startswith("/metrics"):
            return Reply(200, metrics, content_type="text/plain")
        return Reply(200, [{"id": 0, "is_processing": False}])

    return reply


def test_a_costly_metrics_body_leaves_out_its_server_alone(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """A server answering /metrics with tens of thousands of series is reported down (its
    figures could not be read in its time), beside a server whose figures are all there."""
    provider, metrics = reader
    heavy = "".join(f'llamacpp:prompt_tokens_total{{slot="{i}"}} 1\n' for i in range(40_000))
    bodies = {"heavy": heavy, "honest": exposition(7)}

    answer = single_server
    with (
        FaultServer(answer(bodies["heavy"])) as hostile,
        FaultServer(answer(bodies["honest"])) as honest,
        LlamaCppClient(hostile.url, max_retries=0) as one,
        LlamaCppClient(honest.url, max_retries=0) as two,
    ):
        bridges = [
            LlamaServerMetrics(c, interval=0, meter_provider=provider, timeout=2)
            for c in (one, two)
        ]
        found = points(metrics)
        for bridge in bridges:
            bridge.close()
    up = {p.attributes["server.port"]: p.value for p in found["llama_cpp.server.up"]}
    assert up == {hostile.port: 0, honest.port: 1}
    [generated] = found["llama_cpp.server.generated_tokens"]
    assert (generated.attributes["server.port"], generated.value) == (honest.port, 7)
    assert "llama_cpp.server.prompt_tokens" not in found
