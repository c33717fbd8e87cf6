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

import base64
import contextlib
import difflib
import email.utils
import json
import logging
import os
import random
import re
import ssl
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import ValidationError
from typing_extensions import TypedDict

from .._version import __version__
from . import _wire
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    ForkError,
    TLSVerificationError,
    status_error,
)
from ._sse import DEFAULT_MAX_EVENT_BYTES
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
    "DEFAULT_MAX_RESPONSE_BYTES",
    "redact_url",
]

log = logging.getLogger("llamatelemetry")

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Where the client (and the CLI) find the server and its key when none is given; llama-server
# itself reads its --api-key from API_KEY_ENV too.
BASE_URL_ENV = "LLAMA_BASE_URL"
API_KEY_ENV = "LLAMA_API_KEY"
# Local generations can be long; connecting to a local server should be instant.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_KEEPALIVE = 20
# llama-server closes a kept-alive connection after 5 s idle (it answers "Keep-Alive:
# timeout=5, max=100"; measured). httpx's default expiry is the same 5 s, so a request could
# leave just as the server closes: giving idle connections up a second earlier means the
# server's idle close never races a request.
KEEPALIVE_EXPIRY = 4.0
# A whole non-streamed body, decoded. The largest legitimate answers are embeddings of big
# batches (tens of MB of JSON); this bounds what a hostile or broken server can make us hold.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024

TimeoutTypes = Union[float, int, None, httpx.Timeout, "tuple[float | None, float | None]"]


class ClientOptions(TypedDict, total=False):
    """The options both clients take as keywords (see ``LlamaCppClient`` for each one's
    meaning and ``BaseClient.__init__`` for the defaults)."""

    timeout: TimeoutTypes
    max_retries: int
    default_headers: Mapping[str, str] | None
    verify: bool | str | os.PathLike[str] | ssl.SSLContext
    max_connections: int
    max_keepalive_connections: int
    total_timeout: float | None
    max_response_bytes: int | None
    max_event_bytes: int | None


def check_options(owner: str, options: Mapping[str, Any], also: tuple[str, ...] = ()) -> None:
    """A ``TypeError`` naming an unknown option, and the known one it most likely meant."""
    known = (*ClientOptions.__annotations__, "http_client", *also)
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")


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
    total_timeout: float | None = None  # None: the client's total_timeout


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Flow = Generator[Call[Any] | Sleep, Any, T]


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
        raise ValueError(
            f"{name} must be a positive finite number of seconds, got "
            f"{value if isinstance(value, float) else 'an int that large'}"
        )
    return seconds


def check_total_timeout(value: Any) -> float | None:
    """A call's wall-clock limit in seconds, or None for the client's."""
    return _seconds("total_timeout", value)


def _check_api_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"api_key must be a str (or None for no key), not {type(key).__name__}")
    if not key:
        raise ValueError("api_key must be a non-empty str; pass None for a server without a key")
    if not key.isascii() or not key.isprintable() or key != key.strip():
        raise ValueError(
            "api_key must be printable ASCII without spaces at either end (it is "
            "sent in an HTTP header); check for a trailing newline or space"
        )


