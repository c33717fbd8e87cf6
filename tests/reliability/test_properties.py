"""Property tests (hypothesis) for the byte- and JSON-level parsing of every answer.

- SSE framing: any split of a valid event stream gives the same events as the whole;
- chunk streams: any split of a valid chat/native stream gives the same typed chunks,
  through the real ``Stream`` (``httpx.Response`` fed piece by piece);
- arbitrary bytes into a stream: only the library's own errors, and a stream that returns
  normally really saw its end marker;
- arbitrary JSON (``st.recursive``) and arbitrary bytes as the body of every endpoint's
  answer, through ``BaseClient._parse``: a value or an ``APIResponseError``, nothing else;
- arbitrary error answers through ``_status_error``: always the status's error class.

tests/api/test_sse.py covers the same ground with seeded ``random``; here hypothesis searches
and shrinks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llamatelemetry.api import (
    APIResponseError,
    APIStatusError,
    LlamaCppClient,
    LlamaTelemetryError,
    Stream,
)
from llamatelemetry.api._api_errors import _BY_STATUS, InternalServerError
from llamatelemetry.api._attempts import retry_delay
from llamatelemetry.api._calls_and_callers import Call
from llamatelemetry.api._sse import ServerSentEvent, SSEDecoder
from llamatelemetry.api.resources.chat import CHAT_STREAM
from llamatelemetry.api.resources.completions import COMPLETION_STREAM, NATIVE_STREAM

from ._support import MESSAGES, tally

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = {"chat": CHAT_STREAM, "completion": COMPLETION_STREAM, "native": NATIVE_STREAM}


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({min(p, len(data)) for p in points})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])  # empty pieces too: reads can return nothing
        start = cut
    pieces.append(data[start:])
    return pieces


def events_of(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


# --- SSE framing -------------------------------------------------------------------------

field_text = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20
)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A valid event stream (one line-ending style, optional BOM, comments, event names,
    ids, retries, multi-line data) and the events it must decode to."""
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            lines.append(":" + draw(field_text))  # a comment / ping
        name = draw(st.none() | field_text.filter(lambda t: t != ""))
        if name is not None:
            lines.append(f"event: {name}")
        if draw(st.booleans()):
            last_id = draw(field_text)
            lines.append(f"id: {last_id}")
        retry = draw(st.none() | st.integers(0, 10**6))
        if retry is not None:
            lines.append(f"retry: {retry}")
        data_lines = draw(st.lists(field_text, min_size=1, max_size=3))
        lines += [f"data: {line}" for line in data_lines]
        lines.append("")  # the blank line that dispatches
        expected.append(ServerSentEvent("\n".join(data_lines), name, last_id, retry))
    body = newline.join(line.encode() for line in lines) + (newline if lines else b"")
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body, expected


@SETTINGS
@given(event_streams(), st.lists(st.integers(0, 4000), max_size=40))
def test_sse_any_split_gives_the_same_events(
    stream: tuple[bytes, list[ServerSentEvent]], points: list[int]
) -> None:
    body, expected = stream
    assert events_of([body]) == expected
    assert events_of(split_at(body, points)) == expected
    assert events_of([body[i : i + 1] for i in range(len(body))]) == expected
    tally(property_examples=1)


