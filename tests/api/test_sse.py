"""The byte-level stream decoders: ``SSEDecoder`` (event-stream framing) and
``ChunkDecoder`` (JSON chunks, error events, end markers).

Network reads split a stream anywhere: inside a CRLF, inside a UTF-8 character, inside a
field name. Whatever the split, the decoders must produce the same events, and whatever the
bytes, they must raise nothing but the library's own errors.
"""

from __future__ import annotations

import json
import pickle
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from llamatelemetry.api import (
    APIConnectionError,
    APIResponseError,
    ChatCompletionChunk,
    Completion,
    LlamaTelemetryError,
    StreamError,
    StreamInterruptedError,
    _sse,
)
from llamatelemetry.api._sse import (
    DEFAULT_MAX_EVENT_BYTES,
    EventTooLargeError,
    ServerSentEvent,
    SSEDecoder,
)
from llamatelemetry.api._typed_streams import ChunkDecoder, StreamFormat
from llamatelemetry.api.resources.chat import CHAT_STREAM
from llamatelemetry.api.resources.completions import COMPLETION_STREAM, NATIVE_STREAM
from llamatelemetry.testing._fault_server import sse

SEEDS = range(300)
CHAT = CHAT_STREAM  # what the client uses: events read straight from bytes when they can be
NATIVE = NATIVE_STREAM
# The same chunk types through json.loads and model_validate only: the reference the fast
# path must match, chunk for chunk and error for error.
CHAT_PLAIN = StreamFormat(ChatCompletionChunk.model_validate)
COMPLETION_PLAIN = StreamFormat(Completion.model_validate)


# --- helpers ----------------------------------------------------------------------------


