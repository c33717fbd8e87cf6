"""What a real llama-server cannot be made to do on demand: drops, stalls, malformed bytes,
503 storms, Retry-After, proxies' HTML pages, stale keep-alive connections.

Each test states the exception a user gets, how many requests the server saw, and that the
client still works afterwards.
"""

from __future__ import annotations

import time

import httpx
import pytest
import requests

from llamatelemetry.api import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    LlamaCppClient,
    NotSupportedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    StreamInterruptedError,
)
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

from ..conftest import LOADING, REPLY

MESSAGES = [{"role": "user", "content": "hi"}]


def chunk(content: str | None = None, finish: str | None = None, **extra: object) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "tiny",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


pytestmark = pytest.mark.usefixtures("fast_backoff")


def chat(client: LlamaCppClient, **kw: object):
    return client.chat.completions.create(messages=MESSAGES, max_tokens=4, **kw)


def test_connection_refused_is_a_requests_connection_error_after_bounded_retries() -> None:
    with FaultServer(Reply(200, {})) as server:
        url = server.url
    client = LlamaCppClient(url, max_retries=2)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError) as info:
        chat(client)
    assert isinstance(info.value, APIConnectionError)
    assert "could not connect" in str(info.value) and url in str(info.value)
    assert time.monotonic() - started < 2.0
    client.close()


def test_spec_error_example_catches_connection_error() -> None:
    with FaultServer(Reply(200, {})) as server:
        url = server.url
    client = LlamaCppClient(base_url=url, max_retries=0)
    outcome = None
    try:
        client.chat_completion(messages=[{"role": "user", "content": "Hello"}], max_tokens=64)
    except requests.ConnectionError:
        outcome = "connection"
    except requests.Timeout:
        outcome = "timeout"
    assert outcome == "connection"


def test_503_loading_storm_then_recovery_is_retried() -> None:
    with FaultServer([Reply(503, LOADING), Reply(503, LOADING), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, max_retries=3) as client:
            response = chat(client)
            assert response.choices[0].message.content == "ok"
            assert len(server.requests) == 3
            assert chat(client).usage.total_tokens == 4  # still usable


def test_503_storm_exhausts_retries_with_server_message() -> None:
    with FaultServer(Reply(503, LOADING)) as server:
        with LlamaCppClient(server.url, max_retries=2) as client:
            with pytest.raises(ServiceUnavailableError) as info:
                chat(client)
            assert info.value.status_code == 503
            assert info.value.message == "Loading model"
            assert info.value.type == "unavailable_error"
            assert isinstance(info.value, InternalServerError)
            assert len(server.requests) == 3  # 1 + max_retries


def test_health_check_never_raises_on_503_and_does_not_retry() -> None:
    with FaultServer([Reply(503, LOADING), Reply(200, {"status": "ok"})]) as server:
        with LlamaCppClient(server.url) as client:
            loading = client.health.check()
            assert loading["status"] == "loading model"
            assert loading["error"]["code"] == 503
            assert len(server.requests) == 1
            assert client.health.check() == {"status": "ok"}


def test_wait_until_ready_polls_through_loading() -> None:
    with FaultServer([Reply(503, LOADING)] * 3 + [Reply(200, {"status": "ok"})]) as server:
        with LlamaCppClient(server.url) as client:
            assert client.health.wait_until_ready(timeout=5, interval=0.01) == {"status": "ok"}
            assert len(server.requests) == 4


def test_wait_until_ready_times_out_as_requests_timeout() -> None:
    with FaultServer(Reply(503, LOADING)) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(requests.Timeout, match="not ready within 0.2s"):
                client.health.wait_until_ready(timeout=0.2, interval=0.02)


def test_429_honours_retry_after() -> None:
    limited = Reply(
        429, {"error": {"code": 429, "message": "slow down"}}, headers={"Retry-After": "0.3"}
    )
    with FaultServer([limited, Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, max_retries=1) as client:
            started = time.monotonic()
            chat(client)
            assert time.monotonic() - started >= 0.3
            assert len(server.requests) == 2


def test_429_without_retries_carries_retry_after() -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"})
    with FaultServer(limited) as server:
        with LlamaCppClient(server.url, max_retries=0) as client:
            with pytest.raises(RateLimitError) as info:
                chat(client)
            assert info.value.retry_after == 7.0
            assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, BadRequestError), (401, AuthenticationError), (501, NotSupportedError)],
)
def test_4xx_and_501_are_not_retried(status: int, error_type: type) -> None:
    body = {"error": {"code": status, "message": f"message {status}", "type": "some_error"}}
    with FaultServer([Reply(status, body), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, max_retries=3) as client:
            with pytest.raises(error_type) as info:
                chat(client)
            assert (info.value.status_code, info.value.message) == (status, f"message {status}")
            assert info.value.body == body
            assert len(server.requests) == 1
            assert chat(client).choices[0].message.content == "ok"


def test_html_error_page_from_a_proxy() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    )
    with FaultServer(Reply(502, page, content_type="text/html")) as server:
        with LlamaCppClient(server.url, max_retries=1) as client:
            with pytest.raises(InternalServerError) as info:
                chat(client)
            assert info.value.status_code == 502
            assert "HTML error page: 502 Bad Gateway" in info.value.message
            assert len(server.requests) == 2


