"""The exception tree of the client.

```
LlamaTelemetryError
 ├── EventLoopError                    (also a RuntimeError) an async client used across event loops
 ├── ConcurrentIterationError          (also a RuntimeError) one stream read by two threads or tasks
 ├── ForkError                         (also a RuntimeError) a pool or stream used across os.fork()
 ├── APIError                          anything that went wrong talking to the server
 │    ├── APIConnectionError           (also a requests.ConnectionError) refused, reset, dropped
 │    │    ├── TLSVerificationError    the server's certificate did not verify (not retried)
 │    │    └── StreamInterruptedError  the connection ended mid-stream without its end marker
 │    ├── APITimeoutError              (also a requests.Timeout) connect, read, write, pool
 │    │    └── APIConnectTimeoutError  (also an APIConnectionError) connecting took too long
 │    ├── APIResponseError             the server answered with bytes we cannot decode
 │    │    └── StructuredOutputError   an answer that does not validate against its model
 │    ├── StreamError                  an ``error`` event inside a stream
 │    ├── ModelLoadError               a router's model failed to load (``exit_code``)
 │    └── APIStatusError               a 4xx/5xx answer: status_code, message, type, body
 │         ├── BadRequestError          400
 │         ├── AuthenticationError      401
 │         ├── PermissionDeniedError    403
 │         ├── NotFoundError            404
 │         ├── ConflictError            409
 │         ├── UnprocessableEntityError 422
 │         ├── RateLimitError           429
 │         ├── NotSupportedError        501 the endpoint needs a server option (``hint``)
 │         └── InternalServerError      5xx
 │              └── ServiceUnavailableError  503, e.g. "Loading model"
```

Connection and timeout errors subclass ``requests``' own, so code written against
``requests`` (and the spec's error-handling example) keeps catching them.

llama.cpp words its refusals for someone at a shell ("Start it with `--reranking`"). An
`APIStatusError` whose server lacks an option says, in its ``hint``, the keyword that
turns the option on for `ServerManager.start` and `InferenceEngine`; the command line
names the flag instead. `SERVER_OPTIONS` is the one table of both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import requests

__all__ = [
    "LlamaTelemetryError",
    "EventLoopError",
    "ConcurrentIterationError",
    "ForkError",
    "APIError",
    "APIConnectionError",
    "StreamInterruptedError",
    "TLSVerificationError",
    "APITimeoutError",
    "APIConnectTimeoutError",
    "APIResponseError",
    "StreamError",
    "ModelLoadError",
    "StructuredOutputError",
    "ToolsIgnoredWarning",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "NotSupportedError",
    "InternalServerError",
    "ServiceUnavailableError",
    "status_error",
    "SERVER_OPTIONS",
    "ServerOption",
    "missing_server_option",
]


class ServerOption(NamedTuple):
    """A server option a refused request needs: its Python keyword and its command-line flag."""

    keyword: str  # for ServerManager.start / InferenceEngine
    flag: str  # for llama-server and ``llamatelemetry serve``


#: What a server lacks, by the name llama.cpp's message gives it (its flag, or the pooling
#: error that an embedding model started without a pooling type answers).
SERVER_OPTIONS: dict[str, ServerOption] = {
    "--embeddings": ServerOption("embedding=True", "--embedding"),
    "--reranking": ServerOption("reranking=True", "--reranking"),
    "--metrics": ServerOption("metrics=True", "--metrics"),
    "--slots": ServerOption("slots=True", "--slots"),
    "pooling": ServerOption('pooling="mean"', "--pooling mean"),
}
_FLAG = re.compile(r"[Ss]tart it with `(--[\w-]+)`")
_NO_POOLING = "is not OAI compatible"  # "Pooling type 'none' is not OAI compatible..."


def missing_server_option(status_code: int, message: str) -> ServerOption | None:
    """The server option a refusal asks for: a 501 naming a flag, or the 400 of embeddings
    from a server without a pooling type. None for any other error."""
    if status_code == 501 and (flag := _FLAG.search(message)):
        return SERVER_OPTIONS.get(flag.group(1))
    if status_code == 400 and "pooling" in message.lower() and _NO_POOLING in message:
        return SERVER_OPTIONS["pooling"]
    return None


class LlamaTelemetryError(Exception):
    """Base of every error this library raises on purpose."""


class EventLoopError(LlamaTelemetryError, RuntimeError):
    """An async client's connections belong to another event loop that is still running."""