def events_of(pieces: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events


def random_split(data: bytes, rng: random.Random, *, empties: bool = True) -> list[bytes]:
    """``data`` in pieces of random sizes (mostly tiny, sometimes large, now and then empty)."""
    pieces: list[bytes] = []
    i = 0
    while i < len(data):
        if empties and rng.random() < 0.05:
            pieces.append(b"")
        size = rng.choice((1, 1, 2, 3, 4, rng.randint(1, 16), rng.randint(1, 256)))
        pieces.append(data[i : i + size])
        i += size
    return pieces


def splits(data: bytes) -> dict[str, list[bytes]]:
    """The ways a test feeds one stream: whole, byte by byte, and in random pieces."""
    ways = {"whole": [data], "bytewise": [data[i : i + 1] for i in range(len(data))]}
    for seed in SEEDS:
        ways[f"seed{seed}"] = random_split(data, random.Random(seed))
    return ways


def decode(
    format: StreamFormat[Any], pieces: Iterable[bytes], *, finish: bool = True
) -> tuple[list[Any], LlamaTelemetryError | None, ChunkDecoder[Any]]:
    """Feed ``pieces`` as a Stream does: the chunks delivered, then the error (if any).

    ``feed`` keeps an error event on the decoder (``error``) so that the chunks before it
    are delivered first; ``finish`` raises when the end marker never came.
    """
    decoder = ChunkDecoder(format)
    chunks: list[Any] = []
    try:
        for piece in pieces:
            chunks += decoder.feed(piece)
            if decoder.error is not None:
                raise decoder.error
        if finish:
            decoder.finish()
    except LlamaTelemetryError as exc:
        return chunks, exc, decoder
    return chunks, None, decoder


def chat_chunk(
    content: str | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "tiny",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def dumped(chunks: Sequence[Any]) -> list[dict[str, Any]]:
    return [c.model_dump() for c in chunks]


# --- SSEDecoder: fields and framing -----------------------------------------------------


def test_one_event_per_blank_line() -> None:
    assert events_of([b"data: a\n\ndata: b\n\n"]) == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_multi_line_data_joins_with_newlines() -> None:
    assert events_of([b"data: first\ndata: second\ndata:\ndata: fourth\n\n"]) == [
        ServerSentEvent("first\nsecond\n\nfourth")
    ]


def test_comments_and_pings_produce_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": ping\n\n") == []
    assert decoder.feed(b":\n: keep-alive 2024-01-01T00:00:00Z\n\n\n\n") == []
    assert not decoder.pending
    # a comment inside an event does not break it
    assert decoder.feed(b"data: a\n: ping\ndata: b\n\n") == [ServerSentEvent("a\nb")]


def test_event_id_and_retry_fields() -> None:
    events = events_of([b"event: update\nid: 42\nretry: 3000\ndata: x\n\ndata: y\n\n"])
    assert events == [
        ServerSentEvent("x", event="update", id="42", retry=3000),
        # the event type and retry belong to one event; the last event id persists
        ServerSentEvent("y", event=None, id="42", retry=None),
    ]


def test_field_value_spacing_and_odd_fields() -> None:
    events = events_of(
        [
            b"data:no-space\n\n"
            b"data:  two spaces keep one\n\n"
            b"data\n\n"  # a field name alone: empty value
            b"data: a: b: c\n\n"  # only the first colon separates
            b"unknown: ignored\ndata: z\n\n"
            b"retry: soon\nretry: -1\ndata: r\n\n"  # not ASCII digits: ignored
            b"id: a\x00b\ndata: nul\n\n"  # an id with NUL is ignored
        ]
    )
    assert [e.data for e in events] == [
        "no-space",
        " two spaces keep one",
        "",
        "a: b: c",
        "z",
        "r",
        "nul",
    ]
    assert events[5].retry is None
    assert events[6].id is None


def test_an_unterminated_event_is_held_back() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: partial") == []
    assert decoder.pending
    assert decoder.feed(b"\n") == []
    assert decoder.pending  # the data line is complete, the event is not
    assert decoder.feed(b"\n") == [ServerSentEvent("partial")]
    assert not decoder.pending
    assert decoder.feed(b"") == []


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(newline: bytes) -> None:
    data = (
        b"event: e"
        + newline
        + b"data: a"
        + newline
        + b"data: b"
        + newline
        + newline
        + b": ping"
        + newline
        + newline
        + b"data: c"
        + newline
        + newline
    )
    expected = [ServerSentEvent("a\nb", event="e"), ServerSentEvent("c")]
    for name, pieces in splits(data).items():
        assert events_of(pieces) == expected, name


def test_mixed_line_endings() -> None:
    data = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert events_of([data]) == [ServerSentEvent("a\nb\nc"), ServerSentEvent("d")]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"data: a\r", b"\ndata: b\r\n\r\n"],
        [b"data: a\r\n", b"data: b\r", b"\n\r", b"\n"],
        [b"data: a\r", b"", b"\n", b"data: b\r\n\r", b"", b"", b"\n"],
        [b"data: a\r", b"\n", b"data: b\r", b"\n", b"\r", b"\n"],
    ],
    ids=["after-first-line", "every-crlf-split", "with-empty-reads", "cr-and-lf-alone"],
)
def test_crlf_split_across_feeds_is_one_line_end(pieces: list[bytes]) -> None:
    # Read as two line ends, the split CRLF would end the event early: "a" and "b" apart.
    assert events_of(pieces) == [ServerSentEvent("a\nb")]


def test_cr_then_lf_in_separate_chunks_after_a_bare_cr() -> None:
    # "\r" "\r\n": a bare CR ends a line, then a CRLF ends the event.
    assert events_of([b"data: a\r", b"\r\n"]) == [ServerSentEvent("a")]
    # "\r\n" "\n": CRLF then LF: also a line and then the event.
    assert events_of([b"data: a\r\n", b"\n"]) == [ServerSentEvent("a")]


