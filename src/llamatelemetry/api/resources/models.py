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

from .._base import Call, Flow, Sleep
from .._errors import APITimeoutError, ModelLoadError, NotFoundError, status_error
from .._validation import check_number, check_text
from .._wire import call_deadline
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


def model_status(models: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ``status`` object of ``name`` in a router's model list (``{"value": ...}``)."""
    for entry in models:
        if entry.get("id") == name or name in (entry.get("aliases") or ()):
            status = entry.get("status")
            if isinstance(status, dict):
                return status
            # A single-model server lists its model without a status: it is loaded.
            return {"value": "loaded"}
    known = ", ".join(repr(e.get("id")) for e in models) or "none"
    raise NotFoundError(404, f"model {name!r} is not among the server's models ({known})")


def model_state(data: Any, name: str) -> str | None:
    """``name``'s status value in a raw ``/models`` answer; None when it is not listed."""
    try:
        return str(model_status(_model_list(data), name).get("value"))
    except (NotFoundError, LookupError, TypeError, AttributeError):
        return None


def _list_call() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/models", _model_list, retries=0, operation="models")


def _change_call(action: str, name: str, timeout: float, wait: bool) -> Call[str]:
    """``POST /models/{action}``, then (``wait``) the polls until the change is done, all in
    one call: telemetry sees one operation lasting as long as the load."""
    body = {"model": name}
    return Call(
        "POST",
        f"/models/{action}",
        _as_dict,  # type: ignore[arg-type]  # follow() turns the answer into the status
        body=body,
        # "already running" / "not running" is an answer: the change is already made; a
        # 404 ("File Not Found") is explained by the model list.
        ok_statuses=frozenset({400, 404}),
        retries=0,
        operation=f"{action}_model",
        follow=lambda answer: _change_flow(action, name, answer, wait),
        total_timeout=timeout,
    )


def _change_flow(action: str, name: str, answer: dict[str, Any], wait: bool) -> Flow[str]:
    error = answer.get("error")
    if isinstance(error, dict) and error.get("code") == 404:
        models = yield _list_call()
        model_status(models, name)  # an unknown model: its own NotFoundError
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
                int(error.get("code") or 400), message, error.get("type"), answer,
                method="POST", url=f"/models/{action}",
            )  # fmt: skip
    wanted = _RESIDENT if action == "load" else frozenset({"unloaded"})
    deadline = call_deadline.get()
    while True:
        status = model_status((yield _list_call()), name)
        value = status.get("value")
        if value in wanted or not wait:
            return str(value)
        if action == "load" and (status.get("failed") or value == "unloaded"):
            code = status.get("exit_code")
            raise ModelLoadError(
                f"the router could not load {name!r}"
                + (f" (its instance exited with status {code})" if code is not None else "")
                + "; the router's log says why",
                status=status,
            )
        if deadline is not None and time.monotonic() + _POLL_INTERVAL > deadline:
            raise APITimeoutError(f"{name!r} was still {value} when the {action} timed out")
        yield Sleep(_POLL_INTERVAL)


class Models(Resource):
    __slots__ = ()

    def list(self) -> list[dict[str, Any]]:
        """The models as dicts (``id``, ``meta`` with ``n_embd``, ``n_ctx_train``, ...); a
        router lists every model it can load, each with its ``status``."""
        return self._client._execute(Call("GET", "/v1/models", _model_list, operation="models"))

    def status(self, model: str) -> str:
        """A router's model's status: ``"unloaded"``, ``"loading"``, ``"loaded"`` or
        ``"sleeping"`` (a single-model server's model is ``"loaded"``). `NotFoundError`
        for a model the server does not have."""
        name = check_text("model", model)
        return self._client._execute(
            Call(
                "GET",
                "/models",
                lambda data: str(model_status(_model_list(data), name).get("value")),
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
        return self._client._execute(_change_call(action, name, float(timeout), wait))


class Props(Resource):
    __slots__ = ()

    def get(self, model: str | None = None) -> dict[str, Any]:
        """The server's properties: default generation settings, slots, chat template,
        ``is_sleeping``, ...; a router's own (``role: "router"``), or with ``model=`` those
        of one of its loaded models (`BadRequestError` when it is not loaded)."""
        return self._client._execute(
            Call("GET", "/props", _as_dict, params=model_params(model), operation="props")
        )

    def is_sleeping(self, model: str | None = None) -> bool:
        """Whether the server (or a router's model) has freed its model after
        ``sleep_idle_seconds`` without work: its next request waits for a reload. Asking
        does not wake it."""
        return bool(self.get(model).get("is_sleeping", False))
