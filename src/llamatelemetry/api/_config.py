"""The clients' defaults and the checks of their settings (base URL, key, timeouts, TLS,
option names): each turns what a caller passed into what a client uses, or raises a
``TypeError`` or ``ValueError`` naming it, before any request is sent."""

from __future__ import annotations

import difflib
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any, Union
from urllib.parse import unquote, urlsplit

import httpx
from typing_extensions import TypedDict

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "BASE_URL_ENV",
    "API_KEY_ENV",
    "TimeoutTypes",
    "ClientOptions",
    "check_options",
    "to_timeout",
    "check_total_timeout",
    "redact_url",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Where the client (and the CLI) find the server and its key when none is given; llama-server
# itself reads its --api-key from API_KEY_ENV too.
BASE_URL_ENV = "LLAMA_BASE_URL"
API_KEY_ENV = "LLAMA_API_KEY"
# Local generations can be long; connecting to a local server should be instant.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
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


def host_and_port(url: str) -> tuple[str, int]:
    """The host a URL reaches and its port (the scheme's own when the URL names none);
    ``ValueError`` for a port that is not a number."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


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