class ConcurrentIterationError(LlamaTelemetryError, RuntimeError):
    """A stream was read from two threads (or tasks) at once: its chunks can go to one
    reader only. The stream itself is unharmed; the other reader goes on."""


class ForkError(LlamaTelemetryError, RuntimeError):
    """A forked child used connections that belong to its parent: a stream opened before the
    fork, or a client on an ``http_client`` made before it."""


class APIError(LlamaTelemetryError):
    """A request to llama-server did not give a usable answer."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url

    def __str__(self) -> str:
        return self.message


class APIConnectionError(APIError, requests.ConnectionError):
    """The server could not be reached, or the connection broke."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        APIError.__init__(self, message, method=method, url=url)
        # requests' base keeps these attributes; ours are not requests objects.
        self.request = None
        self.response = None


class TLSVerificationError(APIConnectionError):
    """The server's TLS certificate did not verify: not retried (it will not change by
    itself); pass ``verify=`` a CA bundle that signs it."""


class StreamInterruptedError(APIConnectionError):
    """The connection ended before the stream's end marker: the output is incomplete."""


class APITimeoutError(APIError, requests.Timeout):
    """Connecting, reading, writing or waiting for a pooled connection took too long."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        APIError.__init__(self, message, method=method, url=url)
        self.request = None
        self.response = None


class APIConnectTimeoutError(APITimeoutError, APIConnectionError):
    """Connecting took too long: both a timeout and a connection failure, as in requests."""


class APIResponseError(APIError):
    """The server answered, but not with what the endpoint promises (bad JSON, wrong type)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, body: Any = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        self.body = body


class ToolsIgnoredWarning(UserWarning):
    """``tools`` were sent to a server whose chat template cannot use them: llama-server
    ignores them (even with ``tool_choice="required"``) and the model answers in text."""


class StructuredOutputError(APIResponseError):
    """``chat.completions.parse``: the answer does not validate against the model it was
    constrained to, most often because ``max_tokens`` cut it (``finish_reason`` "length").
    ``content`` is the text the model produced; the validation error is the ``__cause__``."""

    def __init__(
        self, message: str, *, content: str | None, finish_reason: str | None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.content = content
        self.finish_reason = finish_reason


class StreamError(APIError):
    """The server reported an error inside a stream (``data: {"error": {...}}``)."""

    def __init__(
        self, message: str, *, code: int | None = None, type: str | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.type = type
        self.body = body


class ModelLoadError(APIError):
    """A router could not load a model (its instance exited): ``exit_code`` is the
    instance's, ``status`` the model's entry in the router's ``/models``."""

    def __init__(self, message: str, *, status: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = dict(status or {})
        self.exit_code = self.status.get("exit_code")


class APIStatusError(APIError):
    """The server answered with an error status; ``message`` and ``type`` are the server's own."""

    status_code: int

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str | None = None,
        body: Any = None,
        *,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.args = (status_code, message, type, body)  # so pickling rebuilds it
        self.status_code = status_code
        self.type = type
        self.body = body
        self.retry_after = retry_after

    @property
    def hint(self) -> str:
        """What to change, in Python terms, when the server lacks an option it needs
        (``'start the server with reranking=True ...'``); ``""`` otherwise."""
        option = missing_server_option(self.status_code, self.message)
        if option is None:
            return ""
        return f"start the server with {option.keyword} (ServerManager.start or InferenceEngine)"

    def __str__(self) -> str:
        kind = f" {self.type}" if self.type else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.status_code}{kind}: {self.message}{hint}"


class BadRequestError(APIStatusError):
    """400: the server rejected the request's content."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key (pass ``api_key=`` or set ``LLAMA_API_KEY``)."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: unknown endpoint, model, slot or file."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429: ``retry_after`` holds the server's ``Retry-After`` in seconds, when it sent one."""


class NotSupportedError(APIStatusError):
    """501: the server was started without the option this endpoint needs: the server's
    message names its flag, ``hint`` the `ServerManager` keyword."""


class InternalServerError(APIStatusError):
    """5xx."""


class ServiceUnavailableError(InternalServerError):
    """503: usually "Loading model"; retried, since it passes once the model is loaded."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    501: NotSupportedError,
    503: ServiceUnavailableError,
}


def status_error(
    status_code: int,
    message: str,
    type: str | None = None,
    body: Any = None,
    **kw: Any,
) -> APIStatusError:
    """The exception for a status code: one table, so every call maps statuses alike."""
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(status_code, message, type, body, **kw)
