"""``/v1/models``, ``/models`` and ``/props``: what the server has loaded, and a router's
models loaded and unloaded on demand.

A router (``llama-server --models-dir DIR``) lists every model it can serve with a
``status`` (``unloaded``, ``loading``, ``loaded``, ``sleeping``), loads one when a request
names it, and answers ``/props``, ``/slots`` and ``/metrics`` per model (``?model=``).
``POST /models/load`` only starts a load: `Models.load` waits until the model is loaded
(or failed), so the time it takes is the load's, on its telemetry span too.
"""

from __future__ import annotations

import time
from typing import Any

from .._api_errors import APITimeoutError, ModelLoadError, NotFoundError, status_error
from .._calls_and_callers import Call, Flow, Sleep
from .._deadline_backend import call_deadline
from .._validation import check_number, check_text
from ._resource import Resource

__all__ = ["Models", "Props", "model_params", "model_state", "model_status"]

#: Statuses a router reports for a model (``GET /models`` → ``status.value``).
MODEL_STATUSES = ("unloaded", "loading", "loaded", "sleeping", "downloading")
#: A resident model: ``sleeping`` has freed its memory but wakes on the next request.
_RESIDENT = frozenset({"loaded", "sleeping"})
_POLL_INTERVAL = 0.05
LOAD_TIMEOUT = 300.0  # a large model on a slow disk takes minutes


def _model_list(data: Any) -> list[dict[str, Any]]:
    items = data["data"] if isinstance(data, dict) else data
    return [dict(item) for item in items]


def _as_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def model_params(model: str | None) -> dict[str, str] | None:
    """The query that routes a GET to one of a router's models without loading it: reading
    a model's props, slots or metrics must not be what loads it."""
    if model is None:
        return None
    return {"model": check_text("model", model), "autoload": "false"}


def _aliases(entry: dict[str, Any]) -> tuple[Any, ...]:
    aliases = entry.get("aliases")
    return tuple(aliases) if isinstance(aliases, (list, tuple)) else ()


