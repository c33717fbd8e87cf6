"""``AsyncLlamaCppClient``: the asyncio transport of the shared core.

Every resource and convenience method is the sync client's own code: it validates its
arguments at once (so bad input raises before anything is awaited) and returns the
coroutine of this transport's ``_execute``.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from .._closing import AsyncClosing
from ._base import Attempts, BaseClient, Call, Flow, Sleep, decoding_error
from ._convenience import ConvenienceMixin
from ._errors import APIError
from ._streaming import AsyncStream, close_soon
from ._transport_errors import translate_transport_error

__all__ = ["AsyncLlamaCppClient"]

T = TypeVar("T")


class AsyncLlamaCppClient(ConvenienceMixin, BaseClient, AsyncClosing):
    """The async twin of :class:`LlamaCppClient`, with exactly its surface.

    ```python
    async with AsyncLlamaCppClient("http://127.0.0.1:8080") as client:
        reply = await client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}])
        stream = await client.chat.completions.create(messages=..., stream=True)
        async for chunk in stream:
            ...
    ```

    One client is safe to share across tasks; ``max_connections`` bounds how many requests
    run at once (the rest wait for a pooled connection, up to the pool timeout).
    """

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, api_key, **options)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(**self._http_options())

    async def _execute(self, call: Call[T]) -> T:  # type: ignore[override]
        """Send one call, retrying what is worth retrying; return its parsed answer (or an
        AsyncStream)."""
        request = self._build_request(call)
        attempts = Attempts(self, call)
        while True:
            reused = attempts.may_reuse_connection()
            sent: httpx.Response | None = None
            try:
                sent = await self._http.send(request, stream=True)
                if call.stream is not None and sent.status_code < 400:
                    wrong = self._not_a_stream(call, sent)
                    if wrong is None:
                        stream = AsyncStream(sent, call.stream)
                        sent = None  # the stream owns the response now
                        return stream  # type: ignore[return-value]
                    await sent.aread()
                    raise wrong
                body = await sent.aread()
                if self._is_success(call, sent.status_code):
                    return self._parse(call, sent, body)
                error: APIError = self._status_error(sent, body)
            except httpx.TransportError as exc:
                if attempts.resend_now(exc, stale_candidate=sent is None and reused):
                    continue
                error = translate_transport_error(exc)
            except httpx.DecodingError as exc:
                raise decoding_error(call, exc) from exc
            finally:
                if sent is not None:
                    await sent.aclose()
            await asyncio.sleep(attempts.delay_or_raise(error))

    async def _run(self, flow: Flow[T]) -> T:  # type: ignore[override]
        """Drive a multi-step operation: perform each step it yields, send back the result."""
        value: Any = None
        failure: BaseException | None = None
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, failure = None, None
            try:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                else:
                    value = await self._execute(step)
            except APIError as exc:
                failure = exc

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def __del__(self) -> None:
        # Dropped without aclose(): close the pool on the running loop, when there is one.
        if getattr(self, "_owns_http", False) and not self._http.is_closed:
            close_soon(self._http.aclose)