# --- chunk streams through the real Stream ----------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**1000), 2**1000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
KEYS = [
    "choices",
    "message",
    "delta",
    "content",
    "role",
    "index",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "timings",
    "predicted_n",
    "prompt_ms",
    "data",
    "embedding",
    "results",
    "relevance_score",
    "score",
    "tokens",
    "prompt",
    "status",
    "error",
    "message",
    "code",
    "type",
    "stop",
    "id",
    "model",
    "text",
    "object",
    "id_slot",
    "path",
    "scale",
    "is_processing",
    "state",
    "piece",
    "tool_calls",
]
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def chat_chunks(finish: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    piece = st.builds(
        lambda content, reason: {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": reason}],
        },
        texts,
        st.none() | st.sampled_from(["stop", "length"]) if finish else st.none(),
    )
    return st.lists(piece, max_size=8)


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[str, bytes, list[dict[str, Any]]]:
    """(format, bytes, the chunk objects) of a complete stream of that format."""
    kind = draw(st.sampled_from(sorted(FORMATS)))
    sep = draw(st.sampled_from(["\n\n", "\r\n\r\n"]))
    if kind == "chat":
        chunks = draw(chat_chunks(finish=True))
    elif kind == "completion":
        chunks = [{"choices": [{"index": 0, "text": t}]} for t in draw(st.lists(texts, max_size=8))]
    else:
        chunks = [{"content": t, "stop": False} for t in draw(st.lists(texts, max_size=8))]
        chunks.append({"content": "", "stop": True, "tokens_predicted": len(chunks)})
    events = [f"data: {json.dumps(c, ensure_ascii=draw(st.booleans()))}{sep}" for c in chunks]
    if kind != "native" or draw(st.booleans()):
        events.append(f"data: [DONE]{sep}")
    if draw(st.booleans()):
        events.insert(draw(st.integers(0, len(events))), f": ping{sep}")
    return kind, "".join(events).encode(), chunks


def response_of(pieces: list[bytes]) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(pieces), request=request
    )


def read_stream(kind: str, pieces: list[bytes]) -> tuple[list[Any], BaseException | None, bool]:
    """(chunks, error, complete) of a Stream over ``pieces``; only our errors are caught."""
    stream: Stream[Any] = Stream(response_of(pieces), FORMATS[kind])
    chunks: list[Any] = []
    try:
        for item in stream:
            chunks.append(item)
    except LlamaTelemetryError as exc:
        assert stream.closed
        return chunks, exc, False
    assert stream.closed
    return chunks, None, stream._state.complete


@SETTINGS
@given(valid_streams(), st.lists(st.integers(0, 3000), max_size=30))
def test_any_split_of_a_valid_stream_gives_the_same_chunks(
    stream: tuple[str, bytes, list[dict[str, Any]]], points: list[int]
) -> None:
    kind, body, objects = stream
    whole, error, complete = read_stream(kind, [body])
    assert error is None and complete
    assert [c.model_dump(exclude_unset=True) for c in whole] == [
        FORMATS[kind].parse(o).model_dump(exclude_unset=True) for o in objects
    ]
    split, error, complete = read_stream(kind, split_at(body, points))
    assert error is None and complete
    assert [c.model_dump() for c in split] == [c.model_dump() for c in whole]
    tally(property_examples=1)


FRAGMENTS = [
    b"data: ",
    b"data:",
    b"event: error\n",
    b"id: 1\n",
    b": ping\n",
    b"\n",
    b"\n\n",
    b"\r",
    b"\r\n",
    b"[DONE]",
    b"data: [DONE]\n\n",
    b'{"stop": true}',
    b'{"error": {"code": 500, "message": "m"}}',
    b'{"choices": []}',
    b"\xff",
    b"\xef\xbb",
]


@SETTINGS
@given(
    st.sampled_from(sorted(FORMATS)),
    st.lists(
        st.binary(max_size=64)
        | st.sampled_from(FRAGMENTS)
        | json_values.map(lambda v: json.dumps(v).encode()),
        max_size=25,
    ),
    st.lists(st.integers(0, 2000), max_size=20),
)
def test_arbitrary_bytes_in_a_stream_raise_only_our_errors(
    kind: str, parts: list[bytes], points: list[int]
) -> None:
    body = b"".join(parts)
    try:
        chunks, error, complete = read_stream(kind, split_at(body, points))
    except Exception as exc:  # noqa: BLE001 - the property: nothing else escapes
        pytest.fail(f"{type(exc).__name__}: {exc} from {body[:300]!r}")
    if error is None:
        # returned normally: the end marker really arrived (never a silent truncation)
        assert complete
    tally(property_examples=1)