def model_status(models: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ``status`` object of ``name`` in a router's model list (``{"value": ...}``);
    `NotFoundError` naming the known models when it is not listed, and a `TypeError`
    (an answer of unexpected shape, to the caller) when the list is not one of models."""
    for entry in models:
        if not isinstance(entry, dict):
            raise TypeError(f"a model entry is {type(entry).__name__}, not an object")
        if entry.get("id") == name or name in _aliases(entry):
            status = entry.get("status")
            if status is None:
                # A single-model server lists its model without a status: it is loaded.
                return {"value": "loaded"}
            if not isinstance(status, dict) or not isinstance(status.get("value"), str):
                raise TypeError(f"{name!r} has a status of unexpected shape: {status!r}")
            return status
    known = ", ".join(repr(e.get("id")) for e in models) or "none"
    raise NotFoundError(404, f"model {name!r} is not among the server's models ({known})")


def model_state(data: Any, name: str) -> str | None:
    """``name``'s status in a raw ``/models`` answer, when it is one a router reports;
    None otherwise (not listed, an answer of unexpected shape)."""
    try:
        value = model_status(_model_list(data), name)["value"]
    except (NotFoundError, LookupError, TypeError, AttributeError):
        return None
    return value if value in MODEL_STATUSES else None


def _status_call(name: str) -> Call[dict[str, Any]]:
    # Parsed inside the call, so an answer of unexpected shape is an APIResponseError.
    # GETs: retried like any other (a 503 during a long load must not end the wait).
    return Call(
        "GET",
        "/models",
        lambda data: model_status(_model_list(data), name),
        operation="models",
    )


def _change_call(action: str, name: str, timeout: float, wait: bool) -> Call[str]:
    """``POST /models/{action}``, then (``wait``) the polls until the change is done, all in
    one call within ``timeout``: telemetry sees one operation lasting as long as the load."""
    body = {"model": name}
    return Call(
        "POST",
        f"/models/{action}",
        _as_dict,  # type: ignore[arg-type]  # follow() turns the answer into the status
        body=body,
        # "already running" / "not running" is an answer: the change is already made; a
        # 404 ("File Not Found") is explained by the model list.
        ok_statuses=frozenset({400, 404}),
        # Idempotent (loading a loaded model is an answer, not a second load): a request
        # the router dropped is retried like a GET.
        operation=f"{action}_model",
        follow=lambda answer: _change_flow(action, name, answer, wait),
        total_timeout=timeout,
    )


def _error_code(error: dict[str, Any]) -> int:
    code = error.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else 400


def _change_flow(action: str, name: str, answer: dict[str, Any], wait: bool) -> Flow[str]:
    error = answer.get("error")
    if isinstance(error, dict) and _error_code(error) == 404:
        try:
            yield _status_call(name)  # an unknown model: its own NotFoundError
        except NotFoundError as exc:
            if "not among" in exc.message:
                raise
            raise NotFoundError(
                404,
                "this server has no /models: loading and unloading models takes a router "
                "(llama-server --models-dir DIR, or ServerManager(models_dir=...))",
            ) from None
        raise NotFoundError(
            404,
            f"this server serves {name!r} alone and cannot {action} models: that takes a "
            "router (llama-server --models-dir DIR, or ServerManager(models_dir=...))",
            error.get("type"),
            answer,
        )
    if isinstance(error, dict):
        message = str(error.get("message", ""))
        if not ("already running" in message or "not running" in message):
            raise status_error(
                _error_code(error), message, error.get("type"), answer,
                method="POST", url=f"/models/{action}",
            )  # fmt: skip
    wanted = _RESIDENT if action == "load" else frozenset({"unloaded"})
    deadline = call_deadline.get()
    gone_since: float | None = None
    while True:
        status = yield _status_call(name)
        value = status["value"]
        if value in wanted or not wait:
            return str(value)
        now = time.monotonic()
        if action == "load" and value == "unloaded":
            gone_since = now if gone_since is None else gone_since
        if action == "load" and (status.get("failed") or (gone_since and now - gone_since > 1.0)):
            code = status.get("exit_code")
            why = "its instance exited" if status.get("failed") else "it was unloaded again"
            raise ModelLoadError(
                f"the router could not load {name!r} ({why}"
                + (f" with status {code}" if code is not None else "")
                + "); the router's log says why (ServerManager.log_tail(), when a manager "
                "started it)",
                status=status,
            )
        if deadline is not None and now + _POLL_INTERVAL > deadline:
            raise APITimeoutError(f"{name!r} was still {value} when the {action} timed out")
        yield Sleep(_POLL_INTERVAL)


class Models(Resource):
    __slots__ = ()

    def list(self) -> list[dict[str, Any]]:
        """The models as dicts (``id``, ``meta`` with ``n_embd``, ``n_ctx_train``, ...); a
        router lists every model it can load, each with its ``status``."""
        return self._client.execute_call(Call("GET", "/v1/models", _model_list, operation="models"))

    def status(self, model: str) -> str:
        """A router's model's status: ``"unloaded"``, ``"loading"``, ``"loaded"`` or
        ``"sleeping"`` (a single-model server's model is ``"loaded"``). `NotFoundError`
        for a model the server does not have."""
        name = check_text("model", model)
        return self._client.execute_call(
            Call(
                "GET",
                "/models",
                lambda data: str(model_status(_model_list(data), name)["value"]),
                operation="models",
            )
        )

    def load(self, model: str, *, wait: bool = True, timeout: float = 300.0) -> str:
        """Load one of a router's models; with ``wait``, return once it is loaded.

        Returns the model's status (``"loaded"``; ``"loading"`` when not waiting). Loading
        a loaded model is not an error. Raises `ModelLoadError` when its instance fails,
        `APITimeoutError` after ``timeout`` seconds, `NotFoundError` for an unknown model.
        A router holding ``models_max`` models unloads the least recently used one."""
        return self._change("load", model, wait, timeout)

    def unload(self, model: str, *, wait: bool = True, timeout: float = 300.0) -> str:
        """Unload one of a router's models (freeing its memory); ``"unloaded"`` once done.
        Unloading a model that is not loaded is not an error."""
        return self._change("unload", model, wait, timeout)

    def _change(self, action: str, model: str, wait: bool, timeout: float) -> str:
        name = check_text("model", model)
        if not isinstance(wait, bool):
            raise TypeError(f"wait must be True or False, not {wait!r}")
        check_number("timeout", timeout, minimum=0.001)
        return self._client.execute_call(_change_call(action, name, float(timeout), wait))


class Props(Resource):
    __slots__ = ()

    def get(self, model: str | None = None) -> dict[str, Any]:
        """The server's properties: default generation settings, slots, chat template,
        ``is_sleeping``, ...; a router's own (``role: "router"``), or with ``model=`` those
        of one of its loaded models (`BadRequestError` when it is not loaded)."""
        return self._client.execute_call(
            Call("GET", "/props", _as_dict, params=model_params(model), operation="props")
        )

    def is_sleeping(self, model: str | None = None) -> bool:
        """Whether the server (or a router's model) has freed its model after
        ``sleep_idle_seconds`` without work: its next request waits for a reload. Asking
        does not wake it."""
        return bool(self.get(model).get("is_sleeping", False))