@pytest.mark.parametrize("text", ["é", "日本", "🦙", "a🦙b€c"])
def test_utf8_character_split_across_feeds(text: str) -> None:
    data = f"data: {text}\n\n".encode()
    for cut in range(len(data) + 1):
        assert events_of([data[:cut], data[cut:]]) == [ServerSentEvent(text)], cut
    assert events_of([data[i : i + 1] for i in range(len(data))]) == [ServerSentEvent(text)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert events_of([b"data: \xff\xfe ok \xc3\n\n"]) == [ServerSentEvent("\ufffd\ufffd ok \ufffd")]


RICH_STREAM = (
    b": ping\r\n"
    b"retry: 1500\n"
    b"id: 1\r"
    b"event: message\r\n"
    b"data: first line\n"
    b"data: second \xf0\x9f\xa6\x99 line \xe6\x97\xa5\r"
    b"\r\n"
    b":\n"
    b"data:no-space\r\n\r\n"
    b'event: error\rdata: {"error": "x"}\r\r'
    b"data\n\n"
    b"\n\n\r\n"
    b"id: 2\ndata: [DONE]\r\n\r\n"
    b"data: trailing, never terminated"
)
RICH_EVENTS = [
    ServerSentEvent("first line\nsecond 🦙 line 日", event="message", id="1", retry=1500),
    ServerSentEvent("no-space", id="1"),
    ServerSentEvent('{"error": "x"}', event="error", id="1"),
    ServerSentEvent("", id="1"),
    ServerSentEvent("[DONE]", id="2"),
]


def test_rich_stream_fed_whole() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(RICH_STREAM) == RICH_EVENTS
    assert decoder.pending


def test_rich_stream_identical_whatever_the_split() -> None:
    for name, pieces in splits(RICH_STREAM).items():
        assert events_of(pieces) == RICH_EVENTS, name


def test_rich_stream_every_two_way_split() -> None:
    for cut in range(len(RICH_STREAM) + 1):
        assert events_of([RICH_STREAM[:cut], RICH_STREAM[cut:]]) == RICH_EVENTS, cut


# --- SSEDecoder: long lines and the event size limit -----------------------------------

LIMIT = 100  # a small max_event_bytes, so that every split of a test stream can be tried


def line_of(prefix: bytes, size: int) -> bytes:
    """A line (without its end) of exactly ``size`` bytes: ``prefix`` and then x's."""
    return prefix + b"x" * (size - len(prefix))


def outcome(pieces: Iterable[bytes], limit: int | None = LIMIT) -> list[ServerSentEvent] | str:
    """The events, or "too large" when the decoder raised EventTooLargeError."""
    decoder = SSEDecoder(max_event_bytes=limit)
    events: list[ServerSentEvent] = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
    except EventTooLargeError:
        return "too large"
    return events


def test_a_line_split_over_many_reads_takes_linear_time() -> None:
    # A 32 MiB event in 64 KiB reads. Joining the held line with each read, as the decoder
    # once did, copies it once a read: 512 reads, 8 GiB copied, 4-10 s of CPU. Held as parts
    # and joined once, it takes about 0.1 s. The bound is generous (about 9x) and CPU time
    # is not inflated by other load; the best of three attempts absorbs a hiccup.
    piece = b"x" * (64 * 1024)
    reads = 512
    best = float("inf")
    for _ in range(3):
        decoder = SSEDecoder(max_event_bytes=None)
        started = time.process_time()
        events = decoder.feed(b'data: "')
        for _ in range(reads):
            events += decoder.feed(piece)
        events += decoder.feed(b'"\n\n')
        best = min(best, time.process_time() - started)
        assert len(events) == 1 and len(events[0].data) == reads * len(piece) + 2
        del events
        if best < 1.0:
            break
    assert best < 1.0, f"a 32 MiB event in 64 KiB reads took {best:.2f} s of CPU"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_a_single_long_line_at_the_limit_passes_one_byte_more_raises(newline: bytes) -> None:
    # counted: the raw bytes of the line, field name included, line end not; a BOM neither
    for size in (LIMIT, LIMIT + 1):
        line = line_of(b"data: ", size)
        data = (
            b"\xef\xbb\xbf"
            + b"data: before"
            + newline * 2
            + line
            + newline * 2
            + b"data: after"
            + newline * 2
        )
        expected = (
            "too large"
            if size > LIMIT
            else [
                ServerSentEvent("before"),
                ServerSentEvent(line[6:].decode()),
                ServerSentEvent("after"),
            ]
        )
        for name, pieces in splits(data).items():
            assert outcome(pieces) == expected, (size, name)


def test_many_data_lines_of_one_event_count_together() -> None:
    lines = [line_of(b"data: ", 20)] * 4 + [line_of(b"data:", 20)]  # 100 bytes
    at_limit = b"\n".join(lines) + b"\n\n"
    over = b"data\n" + at_limit  # one more data line, 4 bytes
    expected = [
        ServerSentEvent("\n".join(line.decode().partition(":")[2].lstrip(" ") for line in lines))
    ]
    for name, pieces in splits(at_limit).items():
        assert outcome(pieces) == expected, name
    for name, pieces in splits(over).items():
        assert outcome(pieces) == "too large", name
    # the line still arriving counts with the data lines already collected
    assert outcome([b"data: " + b"x" * 44 + b"\n", b":" + b"x" * 49]) == []
    assert outcome([b"data: " + b"x" * 44 + b"\n", b":" + b"x" * 50]) == "too large"


def test_one_read_carrying_a_whole_oversized_line() -> None:
    before = ServerSentEvent("first")
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    at_limit = line_of(b"data: ", LIMIT)
    assert decoder.feed(b"data: first\n\n" + at_limit + b"\n\n") == [
        before,
        ServerSentEvent(at_limit[6:].decode()),
    ]
    with pytest.raises(EventTooLargeError) as caught:
        decoder.feed(b"data: first\n\n" + line_of(b"data: ", LIMIT + 1) + b"\n\ndata: z\n\n")
    # the events the same read completed before the oversized one are not lost
    assert caught.value.events == [before]
    assert caught.value.limit == LIMIT
    assert not decoder.pending  # what it held is dropped
    # the same with the default limit, in one read
    with pytest.raises(EventTooLargeError):
        SSEDecoder().feed(line_of(b"data: ", DEFAULT_MAX_EVENT_BYTES + 1) + b"\n\n")


@pytest.mark.parametrize("read_size", [1, 7, 64, 1000])
def test_raises_as_soon_as_the_limit_is_passed(read_size: int) -> None:
    # An event that does not end: the decoder raises at the read that passes the limit, so
    # it never holds more than the limit (plus that one read).
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    decoder.feed(b"data: ")
    fed = 6
    with pytest.raises(EventTooLargeError):
        for _ in range(10 * LIMIT):  # bounded: a decoder that never raises fails, not hangs
            decoder.feed(b"x" * read_size)
            fed += read_size
    assert LIMIT - read_size < fed <= LIMIT
    # and data lines that never end their event
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    lines = 0
    with pytest.raises(EventTooLargeError):
        for _ in range(10 * LIMIT):
            decoder.feed(b"data: 123456789\n")
            lines += 1
    assert lines == LIMIT // len(b"data: 123456789")


def test_the_default_limit_is_32_mib_and_is_not_buffered_past() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 32 * 1024 * 1024
    assert {"DEFAULT_MAX_EVENT_BYTES", "EventTooLargeError"} <= set(_sse.__all__)
    piece = b"x" * (64 * 1024)
    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    reads = 0
    with pytest.raises(EventTooLargeError) as caught:
        for _ in range(1024):
            decoder.feed(piece)
            reads += 1
    # 32 MiB is 512 reads of 64 KiB; with the 6 bytes of "data: " the 512th passes it
    assert reads == 511
    message = str(caught.value)
    assert "single event larger than the limit of 33,554,432 bytes (32 MiB)" in message
    assert "max_event_bytes" in message
    assert "LlamaCppClient(..., max_event_bytes=64 * 1024 * 1024)" in message
    assert isinstance(caught.value, ValueError)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.limit) == (message, DEFAULT_MAX_EVENT_BYTES)


