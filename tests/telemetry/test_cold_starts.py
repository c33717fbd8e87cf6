"""Asking a server about its model before a call (to mark cold starts) must never cost the
call: not its answer, not its time limit, not more than one slow ask per minute. And a
router's odd answers are errors of the client's own kinds. Hostile servers of plain
sockets; the real router and sleeping servers are in tests/server."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llamatelemetry.api import APIResponseError, APITimeoutError, LlamaCppClient, deadline
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, LlamaServerMetrics
from llamatelemetry.telemetry._warmth import PROBE_TIMEOUT
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

from ..replies import CHAT
from .test_pipeline import points

MESSAGES = [{"role": "user", "content": "Hi"}]


def routed(routes: dict[str, Reply]) -> Any:
    """A script answering by path (``/props``, ``/models``, ...); chat answers by default."""

    def answer(request: SeenRequest) -> Reply:
        return routes.get(request.path.split("?")[0], Reply(200, CHAT))

    return answer


def asked(server: FaultServer, path: str) -> int:
    return sum(1 for r in server.requests if r.path.split("?")[0] == path)


def router_models(status: Any) -> dict[str, Any]:
    return {"data": [{"id": "m", "status": status}]}


@pytest.mark.parametrize(
    "props",
    [
        Reply(200, {"total_slots": 1}, delay=5.0),  # stalls
        Reply(500, {"error": {"code": 500, "message": "boom"}}),
        Reply(404, b"<html>Not Found</html>", content_type="text/html"),  # a proxy
        Reply(200, [1, 2, 3]),  # not an object
        Reply(drop=True),
    ],
    ids=["stall", "500", "proxy-404", "list", "drop"],
)
def test_a_bad_ask_costs_one_call_at_most_its_budget_then_nothing(props: Reply) -> None:
    with FaultServer(routed({"/props": props})) as server:
        with InstrumentedLlamaCppClient(server.url, max_retries=0) as client:
            took = []
            for _ in range(4):
                started = time.monotonic()
                reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
                took.append(time.monotonic() - started)
                assert reply.choices[0].message.content == "ok"
        assert asked(server, "/props") == 1  # not asked again after it failed
        assert took[0] < PROBE_TIMEOUT + 2.0  # well below the 5 s stall
        assert max(took[1:]) < 1.0  # nothing waited for the stalled ask


def test_asking_never_lengthens_a_time_limited_call() -> None:
    chat_after = Reply(200, CHAT, delay=0.38)  # in time alone, not after a 0.04 s ask
    routes = {"/props": Reply(200, {"total_slots": 1}, delay=5.0)}
    with FaultServer(lambda r: routes.get(r.path, chat_after)) as server:
        with InstrumentedLlamaCppClient(server.url, max_retries=0, total_timeout=0.4) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError):
                client.chat.completions.create(messages=MESSAGES, max_tokens=1)
            assert time.monotonic() - started < 0.4 + 1.0  # not waiting out the 5 s stall
        with InstrumentedLlamaCppClient(server.url, max_retries=0) as client:
            started = time.monotonic()
            with deadline(0.4), pytest.raises(APITimeoutError):
                client.chat.completions.create(messages=MESSAGES, max_tokens=1)
            assert time.monotonic() - started < 0.4 + 1.0


def test_a_deadline_leaves_the_call_its_answer() -> None:
    """The ask may take a tenth of what is left; the answer that comes at once still comes."""
    with FaultServer(routed({"/props": Reply(200, {}, delay=5.0)})) as server:
        with InstrumentedLlamaCppClient(server.url, max_retries=0) as client, deadline(1.0):
            reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
    assert reply.choices[0].message.content == "ok"


def test_a_router_is_asked_before_every_call_and_its_odd_states_are_no_cold_start(
    span_exporter: Any, providers: Any
) -> None:
    tracer_provider, meter_provider, _ = providers
    statuses = iter([{"value": "unloaded"}, {"value": "loaded"}, {}, {"value": "exploded"}])
    routes = {"/props": Reply(200, {"role": "router"})}

    def answer(request: SeenRequest) -> Reply:
        if request.path == "/models":
            return Reply(200, router_models(next(statuses)))
        return routes.get(request.path, Reply(200, CHAT))

    with FaultServer(answer) as server:
        with InstrumentedLlamaCppClient(
            server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
        ) as client:
            for _ in range(4):
                client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
        assert asked(server, "/props") == 1 and asked(server, "/models") == 4
    marks = [
        (s.attributes.get("llama_cpp.model.state"), s.attributes.get("llama_cpp.cold_start"))
        for s in span_exporter.get_finished_spans()
    ]
    assert marks == [("unloaded", True), ("loaded", None), (None, None), (None, None)]


@pytest.mark.parametrize(
    "models",
    [
        {"data": None},
        {"data": [None]},
        router_models("loaded"),  # a status that is not an object
        router_models({"value": None}),
    ],
    ids=["null-data", "null-entry", "status-string", "status-null"],
)
def test_odd_model_lists_are_response_errors(models: Any) -> None:
    load_ok = Reply(200, {"success": True})
    with FaultServer(routed({"/models/load": load_ok, "/models": Reply(200, models)})) as server:
        with LlamaCppClient(server.url, max_retries=0) as client:
            with pytest.raises(APIResponseError, match="unexpected shape"):
                client.models.load("m")
            with pytest.raises(APIResponseError, match="unexpected shape"):
                client.models.status("m")
        assert asked(server, "/models/load") == 1  # the POST was sent once


def test_aliases_of_odd_types_are_ignored() -> None:
    entries = [
        {"id": "x", "aliases": "mmm", "status": {"value": "loaded"}},  # a string, not a list
        {"id": "y", "aliases": 5, "status": {"value": "loaded"}},
        {"id": "z", "aliases": ["m"], "status": {"value": "unloaded"}},
    ]
    with FaultServer(routed({"/models": Reply(200, {"data": entries})})) as server:
        with LlamaCppClient(server.url) as client:
            assert client.models.status("m") == "unloaded"  # z's alias, not a substring of x's


def test_a_load_is_bounded_by_its_timeout_whole() -> None:
    routes = {
        "/models/load": Reply(200, {"success": True}, delay=1.0),
        "/models": Reply(200, router_models({"value": "loading"})),
    }
    with FaultServer(routed(routes)) as server, LlamaCppClient(server.url) as client:
        started = time.monotonic()
        # cut between polls, or in one when a busy machine woke it late
        with pytest.raises(APITimeoutError, match=r"still loading|GET /models: .* passed"):
            client.models.load("m", timeout=2.0)
        # the POST's time counts too: not 2 s more after its 1 s
        assert time.monotonic() - started < 2.0 + 0.8


def test_an_odd_router_does_not_silence_the_other_bridges(providers: Any) -> None:
    _, meter_provider, reader = providers
    metrics = "llamacpp:prompt_tokens_total 42\n"
    healthy_routes = {
        "/props": Reply(200, {"total_slots": 1}),
        "/metrics": Reply(200, metrics, content_type="text/plain"),
        "/slots": Reply(200, [{"id": 0, "is_processing": False}]),
    }
    odd_routes = {
        "/props": Reply(200, {"role": "router"}),
        "/v1/models": Reply(200, {"data": [{"id": "m", "status": "loaded"}, 7]}),
    }
    with FaultServer(routed(healthy_routes)) as healthy, FaultServer(routed(odd_routes)) as odd:
        clients = [LlamaCppClient(s.url) for s in (odd, healthy)]
        bridges = [
            LlamaServerMetrics(client, interval=0, meter_provider=meter_provider)
            for client in clients
        ]
        try:
            found = points(reader)
            assert bridges[0]._scrape() == [] and bridges[0].failures >= 1  # no exception
        finally:
            for bridge in bridges:
                bridge.close()
            for client in clients:  # the bridge leaves the caller's client open
                client.close()
    [prompt] = found["llama_cpp.server.prompt_tokens"]
    assert prompt.value == 42 and prompt.attributes["server.port"] == int(
        healthy.url.split(":")[-1]
    )
    assert "llama_cpp.server.model.loaded" not in found  # the odd entries are skipped


def test_probe_answers_are_json_objects() -> None:
    # The ask reads /props as JSON: a body that is no JSON is a failed ask, not a crash.
    with FaultServer(routed({"/props": Reply(200, b"not json", content_type="text/plain")})) as s:
        with InstrumentedLlamaCppClient(s.url, max_retries=0) as client:
            for _ in range(2):
                reply = client.chat.completions.create(messages=MESSAGES, max_tokens=1)
                assert reply.choices[0].message.content == "ok"
        assert asked(s, "/props") == 1


def test_the_async_client_asks_once_within_its_budget_too() -> None:
    import asyncio

    from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient

    async def calls(url: str) -> list[float]:
        took = []
        async with InstrumentedAsyncLlamaCppClient(url, max_retries=0) as client:
            for _ in range(3):
                started = time.monotonic()
                await client.chat.completions.create(messages=MESSAGES, max_tokens=1)
                took.append(time.monotonic() - started)
        return took

    with FaultServer(routed({"/props": Reply(200, {}, delay=5.0)})) as server:
        took = asyncio.run(calls(server.url))
        assert asked(server, "/props") == 1
    assert took[0] < PROBE_TIMEOUT + 2.0 and max(took[1:]) < 1.0  # well below the 5 s stall


def test_a_dropped_load_is_sent_again(fast_backoff: None) -> None:
    """Loading is idempotent (a loaded model answers "already running"): a load request
    the router dropped is retried, as a GET would be."""
    running = {"error": {"code": 400, "message": "model is already running"}}
    loads = iter([Reply(drop=True), Reply(400, running)])

    def answer(request: SeenRequest) -> Reply:
        if request.path == "/models/load":
            return next(loads)
        return Reply(200, router_models({"value": "loaded"}))

    with FaultServer(answer) as server, LlamaCppClient(server.url, max_retries=2) as client:
        assert client.models.load("m") == "loaded"
        assert asked(server, "/models/load") == 2