@SETTINGS
@given(st.binary(max_size=512), st.lists(st.integers(0, 600), max_size=10))
def test_raw_binary_in_a_stream_raises_only_our_errors(body: bytes, points: list[int]) -> None:
    for kind in FORMATS:
        _, error, complete = read_stream(kind, split_at(body, points))
        assert error is not None or complete
    tally(property_examples=1)


# --- every endpoint's answer, through BaseClient._parse ---------------------------------


class _Captured(Exception):
    def __init__(self, call: Call[Any]) -> None:
        self.call = call


class _Recorder(LlamaCppClient):
    """Builds the Call a public method would send, and sends nothing."""

    def execute_call(self, call: Call[Any]) -> Any:
        raise _Captured(call)


ENDPOINTS: dict[str, Callable[[LlamaCppClient], Any]] = {
    "chat": lambda c: c.chat.completions.create(messages=MESSAGES),
    "chat_completion": lambda c: c.chat_completion(messages=MESSAGES),
    "completions": lambda c: c.completions.create("x"),
    "complete": lambda c: c.complete("x"),
    "infill": lambda c: c.infill("a", "b"),
    "embeddings.create": lambda c: c.embeddings.create("x"),
    "embed-one": lambda c: c.embed("x"),
    "embed-many": lambda c: c.embed(["a", "b"]),
    "tokenize": lambda c: c.tokenize("x"),
    "tokenize-pieces": lambda c: c.tokenize("x", with_pieces=True),
    "detokenize": lambda c: c.detokenize([1, 2]),
    "apply_template": lambda c: c.apply_template(MESSAGES),
    "rerank": lambda c: c.rerank("q", ["a", "b", "c"]),
    "rerank-top-documents": lambda c: c.rerank("q", ["a", "b"], 1, return_documents=True),
    "models.list": lambda c: c.models.list(),
    "props.get": lambda c: c.props.get(),
    "slots.list": lambda c: c.slots.list(),
    "slots.save": lambda c: c.slots.save(0, "f.bin"),
    "slots.erase": lambda c: c.slots.erase(0),
    "lora.list": lambda c: c.lora.list(),
    "lora.apply": lambda c: c.lora.apply("/a.gguf"),  # a flow: its first call
    "lora.set_scales": lambda c: c.lora.set_scales({0: 0.5}),
    "health.check": lambda c: c.health.check(),
    "health.wait_until_ready": lambda c: c.health.wait_until_ready(1),
    "metrics.get": lambda c: c.metrics.get(),
    "metrics.parse": lambda c: c.metrics.parse(),
    "metrics.values": lambda c: c.metrics.values(),
}


def _calls() -> dict[str, Call[Any]]:
    calls: dict[str, Call[Any]] = {}
    with _Recorder("http://127.0.0.1:9", max_retries=0) as recorder:
        for name, make in ENDPOINTS.items():
            with pytest.raises(_Captured) as info:
                make(recorder)
            calls[name] = info.value.call
    return calls


CALLS = _calls()
VALID: dict[str, Any] = {
    "chat": {"choices": [{"message": {"content": "x"}}]},
    "completions": {"choices": [{"text": "x"}]},
    "complete": {"content": "x", "stop": True},
    "embeddings.create": {"data": [{"index": 0, "embedding": [0.5]}]},
    "tokenize": {"tokens": [1]},
    "detokenize": {"content": "x"},
    "apply_template": {"prompt": "x"},
    "rerank": {"results": [{"index": 0, "relevance_score": 0.5}]},
    "models.list": {"data": [{"id": "m"}]},
    "slots.list": [{"id": 0, "is_processing": False}],
    "lora.list": [{"id": 0, "path": "/a.gguf", "scale": 1.0}],
    "health.check": {"status": "ok"},
    "metrics.get": "llamacpp:x 1\n",
}
TEMPLATE = {  # endpoints that answer like another one
    "chat_completion": "chat",
    "infill": "complete",
    "embed-one": "embeddings.create",
    "embed-many": "embeddings.create",
    "tokenize-pieces": "tokenize",
    "rerank-top-documents": "rerank",
    "props.get": "health.check",
    "slots.save": "health.check",
    "slots.erase": "health.check",
    "lora.apply": "lora.list",
    "lora.set_scales": "lora.list",
    "health.wait_until_ready": "health.check",
    "metrics.parse": "metrics.get",
    "metrics.values": "metrics.get",
}