def test_the_count_restarts_with_each_event() -> None:
    one = line_of(b"data: ", LIMIT) + b"\n\n"
    two = line_of(b"data: ", LIMIT // 2) + b"\n" + line_of(b"data:", LIMIT // 2) + b"\n\n"
    data = (one + two + b": ping\n\n") * 50  # 10,000 bytes of events, each at the limit
    for name, pieces in list(splits(data).items())[:30]:
        events = outcome(pieces)
        assert isinstance(events, list) and len(events) == 100, name
    # other fields are not collected, so they do not add up (each line alone is bounded)
    fields = (line_of(b"event: ", LIMIT) + b"\n" + line_of(b"id: ", LIMIT) + b"\n") * 10
    assert outcome([fields + b"\n" + fields + b"data: x\n\n"]) == [
        ServerSentEvent(
            "x", event=line_of(b"", LIMIT - 7).decode(), id=line_of(b"", LIMIT - 4).decode()
        )
    ]


@pytest.mark.parametrize("prefix", [b":", b": ping ", b"event: ", b"id: ", b"retry: ", b"other: "])
def test_any_line_longer_than_the_limit_raises(prefix: bytes) -> None:
    # A comment (or any field) is held whole until its line end, like a data line, so one
    # longer than the limit raises too: what is bounded is the memory, not just the data.
    for size in (LIMIT, LIMIT + 1):
        data = line_of(prefix, size) + b"\ndata: z\n\n"
        for name, pieces in list(splits(data).items())[:50]:
            events = outcome(pieces)
            if size > LIMIT:
                assert events == "too large", name
            else:
                assert isinstance(events, list) and [e.data for e in events] == ["z"], name


def test_no_limit() -> None:
    line = line_of(b"data: ", 10 * LIMIT)
    assert outcome([line[:7], line[7:], b"\n\n"], limit=None) == [
        ServerSentEvent(line[6:].decode())
    ]
    assert outcome([line + b"\n\n"], limit=1) == "too large"
    assert outcome([b"data\n\n"], limit=4) == [ServerSentEvent("")]


@pytest.mark.parametrize("value", ["1024", 1024.0, True, False, b"1"])
def test_max_event_bytes_must_be_an_int_or_none(value: Any) -> None:
    with pytest.raises(TypeError, match="max_event_bytes must be a positive int"):
        SSEDecoder(max_event_bytes=value)


@pytest.mark.parametrize("value", [0, -1])
def test_max_event_bytes_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match=f"max_event_bytes must be a positive int.*not {value}"):
        SSEDecoder(max_event_bytes=value)


