"""Cold starts: was the model in memory when a call was sent?

A router (``llama-server --models-dir``) loads a model when a request first names it, and
a server started with ``--sleep-idle-seconds`` frees its model after that long idle and
reloads it on the next request. Either way the call's time to first token includes a
model load, and it must not be read as slow decoding. Before a call that uses the model,
telemetry asks the server (endpoints that neither wake it nor load anything), and puts on
the span ``llama_cpp.model.state`` (the model's state then) and, when it had to load,
``llama_cpp.cold_start`` (on the metric points too).

Asking costs a request, so it is done only when the answer can be "cold": on a router,
before every call (another client may have unloaded the model); on a single server, only
after a second without any call of ours there, since llama-server sleeps after one
second idle at the soonest.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from ..api._internal import Call, model_state

__all__ = ["Warmth", "COLD_START", "MODEL_STATE"]

MODEL_STATE = "llama_cpp.model.state"
COLD_START = "llama_cpp.cold_start"
#: llama-server refuses a shorter ``--sleep-idle-seconds``.
MIN_IDLE_SECONDS = 1.0
PROBE_TIMEOUT = 2.0
#: The operations whose latency is watched, and which need the model in memory.
_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "rerank"})

Probe = Generator[Call[Any], Any, dict[str, Any]]


@dataclass(slots=True)
class _Server:
    router: bool | None = None  # unknown until first asked
    last_seen: float = float("-inf")  # when a call of ours last started or ended there


def _probe(path: str) -> Call[Any]:
    return Call(
        "GET", path, lambda data: data, retries=0, timeout=PROBE_TIMEOUT,
        total_timeout=PROBE_TIMEOUT, operation="probe",
    )  # fmt: skip


def _state(value: str) -> dict[str, Any]:
    if value == "loaded":
        return {MODEL_STATE: value}
    return {MODEL_STATE: value, COLD_START: True}


class Warmth:
    """What one telemetry knows of each server it has called."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}

    def _server(self, base_url: str) -> _Server:
        server = self._servers.get(base_url)
        if server is None:
            server = self._servers.setdefault(base_url, _Server())  # atomic: threads agree
        return server

    def probe(self, base_url: str, call: Call[Any]) -> Probe:
        """Yields the requests to ask (answers are sent back; a failed one ends it), and
        returns the span attributes."""
        if call.operation not in _MODEL_OPERATIONS:
            return {}
        server = self._server(base_url)
        now = time.monotonic()
        idle = now - server.last_seen >= MIN_IDLE_SECONDS
        server.last_seen = now
        if server.router is None or (idle and not server.router):
            props = yield _probe("/props")
            if not isinstance(props, dict):
                return {}
            server.router = props.get("role") == "router"
            if not server.router:
                return _state("sleeping" if props.get("is_sleeping") else "loaded")
        if not server.router:
            return {}  # busy within the last second: it cannot be asleep
        model = call.body.get("model") if isinstance(call.body, dict) else None
        if not isinstance(model, str):
            return {}  # the router will refuse the call itself
        state = model_state((yield _probe("/models")), model)
        return {} if state is None else _state(state)

    def done(self, base_url: str, operation: str) -> None:
        """A call (or its stream) has ended: the server was busy until now."""
        if operation in _MODEL_OPERATIONS:
            self._server(base_url).last_seen = time.monotonic()