def parse(
    call: Call[Any], body: bytes, *, status: int = 200, content_type: str = "application/json"
) -> Any:
    request = httpx.Request(call.method, "http://127.0.0.1:9" + call.path)
    response = httpx.Response(
        status, headers={"content-type": content_type}, content=body, request=request
    )
    client = _Recorder.__new__(_Recorder)  # _parse does no I/O and reads no configuration
    return client._parse(call, response, body)


def only_values_or_response_errors(name: str, body: bytes) -> None:
    call = CALLS[name]
    try:
        parse(call, body)
    except APIResponseError as exc:
        assert exc.status_code == 200
        assert exc.method == call.method and exc.url.endswith(call.path.split("?")[0])
        str(exc), repr(exc)  # noqa: B018 - printable
    except Exception as exc:  # noqa: BLE001 - the property
        pytest.fail(f"{name}: {type(exc).__name__}: {exc} from {body[:300]!r}")


def mutations(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with one of its nodes replaced by arbitrary JSON: near-valid answers reach
    the parsers' inner checks, not only the first isinstance."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, (*path, i))

    walk(value, ())

    def replace(path: tuple[Any, ...], new: Any) -> Any:
        if not path:
            return new
        copy = json.loads(json.dumps(value))
        node = copy
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = new
        return copy

    return st.builds(replace, st.sampled_from(paths), json_values)


@SETTINGS
@given(st.sampled_from(sorted(CALLS)), json_values)
def test_arbitrary_json_answers_give_a_value_or_a_response_error(name: str, value: Any) -> None:
    only_values_or_response_errors(name, json.dumps(value).encode())
    tally(property_examples=1)


@SETTINGS
@given(st.sampled_from(sorted(CALLS)), st.data())
def test_near_valid_answers_give_a_value_or_a_response_error(
    name: str, data: st.DataObject
) -> None:
    value = data.draw(mutations(VALID[TEMPLATE.get(name, name)]))
    only_values_or_response_errors(name, json.dumps(value).encode())
    tally(property_examples=1)


@SETTINGS
@given(st.sampled_from(sorted(CALLS)), st.binary(max_size=300))
@example("chat", b'{"choices": [' * 5000)
@example("health.check", b"[" * 100_000)
def test_arbitrary_bytes_answers_give_a_value_or_a_response_error(name: str, body: bytes) -> None:
    only_values_or_response_errors(name, body)
    tally(property_examples=1)


@SETTINGS
@given(
    st.sampled_from(["metrics.get", "metrics.parse", "metrics.values"]),
    st.text(max_size=300)
    | st.lists(
        st.sampled_from(
            [
                "# HELP llamacpp:x help\n",
                "# TYPE llamacpp:x counter\n",
                "llamacpp:x 1\n",
                'llamacpp:y{a="b"} 2.5\n',
                "llamacpp:z NaN\n",
                "x{",
                "}",
                " ",
                "\n",
                "# EOF\n",
                "1e999",
                "-",
                '"',
                "\\",
            ]
        ),
        max_size=20,
    ).map("".join),
)
def test_arbitrary_prometheus_text_gives_a_value_or_a_response_error(name: str, text: str) -> None:
    only_values_or_response_errors(name, text.encode())
    tally(property_examples=1)


def test_every_public_call_is_in_the_table() -> None:
    assert {c.path.split("?")[0] for c in CALLS.values()} >= {
        "/v1/chat/completions",
        "/v1/completions",
        "/completion",
        "/infill",
        "/v1/embeddings",
        "/tokenize",
        "/detokenize",
        "/apply-template",
        "/v1/rerank",
        "/v1/models",
        "/props",
        "/slots",
        "/slots/0",
        "/lora-adapters",
        "/health",
        "/metrics",
    }


def test_rerank_score_too_large_for_a_float_is_a_response_error() -> None:
    body = b'{"results": [{"index": 0, "relevance_score": 1' + b"0" * 400 + b"}]}"
    with pytest.raises(APIResponseError):
        parse(CALLS["rerank"], body)


# --- error answers -----------------------------------------------------------------------

header_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=40
)