# --- ChunkDecoder -----------------------------------------------------------------------


CHAT_EVENTS = [
    chat_chunk("Hel"),
    chat_chunk("lo 🦙"),
    chat_chunk(finish="stop"),
    {
        **chat_chunk(),
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    },
]
CHAT_STREAM = b"".join(sse(*CHAT_EVENTS))


def test_done_ends_the_stream() -> None:
    decoder = ChunkDecoder(CHAT)
    late = b"data: " + json.dumps(chat_chunk("late")).encode() + b"\n\n"
    chunks = decoder.feed(CHAT_STREAM + late)
    assert [c.choices[0].delta.content for c in chunks] == ["Hel", "lo 🦙", None, None]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
    assert decoder.done
    assert decoder.feed(b"data: " + json.dumps(chat_chunk("later")).encode() + b"\n\n") == []
    decoder.finish()  # complete: no error


def test_chat_stream_identical_whatever_the_split() -> None:
    crlf = CHAT_STREAM.replace(b"\n", b"\r\n")
    pinged = b": ping\n\n" + CHAT_STREAM.replace(b"\n\n", b"\n\n: ping\n\n")
    expected = dumped(decode(CHAT, [CHAT_STREAM])[0])
    assert len(expected) == 4
    for data in (CHAT_STREAM, crlf, pinged):
        for name, pieces in splits(data).items():
            chunks, error, decoder = decode(CHAT, pieces)
            assert error is None, name
            assert decoder.done, name
            assert dumped(chunks) == expected, name


