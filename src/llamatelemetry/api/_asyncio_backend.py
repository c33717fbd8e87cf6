"""httpcore's network backend on asyncio's own sockets and transports, and the time each
byte arrived.

`AsyncioBackend` implements httpcore's public ``AsyncNetworkBackend`` under asyncio: a
plain TCP connection is a `SocketStream` where the kernel stamps received bytes (Linux),
each read timed by the kernel's receive time; elsewhere, and for TLS, an `AsyncioStream`
on an asyncio transport, timed when the loop took the bytes. Either's ``arrived`` is what
the load generator times a token by. Under any other event loop (trio), the backend it
wraps does the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpcore

from ._socket_stream import KERNEL_STAMPS, SocketStream, connect
from ._socket_waits import READ_BUFFER
from ._transport_stream import AsyncioStream, Protocol

__all__ = ["READ_BUFFER", "AsyncioBackend", "AsyncioStream", "SocketStream"]


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """asyncio's sockets and transports where the running loop is asyncio's; ``fallback``
    elsewhere. ``kernel_stamps``: plain TCP connections are `SocketStream` (by default
    where the system stamps received bytes), else `AsyncioStream`."""

    def __init__(
        self, fallback: httpcore.AsyncNetworkBackend, kernel_stamps: bool = KERNEL_STAMPS
    ) -> None:
        self._fallback = fallback
        self._kernel_stamps = kernel_stamps

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not _on_asyncio():
            return await self._fallback.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        if self._kernel_stamps:
            try:
                return await asyncio.wait_for(
                    connect(host, port, local_address, socket_options), timeout
                )
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
            except OSError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    Protocol, host, port, local_addr=local, happy_eyeballs_delay=0.25
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
        except OSError as exc:
            transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._fallback.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        if _on_asyncio():
            await asyncio.sleep(seconds)
        else:
            await self._fallback.sleep(seconds)


def _on_asyncio() -> bool:
    """Whether this runs under asyncio (not trio, nor trio hosted by an asyncio loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    try:
        import sniffio
    except ImportError:
        return True
    try:
        return bool(sniffio.current_async_library() == "asyncio")
    except sniffio.AsyncLibraryNotFoundError:
        return True