@SETTINGS
@given(
    st.integers(400, 599),
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(lambda t: f"<html><head><title>{t}</title></head></html>".encode(), texts),
    st.sampled_from(["application/json", "text/html; charset=utf-8", "text/plain", ""]),
    st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms"]),
        header_values
        | st.sampled_from(
            [
                "0",
                "1.5",
                "-3",
                "nan",
                "inf",
                "1e400",
                "Wed, 21 Oct 2015 07:28:00 GMT",
                "Fri, 31 Dec 9999 23:59:59 GMT",
            ]
        ),
    ),
)
@example(400, b'{"error":""}', "application/json", {})  # found by a fresh clone's CI run
@example(400, b'{"error":{"message":"","type":""}}', "application/json", {})
@example(500, b'{"error":"   "}', "application/json", {})
@example(422, b'{"detail":""}', "application/json", {})
@example(499, b"", "", {})  # a status with no reason phrase and no body
@example(502, b"<html><title></title></html>", "text/html", {})
@example(400, b'{"error":{"code":400,"message":"","type":"invalid_request_error"}}',
         "application/json", {})  # llama.cpp's own shape, its message empty  # fmt: skip
@example(400, b'{"error":{"code":400,"message":null,"type":"invalid_request_error"}}',
         "application/json", {})  # fmt: skip
@example(500, b'{"error":null}', "application/json", {})
@example(400, b'{"error":{}}', "application/json", {})
def test_any_error_answer_maps_to_its_status_error(
    status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    raw = [(b"content-type", content_type.encode())]
    raw += [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]  # bytes on the wire
    response = httpx.Response(status, headers=raw, content=body, request=request)
    client = _Recorder.__new__(_Recorder)
    try:
        error = client._status_error(response, body)
    except Exception as exc:  # noqa: BLE001 - the property
        pytest.fail(f"{type(exc).__name__}: {exc} for {status} {headers} {body[:200]!r}")
    expected = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    assert type(error) is expected
    assert error.status_code == status
    assert isinstance(error.message, str) and error.message.strip()  # always says something
    assert str(error).startswith(str(status))
    assert error.retry_after is None or isinstance(error.retry_after, float)
    delay = retry_delay(error, 0)  # a retry decision is always possible, and bounded
    assert delay is None or 0 <= delay <= 60
    if "<html" in body.decode("utf-8", "replace").lower()[:20] and not body.startswith(b"{"):
        assert "<html" not in error.message.lower()
    tally(property_examples=1)


# --- the profile ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "derandomized"),
    [({"CI": "1"}, True), ({"CI": ""}, False), ({"CI": "1", "HYPOTHESIS_PROFILE": "dev"}, False)],
)
def test_ci_runs_the_same_examples_every_time(env: dict[str, str], derandomized: bool) -> None:
    """CI can never fail on luck: with ``CI`` set, every property test draws the same
    examples (and keeps no example database between runs); locally they are new each run.
    Neither has a deadline: a busy machine must not fail an example by its speed."""
    probe = (
        "import tests.conftest\n"
        "from hypothesis import settings\n"
        "print(settings.default.derandomize, settings.default.database is None,"
        " settings.default.deadline)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**environ, **env},
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == [str(derandomized), str(derandomized), "None"]