def test_finish_without_done_is_an_interrupted_stream() -> None:
    data = b"".join(sse(*CHAT_EVENTS[:2], done=False))
    for name, pieces in list(splits(data).items())[:20]:
        chunks, error, _ = decode(CHAT, pieces)
        assert len(chunks) == 2, name
        assert isinstance(error, StreamInterruptedError), name
        assert isinstance(error, APIConnectionError)
        assert "[DONE] never arrived" in str(error)


def test_finish_with_a_half_received_done_is_interrupted() -> None:
    decoder = ChunkDecoder(CHAT)
    decoder.feed(b"data: [DONE]")  # the blank line that ends the event never came
    with pytest.raises(StreamInterruptedError):
        decoder.finish()


def test_empty_data_events_are_skipped() -> None:
    chunks, error, _ = decode(
        CHAT, [b"data:\n\ndata\n\nevent: x\n\n" + b"".join(sse(chat_chunk("a")))]
    )
    assert error is None
    assert [c.choices[0].delta.content for c in chunks] == ["a"]


@pytest.mark.parametrize(
    ("payload", "code", "type_", "message"),
    [
        (
            {
                "error": {
                    "code": 500,
                    "message": "context shift is disabled",
                    "type": "server_error",
                }
            },
            500,
            "server_error",
            "context shift is disabled",
        ),
        ({"error": {"message": "no code, no type"}}, None, None, "no code, no type"),
        ({"error": "plain text error"}, None, None, "plain text error"),
        (
            {"error": {"code": "E42", "message": "code not an int", "type": 7}},
            None,
            None,
            "code not an int",
        ),
    ],
    ids=["full", "message-only", "string", "odd-types"],
)
def test_error_event_raises_stream_error(
    payload: dict[str, Any], code: int | None, type_: str | None, message: str
) -> None:
    data = b"".join(sse(chat_chunk("partial"), payload))
    for name, pieces in list(splits(data).items())[:50]:
        chunks, error, decoder = decode(CHAT, pieces)
        assert isinstance(error, StreamError), name
        assert (error.code, error.type, error.message) == (code, type_, message)
        assert error.body == payload
        assert decoder.done
        if len(pieces) > 1:  # the chunk before the error arrived in a read of its own
            assert [c.choices[0].delta.content for c in chunks] == ["partial"], name


def test_chunks_before_an_error_in_the_same_read_are_not_lost() -> None:
    data = b"".join(sse(chat_chunk("kept"), {"error": {"code": 500, "message": "boom"}}))
    chunks, error, _ = decode(CHAT, [data])
    assert isinstance(error, StreamError) and error.message == "boom"
    assert [c.choices[0].delta.content for c in chunks] == ["kept"]


def test_error_event_type_with_any_payload() -> None:
    _, error, _ = decode(CHAT, [b'event: error\ndata: {"message": "overloaded", "code": 503}\n\n'])
    assert isinstance(error, StreamError)
    assert (error.message, error.code) == ("overloaded", 503)


def test_non_json_and_wrong_shape_are_response_errors() -> None:
    _, error, _ = decode(CHAT, [b"data: {not json\n\n"])
    assert isinstance(error, APIResponseError) and "not JSON" in str(error)
    _, error, _ = decode(CHAT, [b'data: {"choices": "nope"}\n\n'])
    assert isinstance(error, APIResponseError) and "unexpected shape" in str(error)
    _, error, _ = decode(CHAT, [b"data: 5\n\n"])
    assert isinstance(error, APIResponseError)


NATIVE_EVENTS = [
    {"content": "Hel", "stop": False},
    {"content": "lo", "stop": False},
    {
        "content": "",
        "stop": True,
        "stop_type": "eos",
        "tokens_predicted": 2,
        "timings": {"predicted_n": 2},
    },
]


