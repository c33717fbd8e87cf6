"""``LlamaCppClient``: the synchronous transport of the shared core."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from typing_extensions import Unpack

from .._closing import Closing
from ._api_errors import APIError
from ._attempts import Attempts, Body, decoding_error
from ._base_client import BaseClient
from ._calls_and_callers import Call, Flow, Sleep
from ._config import ClientOptions, check_options
from ._content_decoding import content
from ._convenience import ConvenienceMixin
from ._deadline_backend import install_deadline_backend
from ._transport_errors import translate_transport_error
from ._typed_streams import Stream

__all__ = ["LlamaCppClient"]

log = logging.getLogger("llamatelemetry")

T = TypeVar("T")


class LlamaCppClient(ConvenienceMixin, BaseClient, Closing):
    """A client for llama.cpp's ``llama-server``.

    ```python
    from llamatelemetry.api import LlamaCppClient

    with LlamaCppClient("http://127.0.0.1:8080") as client:
        reply = client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}])
        print(reply.choices[0].message.content)
    ```

    ``base_url`` and ``api_key`` default to ``LLAMA_BASE_URL`` and ``LLAMA_API_KEY``; a
    ``user:password@`` in ``base_url`` is sent as Basic auth and shown nowhere.
    ``timeout`` (seconds, an ``httpx.Timeout`` or a ``(connect, read)`` tuple) bounds each
    socket wait; ``total_timeout`` is a wall-clock limit on a whole call, its retries and,
    for a stream, every chunk. Connection errors, timeouts, 408/409/429/5xx and 503
    "Loading model" are retried ``max_retries`` times with exponential backoff and jitter,
    honouring ``Retry-After``; with ``max_retries=0`` a request is sent at most once.
    ``max_response_bytes`` and ``max_event_bytes`` bound what a server can make it hold.
    One pooled HTTP connection set is kept for the client's life (a forked child gets its
    own); ``close()`` it (or use ``with``) when done.
    """

    _http: httpx.Client

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        check_options(type(self).__name__, options)
        super().__init__(base_url, api_key, **options)
        self._own_pool(http_client)

    def _new_http(self) -> httpx.Client:
        http = httpx.Client(**self._http_options())
        install_deadline_backend(http)
        return http

    def __del__(self) -> None:
        # A client dropped without close() must not leak sockets (nor ResourceWarnings).
        if getattr(self, "_owns_http", False):
            try:
                self._http.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown may have torn httpx down
                pass

    def execute_call(self, call: Call[T]) -> T:
        """Every call goes through here: the hook telemetry wraps (see
        ``_calls_and_callers.Caller``)."""
        return self.send_call(call)

    def send_call(self, call: Call[T]) -> T:
        """Send one call, retrying what is worth retrying; return its parsed answer (or a
        Stream), or what its ``follow`` flow makes of it."""
        if call.follow is None:
            return self._send_one(call)
        # One wall-clock limit for the request and the flow after it.
        with self._flow_limit(call.total_timeout):
            answer = self._send_one(call)
            return self._drive(call.follow(answer), call.total_timeout, self.send_call)  # type: ignore[no-any-return]

    def _send_one(self, call: Call[T]) -> T:
        request = self._build_request(call)
        attempts = Attempts(self, call)
        tokens = attempts.enter()
        try:
            while True:
                attempts.start(request)
                sent: httpx.Response | None = None
                try:
                    sent = self._http.send(request, stream=True)
                    if call.stream is not None and sent.status_code < 400:
                        wrong = self._not_a_stream(call, sent)
                        if wrong is None:
                            stream = Stream(
                                sent,
                                call.stream,
                                deadline=attempts.deadline,
                                max_event_bytes=self.max_event_bytes,
                            )
                            sent = None  # the stream owns the response now
                            return stream  # type: ignore[return-value]
                        raise wrong
                    body = self._read_body(call, sent)
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
                        sent.close()
                time.sleep(attempts.delay_or_raise(error))
        finally:
            attempts.exit(tokens)

    def _read_body(self, call: Call[Any], response: httpx.Response) -> bytes:
        """The whole decoded body, failing once it passes ``max_response_bytes``."""
        body = Body(self, call, response)
        for part in content(response):
            body.add(part)
        return body.join()

    def run_flow(self, flow: Flow[T], total_timeout: float | None = None) -> T:
        """Drive a multi-step operation: perform each step it yields, send back the result.
        Each call it yields is a call of its own (``execute_call``)."""
        return self._drive(flow, total_timeout, self.execute_call)

    def _drive(
        self, flow: Flow[T], total_timeout: float | None, execute: Callable[[Call[Any]], Any]
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
                        time.sleep(self._sleep_seconds(step))
                    else:
                        value = execute(step)
                except APIError as exc:
                    failure = exc

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed
