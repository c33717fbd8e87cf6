"""httpx's transport errors, translated into ours (which ``requests`` code also catches)."""

from __future__ import annotations

import re

import httpx

from ._api_errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIError,
    APITimeoutError,
    StreamInterruptedError,
    TLSVerificationError,
)

__all__ = ["translate_transport_error", "is_stale_connection_error"]


def translate_transport_error(exc: httpx.TransportError, *, streaming: bool = False) -> APIError:
    try:
        request = exc.request
        method, url = request.method, str(request.url)
    except RuntimeError:  # an error raised before a request was attached
        method, url = None, None
    where = f" ({method} {url})" if method else ""
    if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)):
        # The request itself is malformed (a header with a newline, a bad URL): a bug in
        # the arguments, not a network failure, so neither retried nor a ConnectionError.
        # h11 quotes the offending header value, which may be a key: never repeat it.
        reason = re.sub(r"""b?(['"]).*\1""", "<value not shown>", str(exc))
        raise ValueError(f"the request could not be sent{where}: {reason}") from None
    if isinstance(exc, httpx.ConnectTimeout):
        return APIConnectTimeoutError(
            f"timed out connecting to the server{where}", method=method, url=url
        )
    if isinstance(exc, httpx.TimeoutException):
        kind = {
            httpx.ConnectTimeout: "connecting to the server",
            httpx.ReadTimeout: "waiting for the server's response",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection in the pool",
        }.get(type(exc), "talking to the server")
        return APITimeoutError(f"timed out {kind}{where}", method=method, url=url)
    if streaming:
        return StreamInterruptedError(
            f"the connection broke in the middle of the stream{where}: "
            f"{exc or type(exc).__name__}; "
            "the output is incomplete",
            method=method,
            url=url,
        )
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return TLSVerificationError(
            f"TLS certificate verification failed{where}: {exc}. Pass verify='/path/to/ca.pem' "
            "(the CA that signed the server's certificate)",
            method=method,
            url=url,
        )
    if isinstance(exc, httpx.ConnectError):
        message = f"could not connect to llama-server{where}: {exc}. Is the server running?"
    else:
        message = f"connection to llama-server failed{where}: {exc or type(exc).__name__}"
    return APIConnectionError(message, method=method, url=url)


def is_stale_connection_error(exc: httpx.TransportError) -> bool:
    """A failure that a pooled keep-alive connection closed by the server produces before
    any response byte: safe to send again at once on a fresh connection."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return "without sending a response" in str(exc) or not str(exc)
    return isinstance(exc, (httpx.ReadError, httpx.WriteError))