def test_native_stream_ends_at_stop_true() -> None:
    data = b"".join(sse(*NATIVE_EVENTS, {"content": "after the end", "stop": False}, done=False))
    for name, pieces in splits(data).items():
        chunks, error, decoder = decode(NATIVE, pieces)
        assert error is None, name
        assert decoder.done, name
        assert [c.content for c in chunks] == ["Hel", "lo", ""], name
        assert chunks[-1].finish_reason == "stop" and chunks[-1].tokens_predicted == 2


def test_native_stream_without_stop_is_interrupted() -> None:
    chunks, error, _ = decode(NATIVE, [b"".join(sse(*NATIVE_EVENTS[:2], done=False))])
    assert [c.content for c in chunks] == ["Hel", "lo"]
    assert isinstance(error, StreamInterruptedError)
    assert '"stop": true never arrived' in str(error)


def test_native_stream_done_marker_still_ends_it() -> None:
    # A proxy in front of the server may append [DONE]; it is not content either way.
    chunks, error, decoder = decode(NATIVE, [b"".join(sse(*NATIVE_EVENTS[:1]))])
    assert error is None and decoder.done
    assert [c.content for c in chunks] == ["Hel"]


# --- arbitrary bytes: only the library's own errors ---------------------------------------

# Fragments that make random input look like a stream often enough to reach the JSON,
# error-event and end-marker paths, not just the framing.
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
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-",
    b"0",
    b"9" * 5000,
    b'"error"',
    b'"stop"',
    b'"choices"',
    b'"delta"',
    b'"content"',
    b'{"error": {"code": 1}}',
    b'{"stop": true}',
    b'{"content": "x", "stop": false}',
    b"\xff",
    b"\xf0\x9f",
    b"\xa6\x99",
    b"\x00",
    "é".encode(),
    b"NaN",
    b"Infinity",
    # whole events, so that streams also end, fail and complete
    *sse(
        chat_chunk("x"),
        {"content": "x", "stop": False},
        {"content": "", "stop": True},
        {"error": {"code": 500, "message": "m"}},
    ),
]


def random_stream(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(rng.randint(0, 2000))
    parts = []
    for _ in range(rng.randint(0, 120)):
        if rng.random() < 0.2:
            parts.append(rng.randbytes(rng.randint(1, 8)))
        else:
            parts.append(rng.choice(FRAGMENTS))
    return b"".join(parts)


@pytest.mark.parametrize("format", [CHAT, NATIVE], ids=["chat", "native"])
def test_random_bytes_raise_only_library_errors(format: StreamFormat[Any]) -> None:
    outcomes: set[str] = set()
    for seed in range(1500):
        rng = random.Random(seed)
        data = random_stream(rng)
        try:
            chunks, error, _ = decode(format, random_split(data, rng))
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"seed {seed}: {type(exc).__name__}: {exc} from {data[:300]!r}")
        outcomes.add(type(error).__name__ if error else "complete" if chunks else "empty")
    # the fuzzing reached the interesting paths, not only the framing
    wanted = {"StreamError", "APIResponseError", "StreamInterruptedError", "complete"}
    assert wanted <= outcomes, outcomes


def decoded(format: StreamFormat[Any], pieces: list[bytes]) -> tuple[Any, ...]:
    chunks, error, decoder = decode(format, pieces)
    return (
        [(type(c).__name__, repr(c.model_dump())) for c in chunks],  # repr: nan == nan
        None if error is None else (type(error).__name__, str(error)),
        decoder.done,
    )


