"""``with obj:`` / ``async with obj:`` for every object that owns something it must close."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["Closing", "AsyncClosing"]

_Self = TypeVar("_Self", bound="Closing")
_ASelf = TypeVar("_ASelf", bound="AsyncClosing")


class Closing:
    """Mixin: entering returns the object, leaving calls its ``close()``."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClosing:
    """Mixin: ``async with`` returns the object, leaving awaits its ``aclose()``."""

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _ASelf) -> _ASelf:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
