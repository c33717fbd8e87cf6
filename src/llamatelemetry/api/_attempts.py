"""How one call is tried: its retries and their delays, its deadline, and the limit on the
size of the answer it reads. The sync and async send loops share them."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Protocol

import httpx

from . import _deadline_backend
from ._api_errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    TLSVerificationError,
)
from ._calls_and_callers import Call
from ._transport_errors import is_stale_connection_error

__all__ = ["Attempts", "Body", "Limits", "decoding_error", "retry_delay"]

log = logging.getLogger("llamatelemetry")

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class Limits(Protocol):
    """What a call's attempts read of the client that sends it (its public settings)."""

    @property
    def base_url(self) -> str: ...

    @property
    def max_retries(self) -> int: ...

    @property
    def total_timeout(self) -> float | None: ...

    @property
    def max_response_bytes(self) -> int | None: ...


def retry_delay(error: APIError, attempt: int) -> float | None:
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

    def __init__(self, client: Limits, call: Call[Any], response: httpx.Response) -> None:
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

    def __init__(self, client: Limits, call: Call[Any]) -> None:
        self._client = client
        self._call = call
        self._left = client.max_retries if call.retries is None else call.retries
        self._attempt = 0
        self._resend_available = True
        total = client.total_timeout if call.total_timeout is None else call.total_timeout
        outer = _deadline_backend.call_deadline.get()  # the deadline(...) block around it
        end = None if total is None else time.monotonic() + total
        if outer is not None and (end is None or outer < end):
            end, total = outer, None
        self.deadline = end
        self._total = total
        self._trace = _deadline_backend.AttemptTrace()

    def enter(self) -> tuple[Any, Any]:
        """Tell the network backend about this call (its attempts, its deadline)."""
        deadline = (
            None if self.deadline is None else _deadline_backend.call_deadline.set(self.deadline)
        )
        return _deadline_backend.current_attempt.set(self._trace), deadline

    def exit(self, tokens: tuple[Any, Any]) -> None:
        _deadline_backend.current_attempt.reset(tokens[0])
        if tokens[1] is not None:
            _deadline_backend.call_deadline.reset(tokens[1])

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
        return _deadline_backend.has_passed(self.deadline)

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
        delay = retry_delay(error, self._attempt) if self._left > 0 else None
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