def test_malformed_json_raises_response_error_without_retry() -> None:
    with FaultServer(
        [Reply(200, b'{"choices": [', content_type="application/json"), Reply(200, REPLY)]
    ) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(APIResponseError, match="not JSON") as info:
                chat(client)
            assert info.value.status_code == 200
            assert len(server.requests) == 1
            assert chat(client).choices[0].message.content == "ok"


def test_wrong_content_type_and_shape() -> None:
    with FaultServer(
        [
            Reply(200, "<html>hello</html>", content_type="text/html"),
            Reply(200, {"choices": "nope"}),
        ]
    ) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(APIResponseError, match="text/html"):
                chat(client)
            with pytest.raises(APIResponseError, match="unexpected shape"):
                chat(client)


def test_read_timeout_is_a_requests_timeout_and_retried() -> None:
    with FaultServer([Reply(200, REPLY, delay=1.0), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, timeout=(1.0, 0.2), max_retries=1) as client:
            assert chat(client).choices[0].message.content == "ok"
            assert len(server.requests) == 2
        with LlamaCppClient(server.url, timeout=0.2, max_retries=0) as client:
            server._replies = [Reply(200, REPLY, delay=1.0)]
            with pytest.raises(requests.Timeout) as info:
                chat(client)
            assert isinstance(info.value, APITimeoutError)
            assert not isinstance(info.value, requests.ConnectionError)
            assert "waiting for the server's response" in str(info.value)


def test_per_request_timeout_overrides_client_timeout() -> None:
    with FaultServer(Reply(200, REPLY, delay=0.5)) as server:
        with LlamaCppClient(server.url, timeout=0.1, max_retries=0) as client:
            assert chat(client, timeout=5.0).choices[0].message.content == "ok"


def test_a_request_dropped_on_a_kept_alive_connection_is_sent_once() -> None:
    # The second request arrives whole on the kept-alive connection and the server closes
    # it without answering: the server may have acted on it, so it is not resent for free.
    with FaultServer([Reply(200, REPLY), Reply(drop=True), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, max_retries=0) as client:
            chat(client)
            with pytest.raises(APIConnectionError):
                chat(client)
            assert len(server.requests) == 2
            assert chat(client).choices[0].message.content == "ok"
            assert [r.connection for r in server.requests] == [0, 0, 1]


def test_drop_on_a_fresh_connection_is_not_resent_for_free() -> None:
    # Only a reused keep-alive connection can be stale; a fresh connection dropped by the
    # server may mean the server died mid-request, and a generation must not run twice.
    with FaultServer(Reply(drop=True)) as server:
        with LlamaCppClient(server.url, max_retries=0) as client:
            with pytest.raises(APIConnectionError):
                chat(client)
            assert len(server.requests) == 1
        with LlamaCppClient(server.url, max_retries=2) as client:
            server.requests.clear()
            with pytest.raises(requests.ConnectionError):
                chat(client)
            assert len(server.requests) == 3  # two retries, nothing more


def test_a_request_dropped_on_a_kept_alive_connection_spends_a_retry(fast_backoff: None) -> None:
    with FaultServer([Reply(200, REPLY), Reply(drop=True), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url, max_retries=1) as client:
            chat(client)
            assert chat(client).choices[0].message.content == "ok"
            assert len(server.requests) == 3  # ok, dropped, its one counted retry


def test_status_errors_pickle_and_connect_timeout_is_both() -> None:
    import pickle

    from llamatelemetry.api import APIConnectTimeoutError, BadRequestError

    error = BadRequestError(400, "bad", "invalid_request_error", {"error": {}}, url="u")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status_code, copy.message, copy.type, copy.url) == (
        400,
        "bad",
        "invalid_request_error",
        "u",
    )
    assert str(copy) == str(error)
    assert issubclass(APIConnectTimeoutError, requests.ConnectionError)
    assert issubclass(APIConnectTimeoutError, requests.Timeout)


def test_malformed_header_is_a_value_error_not_a_connection_error() -> None:
    with FaultServer(Reply(200, REPLY)) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(ValueError, match="could not be sent"):
                chat(client, extra_headers={"X-Bad": "a\r\nb"})
            assert server.requests == []


def test_health_probe_has_its_own_short_timeout() -> None:
    with FaultServer(Reply(200, {"status": "ok"}, delay=3.0)) as server:
        with LlamaCppClient(server.url, timeout=600) as client:
            started = time.monotonic()
            with pytest.raises(requests.Timeout):
                client.health.wait_until_ready(timeout=0.5, interval=0.05)
            assert time.monotonic() - started < 1.5


def test_stream_dropped_mid_way_raises_never_ends_silently() -> None:
    chunks = sse(chunk("a"), chunk("b"), chunk("c"), chunk(finish="length"))
    with FaultServer([Reply(chunks=chunks, drop_after=2), Reply(200, REPLY)]) as server:
        with LlamaCppClient(server.url) as client:
            stream = chat(client, stream=True)
            seen = []
            with pytest.raises(StreamInterruptedError) as info:
                for item in stream:
                    seen.append(item.choices[0].delta.content)
            assert seen == ["a", "b"]
            assert isinstance(info.value, requests.ConnectionError)
            assert stream.closed
            assert len(server.requests) == 1  # a stream is never replayed
            assert chat(client).choices[0].message.content == "ok"


def test_stream_complete_body_without_done_raises() -> None:
    chunks = sse(chunk("a"), chunk(finish="stop"), done=False)
    with FaultServer(Reply(chunks=chunks)) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(StreamInterruptedError, match=r"\[DONE\] never arrived"):
                list(chat(client, stream=True))


def test_error_event_inside_stream_raises_stream_error() -> None:
    error = {"error": {"code": 500, "message": "context overflow", "type": "server_error"}}
    with FaultServer(Reply(chunks=sse(chunk("a"), error))) as server:
        with LlamaCppClient(server.url) as client:
            stream = chat(client, stream=True)
            assert next(stream).choices[0].delta.content == "a"
            with pytest.raises(StreamError) as info:
                next(stream)
            assert (info.value.code, info.value.type) == (500, "server_error")
            assert str(info.value) == "context overflow"
            assert stream.closed


def test_stream_stall_hits_read_timeout() -> None:
    chunks = sse(chunk("a"), chunk("b"))
    with FaultServer(Reply(chunks=chunks, chunk_delay=10.0)) as server:  # "a" at once
        with LlamaCppClient(server.url, timeout=2.0) as client:
            stream = chat(client, stream=True)
            assert next(stream).choices[0].delta.content == "a"
            with pytest.raises(requests.Timeout):
                next(stream)


def test_malformed_stream_event() -> None:
    with FaultServer(Reply(chunks=[b"data: {not json\n\n"])) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(APIResponseError, match="not JSON"):
                list(chat(client, stream=True))


def test_stream_split_at_every_byte_decodes_the_same() -> None:
    events = sse(
        chunk("é"),
        chunk("漢字"),
        chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    )
    data = b"".join(events)
    one_byte_chunks = [data[i : i + 1] for i in range(len(data))]
    with FaultServer(Reply(chunks=one_byte_chunks)) as server:
        with LlamaCppClient(server.url) as client:
            items = list(chat(client, stream=True))
    assert [i.choices[0].delta.content for i in items] == ["é", "漢字", None, None]
    assert items[-1].usage.completion_tokens == 2


def test_huge_response_is_read_whole() -> None:
    content = "x" * 5_000_000
    body = {
        **REPLY,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    with FaultServer(Reply(200, body)) as server:
        with LlamaCppClient(server.url) as client:
            assert len(chat(client).choices[0].message.content) == 5_000_000


def test_request_carries_key_and_json_and_user_agent() -> None:
    with FaultServer(Reply(200, REPLY)) as server:
        with LlamaCppClient(server.url, api_key="sekret") as client:
            chat(client, stream=False, min_p=0.1)
    seen = server.requests[0]
    assert seen.headers["authorization"] == "Bearer sekret"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("llamatelemetry/")
    assert seen.json()["min_p"] == 0.1 and seen.json()["max_tokens"] == 4


def test_env_vars_give_base_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultServer(Reply(200, {"status": "ok"})) as server:
        monkeypatch.setenv("LLAMA_BASE_URL", server.url + "/v1/")
        monkeypatch.setenv("LLAMA_API_KEY", "from-env")
        with LlamaCppClient() as client:
            assert client.base_url == server.url
            assert client.health.check() == {"status": "ok"}
            assert "from-env" not in repr(client)
    assert server.requests[0].headers["authorization"] == "Bearer from-env"
    assert server.requests[0].path == "/health"


def test_custom_http_client_is_used() -> None:
    with FaultServer(Reply(200, {"status": "ok"})) as server:
        http = httpx.Client(headers={"X-Custom": "1"})
        with LlamaCppClient(server.url, http_client=http) as client:
            client.health.check()
        assert server.requests[0].headers["x-custom"] == "1"
        assert http.is_closed


def test_streams_close_their_connection_as_llama_server_does() -> None:
    # llama-server closes the connection just after each streamed answer: a stream asks
    # for that itself, so no later request is written on a connection about to close.
    chunks = sse(chunk("a"), chunk(finish="stop"))
    with FaultServer([Reply(200, REPLY), Reply(chunks=chunks)]) as server:
        with LlamaCppClient(server.url) as client:
            chat(client)
            for _ in range(3):
                assert len(list(chat(client, stream=True))) == 2
    assert [r.connection for r in server.requests] == [0, 0, 1, 2]
    assert [r.headers.get("connection") for r in server.requests] == [
        "keep-alive",
        "close",
        "close",
        "close",
    ]


def test_chunks_before_an_error_event_in_the_same_read_are_delivered() -> None:
    error = {"error": {"code": 500, "message": "boom", "type": "server_error"}}
    data = b"".join(sse(chunk("a"), chunk("b"), error))
    with FaultServer(Reply(chunks=[data])) as server:
        with LlamaCppClient(server.url) as client:
            stream = chat(client, stream=True)
            assert [next(stream).choices[0].delta.content for _ in range(2)] == ["a", "b"]
            with pytest.raises(StreamError, match="boom"):
                next(stream)


def test_closed_stream_yields_nothing_more() -> None:
    data = b"".join(sse(chunk("a"), chunk("b"), chunk("c")))
    with FaultServer(Reply(chunks=[data])) as server:
        with LlamaCppClient(server.url) as client:
            stream = chat(client, stream=True)
            next(stream)
            stream.close()
            assert list(stream) == []
            unused = chat(client, stream=True)
            unused.close()
            assert list(unused) == []


def test_typo_of_a_named_parameter_is_refused() -> None:
    with FaultServer(Reply(200, REPLY)) as server:
        with LlamaCppClient(server.url) as client:
            with pytest.raises(TypeError, match="did you mean 'max_tokens'"):
                client.chat_completion(messages=MESSAGES, max_token=64)
            with pytest.raises(TypeError, match="did you mean 'temperature'"):
                client.complete("x", temprature=0.1)
            client.chat_completion(messages=MESSAGES, max_completion_tokens=3, typical_p=0.5)
    assert len(server.requests) == 1
    assert server.requests[0].json()["max_completion_tokens"] == 3
