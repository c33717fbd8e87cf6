"""``/slots``: the server's parallel inference contexts."""

from __future__ import annotations

from typing import Any

from .._calls_and_callers import Call
from .._validation import check_int, check_text
from ._resource import Resource
from .models import model_params

__all__ = ["Slots", "normalize_slot"]


def normalize_slot(raw: dict[str, Any]) -> dict[str, Any]:
    """Give every slot a ``state`` of "idle" or "processing".

    Current servers send ``is_processing`` (bool); older ones an int ``state`` (0 idle).
    The raw fields are kept; ``prompt`` is present when the server reports it.
    """
    slot = dict(raw)
    if "is_processing" in slot:
        busy = bool(slot["is_processing"])
    else:
        busy = slot.get("state") not in (0, None, "idle")
    slot["state"] = "processing" if busy else "idle"
    return slot


def _slot_list(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise TypeError(f"expected a list of slots, got {type(data).__name__}")
    return [normalize_slot(item) for item in data]


def _check_filename(value: Any) -> str:
    filename = check_text("filename", value)
    if "/" in filename or "\\" in filename or filename in (".", "..") or "\0" in filename:
        raise ValueError(
            f"filename must be a bare file name inside the server's --slot-save-path, "
            f"got {filename!r}"
        )
    return filename


def _dict(data: Any) -> dict[str, Any]:
    return dict(data)


class Slots(Resource):
    __slots__ = ()

    def list(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every slot as a dict with ``id`` and ``state`` ("idle"/"processing") and raw
        fields; ``model=``: the slots of one of a router's loaded models."""
        return self._client.execute_call(
            Call("GET", "/slots", _slot_list, params=model_params(model), operation="slots")
        )

    def _action(self, slot_id: Any, action: str, body: dict[str, Any] | None) -> Any:
        if slot_id is None:
            raise TypeError("slot_id must be an int (see slots.list() for the ids), not None")
        check_int("slot_id", slot_id, minimum=0)
        return self._client.execute_call(
            Call(
                "POST",
                f"/slots/{slot_id}",
                _dict,
                params={"action": action},
                body=body or {},
                operation=f"slot_{action}",
            )
        )

    def save(self, slot_id: int, filename: str) -> dict[str, Any]:
        """Save the slot's prompt cache to ``filename`` in the server's ``--slot-save-path``."""
        return self._action(slot_id, "save", {"filename": _check_filename(filename)})  # type: ignore[no-any-return]

    def restore(self, slot_id: int, filename: str) -> dict[str, Any]:
        """Load a prompt cache saved with :meth:`save` into the slot."""
        return self._action(slot_id, "restore", {"filename": _check_filename(filename)})  # type: ignore[no-any-return]

    def erase(self, slot_id: int) -> dict[str, Any]:
        """Drop the slot's prompt cache."""
        return self._action(slot_id, "erase", None)  # type: ignore[no-any-return]
