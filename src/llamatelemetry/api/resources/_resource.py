"""The base of every resource: a handle on the client that runs its calls."""

from __future__ import annotations

from .._calls_and_callers import Caller

__all__ = ["Resource"]


class Resource:
    """Resources only describe calls; ``self._client`` (sync or async) performs them,
    through what ``Caller`` names and nothing else."""

    __slots__ = ("_client",)

    def __init__(self, client: Caller) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"
