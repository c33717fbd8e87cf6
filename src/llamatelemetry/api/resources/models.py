"""``/v1/models`` and ``/props``: what the server has loaded and how it is configured."""

from __future__ import annotations

from typing import Any

from .._base import Call
from ._resource import Resource

__all__ = ["Models", "Props"]


def _model_list(data: Any) -> list[dict[str, Any]]:
    items = data["data"] if isinstance(data, dict) else data
    return [dict(item) for item in items]


def _as_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    return data


class Models(Resource):
    __slots__ = ()

    def list(self) -> list[dict[str, Any]]:
        """The loaded models as dicts (``id``, ``meta`` with ``n_embd``, ``n_ctx_train``, ...)."""
        return self._client._execute(Call("GET", "/v1/models", _model_list, operation="models"))


class Props(Resource):
    __slots__ = ()

    def get(self) -> dict[str, Any]:
        """The server's properties: default generation settings, slots, chat template, ..."""
        return self._client._execute(Call("GET", "/props", _as_dict, operation="props"))
