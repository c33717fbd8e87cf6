"""The request/response core that sync and async clients share.

Endpoints are described, not performed: a resource method validates its arguments and
returns a :class:`Call` (one request: method, path, body, how to parse the answer) or a
*flow* (a generator that yields Calls and :class:`Sleep` steps and receives their results,
for operations of several requests). A client only runs them: ``LlamaCppClient`` with
``httpx.Client`` and ``time.sleep``, ``AsyncLlamaCppClient`` with ``httpx.AsyncClient``
and ``asyncio.sleep``. Everything else (configuration, headers, retry decisions, error
mapping, parsing) lives here, once.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union
from urllib.parse import urlsplit

import httpx
from opentelemetry import propagate
from pydantic import ValidationError

from .._version import __version__
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    TLSVerificationError,
    status_error,
)
from ._streaming import StreamFormat
from ._transport_errors import is_stale_connection_error
from ._validation import check_int, encode_json

if TYPE_CHECKING:
    from .resources import (
        Chat,
        Completions,
        Embeddings,
        Health,
        Lora,
        Metrics,
        Models,
        Props,
        Slots,
    )

__all__ = [
    "Call",
    "Sleep",
    "Flow",
    "BaseClient",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_DELAY",
]

log = logging.getLogger("llamatelemetry")

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Local generations can be long; connecting to a local server should be instant.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_KEEPALIVE = 20

TimeoutTypes = Union[float, int, None, httpx.Timeout, "tuple[float | None, float | None]"]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP request and what its answer becomes."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: Mapping[str, Any] | None = None
    text: bool = False  # the answer is text (Prometheus), not JSON
    stream: StreamFormat[Any] | None = None
    ok_statuses: frozenset[int] = frozenset()  # error statuses that are an answer, not a failure
    retries: int | None = None  # None: the client's max_retries
    timeout: TimeoutTypes | None = None
    headers: Mapping[str, str] | None = None
    operation: str = "http"  # what telemetry calls it: chat, embeddings, tokenize, ...


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Flow = Generator[Union[Call[Any], Sleep], Any, T]


def to_timeout(value: TimeoutTypes, name: str = "timeout") -> httpx.Timeout:
    """Accept httpx's Timeout, a number of seconds, None (wait forever) or requests'
    ``(connect, read)`` tuple."""
    if isinstance(value, httpx.Timeout):
        return value
    if value is None:
        return httpx.Timeout(None)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} as a tuple must be (connect, read) seconds, got {value!r}")
        connect, read = (_seconds(name, v) for v in value)
        return httpx.Timeout(read, connect=connect)
    return httpx.Timeout(_seconds(name, value))


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds as a number, not {type(value).__name__}")
    seconds = float(value) if isinstance(value, float) or abs(value) < 2**53 else float("inf")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{name} must be a positive finite number of seconds, got "
                         f"{value if isinstance(value, float) else 'an int that large'}")
    return seconds


def _check_api_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"api_key must be a str (or None for no key), not {type(key).__name__}")
    if not key:
        raise ValueError("api_key must be a non-empty str; pass None for a server without a key")
    if not key.isascii() or not key.isprintable():
        raise ValueError("api_key must be printable ASCII (it is sent in an HTTP header); "
                         "check for a trailing newline")


def _normalize_base_url(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"base_url must be a str, not {type(value).__name__}")
    url: str = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must look like 'http://127.0.0.1:8080', got {url!r}")
    if url.endswith("/v1"):  # an OpenAI-style base URL; our paths carry their own /v1
        url = url[: -len("/v1")]
    return url


def _tls_verify(value: Any) -> bool | ssl.SSLContext:
    """What ``verify=`` becomes for httpx: certificate checks for ``https://`` URLs.

    ``True`` (the default) checks against certifi's CAs; a path (str or ``os.PathLike``)
    names a PEM CA bundle file or a directory of CA certificates, e.g. the CA that signed a
    local server's self-signed certificate; an ``ssl.SSLContext`` is used as is; ``False``
    turns the checks off. A path is loaded here, so a wrong one fails at construction
    rather than at the first request (and httpx's deprecated ``verify=<str>`` is never used).
    """
    if isinstance(value, (bool, ssl.SSLContext)):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError("verify must be True, False, an ssl.SSLContext or the path of a CA "
                        f"bundle, not {type(value).__name__}")
    path = os.fsdecode(os.fspath(value))
    if not path:
        raise ValueError("verify must name a CA bundle file or directory, got an empty path")
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "verify: CA bundle not found", path)
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"verify: {path!r} holds no usable CA certificate (PEM expected): "
                         f"{exc}") from None


@lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """``httpx.URL(url)``, parsed once per endpoint: handing httpx a string costs a parse
    on every request, a measured 2-3% of a local non-streamed call."""
    return httpx.URL(url)


class BaseClient:
    """Configuration and everything that does no I/O."""

    _http: httpx.Client | httpx.AsyncClient
    # Set by the telemetry (instrumented clients, the instrumentor): send ``traceparent``.
    _propagate = False

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
    ) -> None:
        if base_url is None:
            base_url = os.environ.get("LLAMA_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = _normalize_base_url(base_url)
        if api_key is None:
            api_key = os.environ.get("LLAMA_API_KEY") or None
        if api_key is not None:
            _check_api_key(api_key)
        self._api_key = api_key
        self.timeout = to_timeout(timeout)
        check_int("max_retries", max_retries, minimum=0, maximum=100)
        self.max_retries = max_retries
        check_int("max_connections", max_connections, minimum=1)
        check_int("max_keepalive_connections", max_keepalive_connections, minimum=0)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive_connections
        )
        self._verify = _tls_verify(verify)
        self._default_headers = {
            "Accept": "application/json",
            "User-Agent": f"llamatelemetry/{__version__}",
            **(default_headers or {}),
        }
        if api_key:
            self._default_headers["Authorization"] = f"Bearer {api_key}"

    def _http_options(self) -> dict[str, Any]:
        """How the transport's own httpx client is built (when the user passes none)."""
        return {"limits": self._limits, "verify": self._verify, "timeout": self.timeout,
                "trust_env": False}

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def __repr__(self) -> str:
        key = ", api_key=<set>" if self._api_key else ""
        return f"{type(self).__name__}(base_url={self.base_url!r}{key})"

    # --- resources (shared: they only describe calls) ---------------------------------

    @cached_property
    def chat(self) -> Chat:
        from .resources import Chat

        return Chat(self)

    @cached_property
    def completions(self) -> Completions:
        from .resources import Completions

        return Completions(self)

    @cached_property
    def embeddings(self) -> Embeddings:
        from .resources import Embeddings

        return Embeddings(self)

    @cached_property
    def models(self) -> Models:
        from .resources import Models

        return Models(self)

    @cached_property
    def props(self) -> Props:
        from .resources import Props

        return Props(self)

    @cached_property
    def slots(self) -> Slots:
        from .resources import Slots

        return Slots(self)

    @cached_property
    def lora(self) -> Lora:
        from .resources import Lora

        return Lora(self)

    @cached_property
    def health(self) -> Health:
        from .resources import Health

        return Health(self)

    @cached_property
    def metrics(self) -> Metrics:
        from .resources import Metrics

        return Metrics(self)

    # --- what the transports implement -----------------------------------------------

    def _execute(self, call: Call[T]) -> T:
        raise NotImplementedError

    def _run(self, flow: Flow[T]) -> T:
        raise NotImplementedError

    # --- what the transports call -----------------------------------------------------

    def _build_request(self, call: Call[Any]) -> httpx.Request:
        headers = dict(self._default_headers)
        content = None
        if call.body is not None:
            content = encode_json(call.body)
            headers["Content-Type"] = "application/json"
        if call.stream is not None:
            headers["Accept"] = "text/event-stream"
        if call.headers:
            headers.update(call.headers)
        if self._propagate:
            propagate.inject(headers)  # W3C traceparent of the current span
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
        """A 200 to a streaming request that is not an event stream (a server that ignored
        ``stream``, a proxy's page) is a wrong answer, not a broken connection."""
        kind = response.headers.get("content-type", "")
        if "text/event-stream" in kind:
            return None
        return APIResponseError(
            f"{call.method} {call.path} asked for a stream but the server answered "
            f"{response.status_code} with {kind or 'no content type'}, not text/event-stream",
            status_code=response.status_code, method=call.method, url=str(response.request.url),
        )

    def _retries_for(self, call: Call[Any]) -> int:
        return self.max_retries if call.retries is None else call.retries

    def _is_success(self, call: Call[Any], status: int) -> bool:
        return status < 400 or status in call.ok_statuses

    def _status_error(self, response: httpx.Response, body: bytes) -> APIStatusError:
        message, type_, parsed = _error_details(response, body)
        request = response.request
        return status_error(
            response.status_code,
            message,
            type_,
            parsed,
            method=request.method,
            url=str(request.url),
            retry_after=_retry_after(response.headers),
        )

    def _parse(self, call: Call[T], response: httpx.Response, body: bytes) -> T:
        try:
            if call.text:
                data: Any = body.decode(response.encoding or "utf-8", errors="replace")
            else:
                data = json.loads(body)
        except (ValueError, RecursionError):
            kind = response.headers.get("content-type", "no content type")
            raise APIResponseError(
                f"{call.method} {call.path} answered {response.status_code} with {kind}, "
                f"not JSON: {_excerpt(body)!r}",
                status_code=response.status_code,
                body=_excerpt(body),
                method=call.method,
                url=str(response.request.url),
            ) from None
        try:
            return call.parse(data)
        except (ValidationError, LookupError, TypeError, ValueError, AttributeError,
                ArithmeticError) as exc:
            raise APIResponseError(
                f"{call.method} {call.path} answered with an unexpected shape: {exc}",
                status_code=response.status_code,
                body=data,
                method=call.method,
                url=str(response.request.url),
            ) from None

    def _retry_delay(self, error: APIError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when not to retry."""
        if isinstance(error, APIStatusError):
            if error.status_code not in RETRY_STATUSES:
                return None
            if error.retry_after is not None and 0 <= error.retry_after <= MAX_RETRY_AFTER:
                return error.retry_after
        elif not isinstance(error, (APIConnectionError, APITimeoutError)) or isinstance(
            error, TLSVerificationError
        ):
            return None
        delay = min(INITIAL_RETRY_DELAY * 2.0**attempt, MAX_RETRY_DELAY)
        return delay * (1.0 - 0.25 * random.random())  # jitter spreads a crowd of clients

    def _has_idle_connection(self) -> bool:
        """Whether the pool holds an idle keep-alive connection the next request may reuse."""
        pool = getattr(getattr(self._http, "_transport", None), "_pool", None)
        try:
            return any(conn.is_idle() for conn in pool.connections)  # type: ignore[union-attr]
        except (AttributeError, TypeError):
            return False


class Attempts:
    """The retry bookkeeping of one call, shared by the sync and async send loops."""

    __slots__ = ("_client", "_call", "_left", "_attempt", "_resend_available")

    def __init__(self, client: BaseClient, call: Call[Any]) -> None:
        self._client = client
        self._call = call
        self._left = client._retries_for(call)
        self._attempt = 0
        self._resend_available = True

    def may_reuse_connection(self) -> bool:
        """Checked before sending: could this attempt go out on a pooled connection?"""
        return self._resend_available and self._client._has_idle_connection()

    def resend_now(self, exc: httpx.TransportError, *, stale_candidate: bool) -> bool:
        """Whether to resend at once: a pooled keep-alive connection the server had closed
        never delivered the request, so that costs no retry (once per call)."""
        if stale_candidate and self._resend_available and is_stale_connection_error(exc):
            self._resend_available = False
            log.debug("resending %s %s after a stale pooled connection: %r",
                      self._call.method, self._call.path, exc)
            return True
        return False

    def delay_or_raise(self, error: APIError) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when there is none."""
        delay = self._client._retry_delay(error, self._attempt) if self._left > 0 else None
        if delay is None:
            raise error
        log.debug("retrying %s %s in %.2fs (%d left) after: %s", self._call.method,
                  self._call.path, delay, self._left, error)
        self._left -= 1
        self._attempt += 1
        return delay


def decoding_error(call: Call[Any], exc: httpx.DecodingError) -> APIResponseError:
    return APIResponseError(f"{call.method} {call.path}: the response body could not be "
                            f"decoded: {exc}")


def _retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())


def _excerpt(body: bytes, limit: int = 500) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > limit else "")


def _error_details(response: httpx.Response, body: bytes) -> tuple[str, str | None, Any]:
    """The server's own message and type, from llama.cpp's ``{"error": {...}}`` or whatever
    a proxy in between sent (plain text, an HTML page)."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)[:500]
            type_ = err.get("type")
            return str(message), type_ if isinstance(type_, str) else None, parsed
        if isinstance(err, str):
            return err, None, parsed
    text = _excerpt(body).strip()
    content_type = response.headers.get("content-type", "")
    if "html" in content_type or text.lower().startswith(("<!doctype", "<html")):
        start, end = text.lower().find("<title>"), text.lower().find("</title>")
        title = text[start + 7 : end].strip() if 0 <= start < end else ""
        text = f"HTML error page{': ' + title if title else ''} (from a proxy in front of llama-server?)"
    return text or response.reason_phrase or "no message", None, parsed if parsed is not None else text