ODD_EVENTS = [
    pytest.param(b'{"choices": [{"delta": {"content": "\xff\xfe"}}]}', id="bad-utf8"),
    pytest.param(b'{"choices": [{"delta": {"content": "\\ud800"}}]}', id="lone-surrogate"),
    pytest.param(b'{"choices": [], "x": NaN}', id="nan"),
    pytest.param(b'{"choices": [], "x": 1e999}', id="huge-float"),
    pytest.param(b'{"choices": [], "created": "12"}', id="number-as-text"),
    pytest.param(b'{"choices": [], "id": 1, "id": "last"}', id="duplicate-key"),
    pytest.param(b'{"error": {"message": "m", "code": 500}}', id="error"),
    pytest.param(b'{"choices": [], "x": "\\"error\\""}', id="error-in-text"),
    pytest.param(b'{"choices": [], "x": "error"}', id="error-as-value"),
    pytest.param(b'{"choices": "nope"}', id="wrong-shape"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[" * 10_000, id="deep"),
    pytest.param(b"", id="empty"),
    pytest.param(b" [DONE]", id="done-with-space"),
]
# Lines that may sit in an event beside its data: each sends it the long way.
ODD_LINES = [b"event: error", b"event: message", b"id: 7", b"retry: 10", b": ping", b"data:x"]


def framed_stream(rng: random.Random) -> list[bytes]:
    """Reads of whole events, as llama-server sends them (the fast path's ground), now and
    then with another field in an event, a comment, a CR, or an event split over reads."""
    first = sse(chat_chunk("first"))[0]  # the first read is never taken the fast way
    events = []
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        if roll < 0.5:
            payload = json.dumps(chat_chunk(rng.choice(["a", "é", "🦙", "", None]))).encode()
        elif roll < 0.85:
            payload = rng.choice(ODD_EVENTS).values[0]
        else:
            payload = b"[DONE]"
        event = b"data: " + payload
        if rng.random() < 0.15:
            lines = [event, rng.choice(ODD_LINES)]
            rng.shuffle(lines)
            event = b"\n".join(lines)
        events.append(event + (b"\r\n\r\n" if rng.random() < 0.05 else b"\n\n"))
    reads, i = [first], 0
    while i < len(events):
        n = rng.randint(1, 3)
        reads.append(b"".join(events[i : i + n]))
        i += n
    if rng.random() < 0.2:  # an event split over two reads
        data = b"".join(reads[1:])
        cut = rng.randint(0, len(data))
        reads[1:] = [data[:cut], data[cut:]]
    return reads


def test_chunks_read_straight_from_bytes_match_json_loads_then_validate() -> None:
    """The fast path (pydantic's JSON parser on the event's bytes) gives what json.loads and
    model_validate give: the same chunks, the same errors and messages, the same end."""
    paths: set[str] = set()
    for seed in range(3000):
        rng = random.Random(seed)
        if seed % 3:
            pieces = framed_stream(rng)
        else:
            data = random_stream(rng)
            pieces = random_split(data, rng) if seed % 2 else [data]
        expected = decoded(CHAT_PLAIN, pieces)
        assert decoded(CHAT, pieces) == expected, (seed, pieces)
        assert decoded(COMPLETION_STREAM, pieces) == decoded(COMPLETION_PLAIN, pieces), seed
        paths.add(expected[1][0] if expected[1] else "complete" if expected[0] else "empty")
    assert {"StreamError", "APIResponseError", "complete", "empty"} <= paths, paths


@pytest.mark.parametrize("event", ODD_EVENTS)
def test_odd_events_read_straight_from_bytes_as_through_json_loads(event: bytes) -> None:
    first = sse(chat_chunk("first"))[0]
    data = b"data: " + event + b"\n\n"
    for pieces in ([first, data], [first, data + b"".join(sse())], [first + data]):
        assert decoded(CHAT, pieces) == decoded(CHAT_PLAIN, pieces), pieces


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"retry: \xc2\xb2\n", id="superscript-two"),  # "²".isdigit() is True
        pytest.param(b"retry: \xd9\xa3\n", id="arabic-indic-three"),  # int("٣") == 3
        pytest.param(b"retry: 1.5\n", id="decimal"),
        pytest.param(b"retry: \n", id="empty"),
    ],
)
def test_retry_accepts_ascii_digits_only(data: bytes) -> None:
    assert events_of([data + b"data: x\n\n"]) == [ServerSentEvent("x")]


def test_deeply_nested_json_is_a_response_error() -> None:
    _, error, _ = decode(CHAT, [b"data: " + b"[" * 100_000 + b"\n\n"])
    assert isinstance(error, APIResponseError)
