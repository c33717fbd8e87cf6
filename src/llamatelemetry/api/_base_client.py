"""The request/response core that sync and async clients share.

Endpoints are described, not performed: a resource method validates its arguments and
returns a :class:`Call` or a :data:`Flow` (see ``_calls_and_callers``), which a client only
runs: ``LlamaCppClient`` with ``httpx.Client`` and ``time.sleep``, ``AsyncLlamaCppClient``
with ``httpx.AsyncClient`` and ``asyncio.sleep``. Everything that does no I/O lives once, here
(headers, the pool, the resources) and beside it: configuration in ``_config``, retries and
body limits in ``_attempts``, what an answer becomes in ``_answer_parsing``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import time
import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager
from functools import cached_property, lru_cache
from typing import Any, TypeVar

import httpx

from .._version import __version__
from . import _deadline_backend
from ._answer_parsing import answer_error, not_a_stream, parse_answer
from ._api_errors import APIResponseError, APIStatusError, ForkError
from ._calls_and_callers import Call, Flow, Sleep
from ._config import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_KEEPALIVE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    KEEPALIVE_EXPIRY,
    TimeoutTypes,
    _check_api_key,
    _normalize_base_url,
    _seconds,
    _tls_verify,
    to_timeout,
)
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._validation import check_int, encode_json
from .resources import (
    Chat,
    Completions,
    Embeddings,
    Health,
    Lora,
    Messages,
    Metrics,
    Models,
    Props,
    Responses,
    Slots,
)

__all__ = ["BaseClient"]

T = TypeVar("T")


@lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """``httpx.URL(url)``, parsed once per endpoint: handing httpx a string costs a parse
    on every request, a measured 2-3% of a local non-streamed call."""
    return httpx.URL(url)


# Every client: a forked child gives each one that owns its pool a new pool, since the
# pooled sockets are shared with the parent and two processes writing on one socket
# interleave their requests; a client on a user's http_client refuses to run in the child.
_CLIENTS: weakref.WeakSet[BaseClient] = weakref.WeakSet()
# The pools a child left behind: never closed (closing could touch a lock another parent
# thread held at the fork, or the parent's connections), never collected (no warnings).
_LEFT_BY_FORK: list[Any] = []


def _new_pools_after_fork() -> None:
    for client in list(_CLIENTS):
        if not client._owns_http:
            client._inherited_pool = True
            continue
        _LEFT_BY_FORK.append(client._http)
        client._http = client._new_http()
        client._after_new_pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_pools_after_fork)


class BaseClient:
    """Configuration and everything that does no I/O.

    A client is what ``_calls_and_callers.Caller`` describes (``AsyncCaller`` for the async
    one): the resources, telemetry and the server's engine use it through that and nothing
    else.
    """

    _http: httpx.Client | httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE,
        total_timeout: float | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url, credentials = _normalize_base_url(base_url)
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV) or None
        if api_key is not None:
            _check_api_key(api_key)
            if credentials is not None:
                raise ValueError(
                    "base_url carries a user and password and an api_key is set "
                    "(argument or LLAMA_API_KEY): both go in the Authorization "
                    "header; use one"
                )
        self._api_key = api_key
        self._user = None if credentials is None else credentials[0]
        self.timeout = to_timeout(timeout)
        self.total_timeout = _seconds("total_timeout", total_timeout)
        check_int("max_retries", max_retries, minimum=0, maximum=100)
        self.max_retries = max_retries
        check_int("max_connections", max_connections, minimum=1)
        check_int("max_keepalive_connections", max_keepalive_connections, minimum=0)
        check_int("max_response_bytes", max_response_bytes, minimum=1)
        self.max_response_bytes = max_response_bytes
        if max_event_bytes is not None:
            check_int("max_event_bytes", max_event_bytes, minimum=1)
        self.max_event_bytes = max_event_bytes
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
        self._verify = _tls_verify(verify)
        self._default_headers = {
            "Accept": "application/json",
            # llama-server never compresses; a server that does anyway is held to
            # max_response_bytes of decoded bytes.
            "Accept-Encoding": "identity",
            "User-Agent": f"llamatelemetry/{__version__}",
            **(default_headers or {}),
        }
        if api_key:
            self._default_headers["Authorization"] = f"Bearer {api_key}"
        elif credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
            self._default_headers["Authorization"] = f"Basic {token}"

    def _new_http(self) -> httpx.Client | httpx.AsyncClient:
        """The transport's own pool, when the user passed no ``http_client``."""
        raise NotImplementedError

    def _after_new_pool(self) -> None:
        """Called when a new pool replaced the old one (after a fork)."""

    def _own_pool(self, http_client: Any) -> None:
        self._owns_http = http_client is None
        self._http = http_client or self._new_http()
        _CLIENTS.add(self)

    _inherited_pool = False  # set in a forked child on a client with the user's http_client

    def _check_pool(self) -> None:
        if self._inherited_pool:
            raise ForkError(
                "this client's http_client= was made before os.fork(): its pooled "
                "connections are the parent's, and two processes on one socket "
                "mix their requests. Create the client (or its http_client) in the "
                "child, or let the client make its own pool (it then gets a new "
                "one after a fork)"
            )

    def _http_options(self) -> dict[str, Any]:
        """How the transport's own httpx client is built (when the user passes none)."""
        return {
            "limits": self._limits,
            "verify": self._verify,
            "timeout": self.timeout,
            "trust_env": False,
        }

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def __repr__(self) -> str:
        key = ", api_key=<set>" if self._api_key else ""
        url = self.base_url
        if self._user is not None:  # shown as the user passed it, password masked
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://{self._user}:***@{rest}"
        return f"{type(self).__name__}(base_url={url!r}{key})"

    # --- resources (shared: they only describe calls) ---------------------------------

    @cached_property
    def chat(self) -> Chat:
        return Chat(self)

    @cached_property
    def completions(self) -> Completions:
        return Completions(self)

    @cached_property
    def embeddings(self) -> Embeddings:
        return Embeddings(self)

    @cached_property
    def models(self) -> Models:
        return Models(self)

    @cached_property
    def props(self) -> Props:
        return Props(self)

    @cached_property
    def slots(self) -> Slots:
        return Slots(self)

    @cached_property
    def lora(self) -> Lora:
        return Lora(self)

    @cached_property
    def health(self) -> Health:
        return Health(self)

    @cached_property
    def metrics(self) -> Metrics:
        return Metrics(self)

    @cached_property
    def responses(self) -> Responses:
        return Responses(self)

    @cached_property
    def messages(self) -> Messages:
        return Messages(self)

    # --- what the transports implement (the seam: see _calls_and_callers.Caller) ------

    def execute_call(self, call: Call[T]) -> T:
        """Run one call as an operation of its own (package seam, see
        ``_calls_and_callers.Caller``)."""
        raise NotImplementedError

    def send_call(self, call: Call[T]) -> T:
        """Send one call, with no telemetry (package seam, see ``_calls_and_callers.Caller``)."""
        raise NotImplementedError

    def run_flow(self, flow: Flow[T], total_timeout: float | None = None) -> T:
        """Drive a multi-step operation (package seam, see ``_calls_and_callers.Caller``)."""
        raise NotImplementedError

    def _flow_limit(self, total_timeout: float | None) -> AbstractContextManager[None]:
        """A multi-step operation's steps share one wall-clock limit (its own, else the
        client's total_timeout): a deadline() block around them."""
        total = self.total_timeout if total_timeout is None else total_timeout
        return contextlib.nullcontext() if total is None else _deadline_backend.deadline(total)

    @staticmethod
    def _sleep_seconds(step: Sleep) -> float:
        """A flow's pause, cut at its deadline (the next step then times out at once)."""
        end = _deadline_backend.call_deadline.get()
        if end is None:
            return step.seconds
        return max(0.0, min(step.seconds, end - time.monotonic()))

    # --- what the transports call -----------------------------------------------------

    def _build_request(self, call: Call[Any]) -> httpx.Request:
        self._check_pool()
        headers = dict(self._default_headers)
        content = None
        if call.body is not None:
            content = encode_json(call.body)
            headers["Content-Type"] = "application/json"
        if call.stream is not None:
            headers["Accept"] = "text/event-stream"
            # llama-server closes the connection a few ms after every streamed answer
            # (measured), though it says keep-alive: a request sent on it in that window
            # would be lost. Closing it ourselves costs nothing and leaves no such window.
            headers["Connection"] = "close"
        if call.headers:
            headers.update(call.headers)
        timeout = self.timeout if call.timeout is None else to_timeout(call.timeout)
        # The transport's own httpx client builds it, so its headers, auth and event hooks
        # (when the user passed ``http_client=``) apply too.
        return self._http.build_request(
            call.method,
            _parsed_url(self.base_url + call.path),
            params=call.params,
            headers=headers,
            content=content,
            timeout=timeout,
        )

    def _not_a_stream(self, call: Call[Any], response: httpx.Response) -> APIResponseError | None:
        return not_a_stream(call, response)

    def _is_success(self, call: Call[Any], status: int) -> bool:
        return status < 400 or status in call.ok_statuses

    def _status_error(self, response: httpx.Response, body: bytes) -> APIStatusError:
        return answer_error(response, body)

    def _parse(self, call: Call[T], response: httpx.Response, body: bytes) -> T:
        return parse_answer(call, response, body)
