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
second idle at the soonest. Asking never costs the call its answer: it takes at most
``PROBE_TIMEOUT`` and a tenth of what the call's own time limit leaves, the call keeps
the rest of its limit, and a server that does not answer is not asked again for a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..api._internal import Call, model_state

__all__ = ["Warmth", "COLD_START", "MODEL_STATE", "MODEL_OPERATIONS", "Probe", "probe_budget"]

MODEL_STATE = "llama_cpp.model.state"
COLD_START = "llama_cpp.cold_start"
#: llama-server refuses a shorter ``--sleep-idle-seconds``.
MIN_IDLE_SECONDS = 1.0
PROBE_TIMEOUT = 0.25  # an answer from memory: a loopback server gives it in a millisecond
PROBE_SHARE = 0.1  # at most this share of a time-limited call's limit
QUIET_AFTER_FAILURE = 60.0
#: The operations whose latency is watched, and which need the model in memory.
MODEL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "rerank"})

Probe = Generator[Call[Any], Any, dict[str, Any]]


@dataclass(slots=True)
class _Server:
    router: bool | None = None  # unknown until first asked
    last_seen: float = float("-inf")  # when a call of ours last started or ended there
    quiet_until: float = float("-inf")  # not asked again until then, after a failed ask


def _probe(path: str, budget: float) -> Call[Any]:
    return Call(
        "GET", path, lambda data: data, retries=0, timeout=budget,
        total_timeout=budget, operation="probe",
    )  # fmt: skip


def probe_budget(bound: float | None, outer_deadline: float | None) -> float | None:
    """Seconds an ask may take before a call limited to ``bound`` seconds (inside a
    ``deadline()`` ending at ``outer_deadline``); None: too little time to ask."""
    budget = PROBE_TIMEOUT
    if bound is not None:
        budget = min(budget, bound * PROBE_SHARE)
    if outer_deadline is not None:
        budget = min(budget, (outer_deadline - time.monotonic()) * PROBE_SHARE)
    return budget if budget >= 0.005 else None


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

    def probe(
        self, base_url: str, call: Call[Any], budget: Callable[[], float | None]
    ) -> Probe | None:
        """The requests to ask before ``call``, each within ``budget()`` seconds (answers
        are sent back; a failed one ends it: tell `failed`), returning the span attributes;
        or None when there is nothing to ask (the common case, decided without a generator
        or the budget)."""
        if call.operation not in MODEL_OPERATIONS:
            return None
        server = self._server(base_url)
        now = time.monotonic()
        idle = now - server.last_seen >= MIN_IDLE_SECONDS
        server.last_seen = now
        if now < server.quiet_until:
            return None
        if server.router is None or (idle and not server.router):
            props = True
        elif server.router:
            props = False
        else:
            return None  # busy within the last second: it cannot be asleep
        seconds = budget()
        if seconds is None:
            return None
        return self._ask(base_url, server, call, seconds, props=props)

    def _ask(
        self, base_url: str, server: _Server, call: Call[Any], budget: float, *, props: bool
    ) -> Probe:
        if props:
            answer = yield _probe("/props", budget)
            if not isinstance(answer, dict):
                self.failed(base_url)
                return {}
            server.router = answer.get("role") == "router"
            if not server.router:
                return _state("sleeping" if answer.get("is_sleeping") else "loaded")
        model = call.body.get("model") if isinstance(call.body, dict) else None
        if not isinstance(model, str):
            return {}  # the router will refuse the call itself
        state = model_state((yield _probe("/models", budget)), model)
        return {} if state is None else _state(state)

    def failed(self, base_url: str) -> None:
        """An ask went wrong (no answer in time, an error, an answer of unexpected shape):
        this server is not asked again for a while."""
        self._server(base_url).quiet_until = time.monotonic() + QUIET_AFTER_FAILURE

    def done(self, base_url: str, operation: str) -> None:
        """A call (or its stream) has ended: the server was busy until now."""
        if operation in MODEL_OPERATIONS:
            self._server(base_url).last_seen = time.monotonic()