_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:/+)?/*)(.*)@(.*)$", re.DOTALL)


def redact_url(url: str) -> str:
    """``url`` with the password of its user part (``http://user:pass@host``) masked: what
    may be shown in a repr, a message or a log. Everything between the user name and the
    last ``@`` is masked, so a mistyped URL (``http:/user:pass@host``) or an unencoded
    ``#``, ``/`` or ``?`` in the password shows no part of it either."""
    match = _USERINFO.match(url)
    if match is None:
        return url
    prefix, userinfo, host = match.groups()
    user, colon, _ = userinfo.partition(":")
    return f"{prefix}{user}:***@{host}" if colon else url


def _normalize_base_url(value: Any) -> tuple[str, tuple[str, str] | None]:
    """The base URL without its user part, and the ``(user, password)`` it carried: the
    credentials go out as Basic auth and never appear in a URL we show or log."""
    if not isinstance(value, str):
        raise TypeError(f"base_url must be a str, not {type(value).__name__}")
    url: str = value.strip().rstrip("/")
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    credentials = None
    if sep and "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        if any(c in userinfo for c in "/?#@"):
            raise ValueError(
                f"base_url {shown!r}: percent-encode '/', '?', '#' and '@' in "
                "the user and password (urllib.parse.quote(password, safe=''))"
            )
        user, _, password = userinfo.partition(":")
        credentials = (unquote(user), unquote(password))
        url = f"{scheme}://{rest}"
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"base_url must look like 'http://127.0.0.1:8080', got {shown!r}")
    if url.endswith("/v1"):  # an OpenAI-style base URL; our paths carry their own /v1
        url = url[: -len("/v1")]
    return url, credentials


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
        raise TypeError(
            "verify must be True, False, an ssl.SSLContext or the path of a CA "
            f"bundle, not {type(value).__name__}"
        )
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
        raise ValueError(
            f"verify: {path!r} holds no usable CA certificate (PEM expected): {exc}"
        ) from None


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
    """Configuration and everything that does no I/O."""

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

    def _send(self, call: Call[T]) -> T:
        raise NotImplementedError

    def _run(self, flow: Flow[T], total_timeout: float | None = None) -> T:
        raise NotImplementedError

    def _flow_limit(self, total_timeout: float | None) -> AbstractContextManager[None]:
        """A multi-step operation's steps share one wall-clock limit (its own, else the
        client's total_timeout): a deadline() block around them."""
        total = self.total_timeout if total_timeout is None else total_timeout
        return contextlib.nullcontext() if total is None else _wire.deadline(total)

    @staticmethod
    def _sleep_seconds(step: Sleep) -> float:
        """A flow's pause, cut at its deadline (the next step then times out at once)."""
        end = _wire.call_deadline.get()
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
        """A 200 to a streaming request that is not an event stream (a server that ignored
        ``stream``, a proxy's page) is a wrong answer, not a broken connection."""
        kind = response.headers.get("content-type", "")
        if "text/event-stream" in kind:
            return None
        return APIResponseError(
            f"{call.method} {call.path} asked for a stream but the server answered "
            f"{response.status_code} with {kind or 'no content type'}, not text/event-stream",
            status_code=response.status_code,
            method=call.method,
            url=str(response.request.url),
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
        except (
            ValidationError,
            LookupError,
            TypeError,
            ValueError,
            AttributeError,
            ArithmeticError,
        ) as exc:
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


class Body:
    """A body's decoded parts as they are read, failing once they pass the client's
    ``max_response_bytes`` (or at once, when ``Content-Length`` says they will)."""

    __slots__ = ("_limit", "_call", "_response", "_parts", "_size")

    def __init__(self, client: BaseClient, call: Call[Any], response: httpx.Response) -> None:
        self._limit = client.max_response_bytes
        self._call = call
        self._response = response
        self._parts: list[bytes] = []
        self._size = 0
        declared = response.headers.get("content-length")
        if (
            self._limit is not None
            and declared is not None
            and declared.isdigit()
            and int(declared) > self._limit
        ):
            raise self._too_large(int(declared))

    def add(self, part: bytes) -> None:
        self._size += len(part)
        if self._limit is not None and self._size > self._limit:
            raise self._too_large(self._size)
        self._parts.append(part)

    def join(self) -> bytes:
        return b"".join(self._parts)

    def _too_large(self, size: int) -> APIResponseError:
        call, response = self._call, self._response
        return APIResponseError(
            f"{call.method} {call.path}: the server's answer is larger than max_response_bytes "
            f"({self._limit:,} bytes; {size:,} so far); raise max_response_bytes if such "
            "answers are expected",
            status_code=response.status_code,
            method=call.method,
            url=str(response.request.url),
        )


class Attempts:
    """The retry bookkeeping of one call, shared by the sync and async send loops.

    The resend rule: a request is sent again without spending a retry only when it provably
    never reached the server, that is when writing it failed on a reused keep-alive
    connection (a server acts on no request it has not received whole), once per call.
    Every other failure, among them a reused connection that closes after the request left
    whole and before a byte of answer, spends a retry: with ``max_retries=0`` a request is
    sent at most once. (asyncio buffers writes, so the async client sees fewer failed
    writes and spends a retry where it cannot prove one.) Idle connections are given up
    before llama-server's own idle close (``KEEPALIVE_EXPIRY``), streams close their
    connection as llama-server does after them, and httpcore drops a pooled connection the
    server has already closed before writing on it: the server's own closes cost nothing.
    """

    __slots__ = (
        "_client",
        "_call",
        "_left",
        "_attempt",
        "_resend_available",
        "deadline",
        "_total",
        "_trace",
    )

    def __init__(self, client: BaseClient, call: Call[Any]) -> None:
        self._client = client
        self._call = call
        self._left = client._retries_for(call)
        self._attempt = 0
        self._resend_available = True
        total = client.total_timeout if call.total_timeout is None else call.total_timeout
        outer = _wire.call_deadline.get()  # the deadline(...) block around it
        end = None if total is None else time.monotonic() + total
        if outer is not None and (end is None or outer < end):
            end, total = outer, None
        self.deadline = end
        self._total = total
        self._trace = _wire.AttemptTrace()

    def enter(self) -> tuple[Any, Any]:
        """Tell the network backend about this call (its attempts, its deadline)."""
        deadline = None if self.deadline is None else _wire.call_deadline.set(self.deadline)
        return _wire.current_attempt.set(self._trace), deadline

    def exit(self, tokens: tuple[Any, Any]) -> None:
        _wire.current_attempt.reset(tokens[0])
        if tokens[1] is not None:
            _wire.call_deadline.reset(tokens[1])

    def start(self, request: httpx.Request) -> None:
        """Before each attempt: a clean trace; the pool wait bounded by the deadline (every
        socket wait is bounded by the network backend)."""
        trace = self._trace
        trace.new_connection = trace.write_failed = False
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self.timed_out(None)
            timeouts = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                key: left if value is None or value > left else value
                for key, value in {
                    "connect": None,
                    "read": None,
                    "write": None,
                    "pool": None,
                    **timeouts,
                }.items()
            }

    def resend_now(self, exc: httpx.TransportError) -> bool:
        """Whether to resend at once, for free: see the class's rule."""
        trace = self._trace
        if (
            self._resend_available
            and trace.write_failed
            and not trace.new_connection
            and is_stale_connection_error(exc)
        ):
            self._resend_available = False
            log.debug(
                "resending %s %s: the reused connection failed before the request was "
                "written whole (%r)",
                self._call.method,
                self._call.path,
                exc,
            )
            return True
        return False

    def expired(self) -> bool:
        return _wire.has_passed(self.deadline)

    def timed_out(self, last: BaseException | None) -> APITimeoutError:
        call = self._call
        limit = (
            f"total_timeout of {self._total:g}s"
            if self._total
            else "time of the deadline() block around it"
        )
        tries = f" after {self._attempt + 1} attempts" if self._attempt else ""
        error = APITimeoutError(
            f"{call.method} {call.path}: the {limit} passed{tries}"
            + (
                f" (last: {last})"
                if last is not None and not isinstance(last, APITimeoutError)
                else ""
            ),
            method=call.method,
            url=self._client.base_url + call.path,
        )
        error.__cause__ = last
        return error

    def delay_or_raise(self, error: APIError) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when there is none."""
        if self.expired():
            raise self.timed_out(error)
        delay = self._client._retry_delay(error, self._attempt) if self._left > 0 else None
        if delay is None:
            raise error
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            raise self.timed_out(error)
        log.debug(
            "retrying %s %s in %.2fs (%d left) after: %s",
            self._call.method,
            self._call.path,
            delay,
            self._left,
            error,
        )
        self._left -= 1
        self._attempt += 1
        return delay


def decoding_error(call: Call[Any], exc: httpx.DecodingError) -> APIResponseError:
    return APIResponseError(
        f"{call.method} {call.path}: the response body could not be decoded: {exc}"
    )


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
        try:
            return float(email.utils.mktime_tz(parsed) - time.time())
        except (ValueError, OverflowError):  # a date out of any range: no usable advice
            return None


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
        shown = f": {title}" if title else ""
        text = f"HTML error page{shown} (from a proxy in front of llama-server?)"
    return (
        text or response.reason_phrase or "no message",
        None,
        parsed if parsed is not None else text,
    )
