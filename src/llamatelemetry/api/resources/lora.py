"""``/lora-adapters``: hot-swap the scales of the LoRA adapters the server loaded at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._calls_and_callers import Call, Flow
from .._validation import check_int, check_number, check_text
from ._resource import Resource

__all__ = ["Lora"]

Adapters = list[dict[str, Any]]


def _adapter_list(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise TypeError(f"expected a list of adapters, got {type(data).__name__}")
    return [dict(item) for item in data]


def _list_call() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/lora-adapters", _adapter_list, operation="lora_list")


def _set_flow(scales: dict[int, float]) -> Flow[list[dict[str, Any]]]:
    # The server disables every adapter left out of a POST, so send them all, changing
    # only the ones asked for; then read back what the server now has.
    adapters = yield _list_call()
    known = {a["id"] for a in adapters}
    unknown = sorted(set(scales) - known)
    if unknown:
        raise ValueError(f"no LoRA adapter with id {unknown}; the server has ids {sorted(known)}")
    body = [{"id": a["id"], "scale": scales.get(a["id"], a.get("scale", 0.0))} for a in adapters]
    yield Call("POST", "/lora-adapters", lambda data: data, body=body, operation="lora_set")
    return (yield _list_call())  # type: ignore[no-any-return]


def _apply_flow(path: str, scale: float) -> Flow[list[dict[str, Any]]]:
    adapters = yield _list_call()
    wanted = os.path.realpath(path)
    for adapter in adapters:
        if adapter.get("path") == path or os.path.realpath(str(adapter.get("path"))) == wanted:
            return (yield from _set_flow({adapter["id"]: scale}))
    loaded = [a.get("path") for a in adapters] or "none"
    raise ValueError(
        f"LoRA adapter {path!r} is not loaded on the server (loaded: {loaded}); "
        "llama-server loads adapters only at start: pass it with --lora "
        "(ServerManager.start(lora=[...]))"
    )


class Lora(Resource):
    __slots__ = ()

    def list(self) -> list[dict[str, Any]]:
        """The adapters as dicts with ``id``, ``path`` and ``scale``."""
        return self._client.execute_call(_list_call())

    def apply(self, path: str, scale: float = 1.0) -> Adapters:
        """Set the scale of the adapter loaded from ``path``; returns the adapters as they
        now are."""
        check_text("path", path)
        check_number("scale", scale)
        return self._client.run_flow(_apply_flow(path, float(scale)))

    def set_scales(self, scales: Mapping[int, float]) -> Adapters:
        """Set the scales of the adapters by id (others keep theirs); returns the new list."""
        if not isinstance(scales, Mapping):
            raise TypeError(
                f"scales must be a dict {{adapter_id: scale}}, not {type(scales).__name__}"
            )
        if not scales:
            raise ValueError("scales must name at least one adapter: {adapter_id: scale}")
        for adapter_id, scale in scales.items():
            check_int("adapter id", adapter_id, minimum=0)
            check_number(f"scale of adapter {adapter_id}", scale)
        return self._client.run_flow(_set_flow({k: float(v) for k, v in scales.items()}))
