"""The fault table, run with both clients (``LlamaCppClient`` and ``AsyncLlamaCppClient``).

For every fault: the exception a user gets (type and message), how many requests the
server saw (4xx never retried, the rest at most ``1 + max_retries``, a stream never
replayed), and that the same client object answers its next call. tests/api/test_faults.py
holds the sync-only details; this table makes the async client answer for the same.
"""

from __future__ import annotations

import time

import httpx
import pytest
import requests

from llamatelemetry.api import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    StreamInterruptedError,
    UnprocessableEntityError,
)
from llamatelemetry.testing._fault_server import Reply, sse

from ._support import (
    LOADING,
    REPLY,
    BlackHole,
    LatePort,
    TallyingFaultServer,
    chunk,
    close_connections,
    contents,
    tally,
    usable,
)

pytestmark = pytest.mark.usefixtures("fast_backoff")

OK = Reply(200, REPLY)
STREAM = sse(chunk("a"), chunk("b"), chunk("c"), chunk(finish="length"))
PROXY_502 = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


def server(*replies: Reply) -> TallyingFaultServer:
    tally(scenarios=1)
    return TallyingFaultServer(list(replies))


# --- connecting --------------------------------------------------------------------------


def test_connection_refused_then_the_server_appears(drivers) -> None:
    tally(scenarios=1)
    port = LatePort()
    try:
        driver = drivers(port.url, max_retries=2)
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError) as info:
            driver.chat()
        assert type(info.value) is APIConnectionError
        assert f"could not connect to llama-server (POST {port.url}/v1/chat/completions)" in str(
            info.value
        )
        assert "Is the server running?" in str(info.value)
        assert info.value.url == f"{port.url}/v1/chat/completions"
        assert time.monotonic() - started < 1.0  # three refusals, fast backoff
        assert port.requests == 0
        port.serve(REPLY)
        usable(driver)  # the same client, once the server listens
        assert port.requests == 1
    finally:
        port.close()
    tally(requests=1)


def test_connect_timeout_is_a_timeout_and_a_connection_error(drivers) -> None:
    tally(scenarios=1)
    hole = BlackHole()
    try:
        driver = drivers(hole.url, timeout=httpx.Timeout(5.0, connect=0.2), max_retries=1)
        started = time.monotonic()
        with pytest.raises(APIConnectTimeoutError) as info:
            driver.chat()
        elapsed = time.monotonic() - started
        assert isinstance(info.value, requests.Timeout)
        assert isinstance(info.value, requests.ConnectionError)
        assert str(info.value) == (
            f"timed out connecting to the server (POST {hole.url}/v1/chat/completions)"
        )
        assert 0.35 < elapsed < 2.0  # two attempts of 0.2 s each: bounded
        assert not driver.client.is_closed
    finally:
        hole.close()


# --- waiting for an answer ---------------------------------------------------------------


def test_read_timeout_is_retried_then_raised_then_recovers(drivers) -> None:
    stalled = Reply(200, REPLY, delay=10.0)  # each attempt is cut long before this
    with server(stalled, stalled, OK) as fault:
        driver = drivers(fault.url, timeout=(1.0, 0.2), max_retries=1)
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            driver.chat()
        assert not isinstance(info.value, requests.ConnectionError)
        assert isinstance(info.value, requests.Timeout)
        assert str(info.value).startswith("timed out waiting for the server's response (POST ")
        assert time.monotonic() - started < 5  # two 0.2 s reads, not 10 s answers
        assert len(fault.requests) == 2  # 1 + max_retries
        usable(driver)
        assert len(fault.requests) == 3


def test_stream_stalled_mid_way_times_out_and_is_not_replayed(drivers) -> None:
    # the head and first chunk come at once, well within the 2 s read timeout; the next
    # only after 10 s
    with server(Reply(chunks=STREAM, chunk_delay=10.0), OK) as fault:
        driver = drivers(fault.url, timeout=2.0, max_retries=2)
        seen, error, stream = driver.stream()
        assert contents(seen) == ["a"]
        assert type(error) is APITimeoutError
        assert "waiting for the server's response" in str(error)
        assert stream.closed
        assert len(fault.requests) == 1  # a stream is never replayed
        usable(driver)


# --- connections that break --------------------------------------------------------------


def test_stream_dropped_mid_way_raises_never_ends_silently(drivers) -> None:
    with server(Reply(chunks=STREAM, drop_after=2), OK) as fault:
        driver = drivers(fault.url)
        seen, error, stream = driver.stream()
        assert contents(seen) == ["a", "b"]
        assert type(error) is StreamInterruptedError
        assert isinstance(error, requests.ConnectionError)
        assert "broke in the middle of the stream" in str(error)
        assert str(error).endswith("the output is incomplete")
        assert stream.closed
        assert len(fault.requests) == 1
        usable(driver)


def test_stream_closed_cleanly_without_done_raises(drivers) -> None:
    with server(Reply(chunks=sse(chunk("a"), chunk(finish="stop"), done=False)), OK) as fault:
        driver = drivers(fault.url)
        seen, error, stream = driver.stream()
        assert contents(seen) == ["a", None]
        assert type(error) is StreamInterruptedError
        assert "data: [DONE] never arrived" in str(error)
        assert len(fault.requests) == 1
        usable(driver)


