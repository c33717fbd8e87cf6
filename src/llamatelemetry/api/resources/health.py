"""``/health``: is the server up, and has it loaded its model?"""

from __future__ import annotations

import time
from typing import Any

from .._api_errors import APIConnectionError, APITimeoutError
from .._calls_and_callers import Call, Flow, Sleep
from .._deadline_backend import call_deadline
from .._validation import check_number
from ._resource import Resource

__all__ = ["Health"]


def _health(data: Any) -> dict[str, Any]:
    """Both answers as a dict: ``{"status": "ok"}`` or, while loading (503),
    ``{"status": "loading model", "error": {...}}``."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = str(data["error"].get("message") or "unavailable")
        return {"status": message.lower(), **data}
    return dict(data)


PROBE_TIMEOUT = 5.0  # a health probe must not inherit a generation's long read timeout


def _check_call(timeout: float = PROBE_TIMEOUT) -> Call[dict[str, Any]]:
    # A probe: one quick try, and a 503 is an answer rather than a failure. ``timeout`` is
    # a wall-clock bound on the whole probe: a server trickling its answer cannot stretch it.
    return Call(
        "GET",
        "/health",
        _health,
        ok_statuses=frozenset({503}),
        retries=0,
        timeout=timeout,
        total_timeout=timeout,
        operation="health",
    )


def _wait_flow(interval: float, within: str) -> Flow[dict[str, Any]]:
    # The client runs the flow under its deadline: the timeout, or the end of a deadline()
    # block around the wait when that comes first.
    deadline = call_deadline.get()
    assert deadline is not None, "run with total_timeout"
    last: Any = "no answer"
    while True:
        try:
            remaining = max(deadline - time.monotonic(), 0.01)
            health = yield _check_call(min(remaining, PROBE_TIMEOUT))
            if health.get("status") == "ok":
                return health  # type: ignore[no-any-return]
            last = health.get("status")
        except (APIConnectionError, APITimeoutError) as exc:
            last = exc
        if time.monotonic() + interval > deadline:
            raise APITimeoutError(f"the server was not ready within {within} (last: {last})")
        yield Sleep(interval)


class Health(Resource):
    __slots__ = ()

    def check(self, timeout: float | None = None) -> dict[str, Any]:
        """``{"status": "ok"}`` when ready; never raises on 503 "Loading model".

        ``timeout`` is a wall-clock limit on the whole probe, not a per-read one: by default
        5 s, or the client's ``total_timeout`` when that is shorter."""
        if timeout is None:
            total = self._client.total_timeout
            timeout = PROBE_TIMEOUT if total is None else min(total, PROBE_TIMEOUT)
        check_number("timeout", timeout, minimum=0.001)
        return self._client.execute_call(_check_call(float(timeout)))

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll until the server answers ok; raise :class:`APITimeoutError` once ``timeout``
        seconds of wall-clock time have passed, however slowly the server answers."""
        if timeout is None:
            raise TypeError("timeout must be a number of seconds, not None")
        check_number("timeout", timeout, minimum=0.0)
        check_number("interval", interval, minimum=0.001)
        outer = call_deadline.get()
        within = f"{timeout:g}s"
        if outer is not None and outer < time.monotonic() + timeout:
            within = "the deadline() block around it"
        # timeout=0 still asks once: the first probe gets a moment.
        return self._client.run_flow(
            _wait_flow(float(interval), within), total_timeout=max(float(timeout), 0.05)
        )
