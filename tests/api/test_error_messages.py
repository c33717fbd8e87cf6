"""The message an error answer becomes: the server's own, or, where it sent none (an empty
or null message in whatever shape), what the status says; never a JSON dump of nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from llamatelemetry.api import APIStatusError, BadRequestError, LlamaCppClient
from llamatelemetry.api._answer_parsing import answer_error
from llamatelemetry.testing._fault_server import FaultServer, Reply

LLAMA_EMPTY = {"error": {"code": 400, "message": "", "type": "invalid_request_error"}}


def error_of(status: int, body: bytes) -> APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(
        status, headers={"content-type": "application/json"}, content=body, request=request
    )
    return answer_error(response, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, LLAMA_EMPTY),  # llama.cpp's own shape, its message empty
        (400, {"error": {"code": 400, "message": None, "type": "invalid_request_error"}}),
        (400, {"error": {"code": 400, "detail": "", "type": "invalid_request_error"}}),
        (400, {"error": {"message": "   ", "detail": None}}),
        (400, {"error": None}),
        (400, {"error": ""}),
        (400, {"error": {}}),
        (422, {"detail": ""}),
        (422, {"detail": None}),
        (500, {"error": None}),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_an_error_answer_with_no_message_says_what_the_status_says(
    status: int, body: dict[str, object]
) -> None:
    error = error_of(status, json.dumps(body).encode())
    reason = httpx.codes.get_reason_phrase(status)
    assert error.message == f"the server sent no error message ({status} {reason})"
    assert error.status_code == status and error.body == body


def test_llama_cpps_empty_message_keeps_its_type() -> None:
    error = error_of(400, json.dumps(LLAMA_EMPTY).encode())
    assert isinstance(error, BadRequestError)
    assert error.type == "invalid_request_error"
    assert error.message == "the server sent no error message (400 Bad Request)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"code": 400, "message": "bad n_probs", "type": "x"}}, "bad n_probs"),
        ({"error": {"message": "", "detail": "from detail"}}, "from detail"),
        ({"detail": "FastAPI says no"}, "FastAPI says no"),
        ({"error": "plain words"}, "plain words"),
        # an error object with neither key: what it holds is the only message there is
        ({"error": {"code": 400, "reason": "too long"}}, '{"code": 400, "reason": "too long"}'),
    ],
)
def test_an_error_answer_with_a_message_keeps_it(body: dict[str, object], message: str) -> None:
    assert error_of(400, json.dumps(body).encode()).message == message


def test_the_client_raises_it_with_the_status_message() -> None:
    with (
        FaultServer(Reply(400, LLAMA_EMPTY)) as server,
        LlamaCppClient(server.url, max_retries=0) as client,
        pytest.raises(BadRequestError) as raised,
    ):
        client.chat.completions.create([{"role": "user", "content": "Hi"}], max_tokens=1)
    assert raised.value.message == "the server sent no error message (400 Bad Request)"
    assert str(raised.value).startswith("400")