def test_body_cut_mid_way_is_a_connection_error_and_retried(drivers) -> None:
    cut = Reply(
        chunks=[b'{"id": "chatcmpl-1", "choi', b'ces": []}'],
        drop_after=1,
        content_type="application/json",
    )
    with server(cut, cut, cut, OK) as fault:
        driver = drivers(fault.url, max_retries=1)
        with pytest.raises(APIConnectionError) as info:
            driver.chat()
        assert type(info.value) is APIConnectionError  # not a StreamInterruptedError: no stream
        assert "connection to llama-server failed" in str(info.value)
        assert len(fault.requests) == 2
        usable(driver)  # the third cut is retried into the good answer
        assert len(fault.requests) == 4


def test_idle_keepalive_connections_closed_by_the_server(drivers) -> None:
    with server(OK) as fault:
        driver = drivers(fault.url, max_retries=0)
        driver.chat()
        driver.chat()
        assert close_connections(fault) == 1  # the server closes the idle connection
        time.sleep(0.05)
        usable(driver)  # no retry budget needed: the dead connection is never used
        assert [r.connection for r in fault.requests] == [0, 0, 1]


def test_keepalive_dropped_after_the_request_arrived_is_not_resent(drivers) -> None:
    # The server dropped the reused connection without a byte of answer, after reading the
    # request whole: it may have run, so with no retry budget it is not sent again.
    with server(OK, Reply(drop=True), OK) as fault:
        driver = drivers(fault.url, max_retries=0)
        driver.chat()
        with pytest.raises(APIConnectionError):
            driver.chat()
        assert [r.connection for r in fault.requests] == [0, 0]
        usable(driver)
        assert [r.connection for r in fault.requests] == [0, 0, 1]


# --- errors the server (or a proxy) answers with ----------------------------------------


def test_error_event_inside_a_stream(drivers) -> None:
    error = {"error": {"code": 500, "message": "context overflow", "type": "server_error"}}
    with server(Reply(chunks=sse(chunk("a"), error, chunk("never"))), OK) as fault:
        driver = drivers(fault.url)
        seen, raised, stream = driver.stream()
        assert contents(seen) == ["a"]
        assert type(raised) is StreamError
        assert (str(raised), raised.code, raised.type) == ("context overflow", 500, "server_error")
        assert raised.body == error
        assert stream.closed
        assert len(fault.requests) == 1
        usable(driver)


def test_503_loading_storm_then_recovery(drivers) -> None:
    loading = Reply(503, LOADING)
    with server(loading, loading, loading, OK) as fault:
        driver = drivers(fault.url, max_retries=3)
        assert driver.chat().choices[0].message.content == "ok"
        assert len(fault.requests) == 4
        usable(driver)


def test_503_storm_longer_than_the_retries(drivers) -> None:
    with server(*[Reply(503, LOADING)] * 3, OK) as fault:
        driver = drivers(fault.url, max_retries=2)
        with pytest.raises(ServiceUnavailableError) as info:
            driver.chat()
        assert str(info.value) == "503 unavailable_error: Loading model"
        assert isinstance(info.value, InternalServerError)
        assert len(fault.requests) == 3
        usable(driver)


@pytest.mark.parametrize(
    "header", [{"Retry-After": "0.3"}, {"retry-after-ms": "300"}], ids=["seconds", "milliseconds"]
)
def test_429_waits_as_long_as_retry_after_says(drivers, header: dict[str, str]) -> None:
    limited = Reply(429, {"error": {"code": 429, "message": "slow down"}}, headers=header)
    with server(limited, OK) as fault:
        driver = drivers(fault.url, max_retries=1)
        started = time.monotonic()
        assert driver.chat().choices[0].message.content == "ok"
        assert 0.3 <= time.monotonic() - started < 1.5
        assert len(fault.requests) == 2
        tally(faults_survived=1)


def test_429_retry_after_beyond_the_cap_falls_back_to_backoff(drivers) -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "3600"})
    with server(limited, limited) as fault:
        driver = drivers(fault.url, max_retries=1)
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            driver.chat()
        assert time.monotonic() - started < 1.0  # never sleeps an hour inside a call
        assert info.value.retry_after == 3600.0  # the caller may choose to wait it out
        assert str(info.value) == "429: slow down"
        assert len(fault.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, APIStatusError),
        (422, UnprocessableEntityError),
        (501, NotSupportedError),
    ],
)
def test_4xx_and_501_are_never_retried(drivers, status: int, error_type: type) -> None:
    body = {"error": {"code": status, "message": f"message {status}", "type": "some_error"}}
    with server(Reply(status, body), OK) as fault:
        driver = drivers(fault.url, max_retries=3)
        with pytest.raises(error_type) as info:
            driver.chat()
        assert type(info.value) is error_type
        assert str(info.value) == f"{status} some_error: message {status}"
        assert (info.value.status_code, info.value.body) == (status, body)
        assert len(fault.requests) == 1
        usable(driver)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (408, APIStatusError),
        (409, ConflictError),
        (500, InternalServerError),
        (502, InternalServerError),
        (504, InternalServerError),
    ],
)
def test_retryable_statuses_are_retried_a_bounded_number_of_times(
    drivers, status: int, error_type: type
) -> None:
    failing = Reply(status, {"error": {"message": "try again"}})
    with server(failing, failing, failing, OK) as fault:
        driver = drivers(fault.url, max_retries=2)
        with pytest.raises(error_type) as info:
            driver.chat()
        assert info.value.status_code == status
        assert len(fault.requests) == 3
        usable(driver)


