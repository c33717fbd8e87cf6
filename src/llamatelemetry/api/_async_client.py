"""``AsyncLlamaCppClient``: the asyncio transport of the shared core.

Every resource and convenience method is the sync client's own code: it validates its
arguments at once (so bad input raises before anything is awaited) and returns the
coroutine of this transport's ``execute_call``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from typing_extensions import Unpack

from .._closing import AsyncClosing
from ._api_errors import APIError, EventLoopError
from ._attempts import Attempts, Body, decoding_error
from ._base_client import BaseClient
from ._calls_and_callers import Call, Flow, Sleep
from ._config import ClientOptions, check_options
from ._content_decoding import acontent
from ._convenience import ConvenienceMixin
from ._deadline_backend import install_deadline_backend
from ._transport_errors import translate_transport_error
from ._typed_streams import AsyncStream, close_soon

__all__ = ["AsyncLlamaCppClient"]

log = logging.getLogger("llamatelemetry")

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
        **options: Unpack[ClientOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        super().__init__(base_url, api_key, **options)
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._switching = threading.Lock()
        self._own_pool(http_client)

    def _after_new_pool(self) -> None:
        self._loop = None

    def _new_http(self) -> httpx.AsyncClient:
        http = httpx.AsyncClient(**self._http_options())
        install_deadline_backend(http)
        return http

    def _http_for_this_loop(self) -> httpx.AsyncClient:
        """The pool for the running event loop. Pooled connections belong to the loop that
        opened them: on a new loop (a second ``asyncio.run``) the client starts a new pool,
        as long as the old loop is not still running elsewhere."""
        loop = asyncio.get_running_loop()
        bound = None if self._loop is None else self._loop()
        if bound is loop:
            return self._http
        with self._switching:  # two threads' loops arriving at once: one wins, one is told
            return self._switch_to(loop)

    def _switch_to(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient:
        bound = None if self._loop is None else self._loop()
        if bound is loop:
            return self._http
        if self._loop is not None:
            if bound is not None and bound.is_running():
                raise EventLoopError(
                    "this AsyncLlamaCppClient is in use on another running event loop (another "
                    "thread?); its connections belong to that loop: create one client per "
                    "event loop"
                )
            if not self._owns_http:
                raise EventLoopError(
                    "the http_client= given to this AsyncLlamaCppClient was used on an event "
                    "loop that has ended, and its connections cannot move to this one: pass a "
                    "new httpx.AsyncClient, or let the client make its own"
                )
            self._leave_pool()
        self._loop = weakref.ref(loop)
        return self._http

    def _leave_pool(self) -> None:
        """Start a new pool; the old one's connections belong to an event loop that is not
        running, so nothing can close them properly: drop them quietly."""
        log.debug("a new event loop: the old loop's connections are dropped")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._http = self._new_http()
            gc.collect()  # their transports warn when collected; they are collected here

    async def execute_call(self, call: Call[T]) -> T:  # type: ignore[override]
        """Every call goes through here: the hook telemetry wraps (see
        ``_calls_and_callers.Caller``)."""
        return await self.send_call(call)

    async def send_call(self, call: Call[T]) -> T:  # type: ignore[override]
        """Send one call, retrying what is worth retrying; return its parsed answer (or an
        AsyncStream), or what its ``follow`` flow makes of it."""
        if call.follow is None:
            return await self._send_one(call)
        # One wall-clock limit for the request and the flow after it.
        with self._flow_limit(call.total_timeout):
            answer = await self._send_one(call)
            return await self._drive(call.follow(answer), call.total_timeout, self.send_call)

    async def _send_one(self, call: Call[T]) -> T:
        http = self._http_for_this_loop()
        request = self._build_request(call)
        attempts = Attempts(self, call)
        tokens = attempts.enter()
        try:
            while True:
                attempts.start(request)
                sent: httpx.Response | None = None
                try:
                    sent = await http.send(request, stream=True)
                    if call.stream is not None and sent.status_code < 400:
                        wrong = self._not_a_stream(call, sent)
                        if wrong is None:
                            stream = AsyncStream(
                                sent,
                                call.stream,
                                deadline=attempts.deadline,
                                max_event_bytes=self.max_event_bytes,
                            )
                            sent = None  # the stream owns the response now
                            return stream  # type: ignore[return-value]
                        raise wrong
                    body = await self._read_body(call, sent)
                    if self._is_success(call, sent.status_code):
                        return self._parse(call, sent, body)
                    error: APIError = self._status_error(sent, body)
                except httpx.TransportError as exc:
                    if attempts.resend_now(exc):
                        continue
                    error = translate_transport_error(exc)
                except httpx.DecodingError as exc:
                    raise decoding_error(call, exc) from exc
                finally:
                    if sent is not None:
                        await sent.aclose()
                await asyncio.sleep(attempts.delay_or_raise(error))
        finally:
            attempts.exit(tokens)

    async def _read_body(self, call: Call[Any], response: httpx.Response) -> bytes:
        """The whole decoded body, failing once it passes ``max_response_bytes``."""
        body = Body(self, call, response)
        async for part in acontent(response):
            body.add(part)
        return body.join()

    async def run_flow(  # type: ignore[override]
        self, flow: Flow[T], total_timeout: float | None = None
    ) -> T:
        """Drive a multi-step operation: perform each step it yields, send back the result.
        Each call it yields is a call of its own (``execute_call``)."""
        return await self._drive(flow, total_timeout, self.execute_call)

    async def _drive(
        self,
        flow: Flow[T],
        total_timeout: float | None,
        execute: Callable[[Call[Any]], Awaitable[Any]],
    ) -> T:
        """Run ``flow``, each call it yields by ``execute``: calls of their own
        (``execute_call``) or parts of the call whose ``follow`` it is (``send_call``)."""
        value: Any = None
        failure: BaseException | None = None
        with self._flow_limit(total_timeout):
            while True:
                try:
                    step = flow.throw(failure) if failure is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, failure = None, None
                try:
                    if isinstance(step, Sleep):
                        await asyncio.sleep(self._sleep_seconds(step))
                    else:
                        value = await execute(step)
                except APIError as exc:
                    failure = exc

    async def aclose(self) -> None:
        """Close the pooled connections."""
        bound = None if self._loop is None else self._loop()
        if (
            bound is not None
            and bound is not asyncio.get_running_loop()
            and self._owns_http
            and not bound.is_running()
        ):
            self._leave_pool()  # the connections of a loop that has ended
        await self._http.aclose()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def __del__(self) -> None:
        # Dropped without aclose(): close the pool on the running loop, when it is the loop
        # the pool's connections belong to (closing them from another would fail).
        if not getattr(self, "_owns_http", False) or self._http.is_closed:
            return
        bound = None if self._loop is None else self._loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if bound is None or bound is running:
            close_soon(self._http.aclose)