def test_html_error_page_from_a_proxy_is_summarized(drivers) -> None:
    with server(
        Reply(502, PROXY_502, content_type="text/html"),
        Reply(502, PROXY_502, content_type="text/html"),
        OK,
    ) as fault:
        driver = drivers(fault.url, max_retries=1)
        with pytest.raises(InternalServerError) as info:
            driver.chat()
        assert info.value.message == (
            "HTML error page: 502 Bad Gateway (from a proxy in front of llama-server?)"
        )
        assert "<html" not in str(info.value)
        assert len(fault.requests) == 2
        usable(driver)


def test_html_error_page_answering_a_stream(drivers) -> None:
    page = "<html><head><title>403 Forbidden</title></head><body>denied</body></html>"
    with server(Reply(403, page, content_type="text/html"), OK) as fault:
        driver = drivers(fault.url, max_retries=2)
        seen, error, _ = driver.stream()
        assert seen == [] and type(error) is PermissionDeniedError
        assert "HTML error page: 403 Forbidden" in str(error)
        assert len(fault.requests) == 1
        usable(driver)


# --- answers that are not what they should be -------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b'{"choices": [', "application/json", "with application/json, not JSON"),
        (b"", "application/json", "not JSON: ''"),
        (b"<html><body>Welcome</body></html>", "text/html", "with text/html, not JSON"),
        (b"\xff\xfe\x00garbage", "application/octet-stream", "not JSON"),
        (b'{"choices": "nope"}', "application/json", "unexpected shape"),
        (b"[1, 2, 3]", "application/json", "unexpected shape"),
    ],
    ids=["truncated", "empty", "html-200", "binary", "wrong-shape", "array"],
)
def test_malformed_answers_are_response_errors_never_retried(
    drivers, body: bytes, content_type: str, match: str
) -> None:
    with server(Reply(200, body, content_type=content_type), OK) as fault:
        driver = drivers(fault.url, max_retries=3)
        with pytest.raises(APIResponseError, match=match) as info:
            driver.chat()
        assert info.value.status_code == 200
        assert len(fault.requests) == 1
        usable(driver)


def test_json_labelled_with_another_content_type_is_still_read(drivers) -> None:
    with server(Reply(200, REPLY, content_type="text/plain; charset=utf-8")) as fault:
        driver = drivers(fault.url)
        assert driver.chat().choices[0].message.content == "ok"


def test_stream_answered_with_a_whole_json_body_raises(drivers) -> None:
    # A server (or proxy) that ignores stream=true: the stream must not end silently.
    with server(Reply(200, REPLY), OK) as fault:
        driver = drivers(fault.url)
        seen, error, _ = driver.stream()
        assert seen == []
        assert isinstance(error, APIError)
        assert len(fault.requests) == 1
        usable(driver)


def test_stream_answered_with_json_names_the_content_type(drivers) -> None:
    with server(Reply(200, REPLY)) as fault:
        driver = drivers(fault.url)
        _, error, _ = driver.stream()
        assert type(error) is APIResponseError
        assert "application/json" in str(error)


# --- huge answers ------------------------------------------------------------------------


def test_huge_response_is_read_whole(drivers) -> None:
    content = "x" * 5_000_000
    body = {
        **REPLY,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    with server(Reply(200, body), OK) as fault:
        driver = drivers(fault.url)
        assert len(driver.chat().choices[0].message.content) == 5_000_000
        usable(driver)


def test_huge_error_page_gives_a_bounded_message(drivers) -> None:
    page = "<html><head><title>500 Oops</title></head><body>" + "y" * 8_000_000 + "</body></html>"
    with server(Reply(500, page, content_type="text/html"), OK) as fault:
        driver = drivers(fault.url, max_retries=0)
        with pytest.raises(InternalServerError) as info:
            driver.chat()
        assert len(str(info.value)) < 200
        assert len(repr(info.value.body)) < 1_000  # the exception does not keep 8 MB alive
        usable(driver)


def test_huge_stream_arrives_whole(drivers) -> None:
    big = "z" * 1_000_000
    events = sse(*[chunk(str(i % 10)) for i in range(3000)], chunk(big), chunk(finish="stop"))
    with server(
        Reply(chunks=[b"".join(events[i : i + 7]) for i in range(0, len(events), 7)]), OK
    ) as fault:
        driver = drivers(fault.url)
        seen, error, _ = driver.stream()
        assert error is None
        assert len(seen) == 3002
        assert len(seen[3000].choices[0].delta.content) == 1_000_000
        usable(driver)
