"""What one request of each endpoint a workload may load sends, and what it reads back
into its `RequestRecord`: chat completions, text completions, the Responses and Messages
APIs (each streamed or not: streamed, every chunk with text is a token's time), and
embeddings and reranking (one answer each: their figures are the requests' latency and
the input tokens the server read).

Each request is handed its `WireTimes`, filled in by the client's network layer while it
runs: a token is timed when its bytes came, not when it was parsed. The same `Endpoint`
serves the async client (the load generator) and the blocking one (Locust's users).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from ..api import (
    APITimeoutError,
    AsyncLlamaCppClient,
    ChatCompletionChunk,
    Completion,
    LlamaCppClient,
    MessageStreamEvent,
    ResponseStreamEvent,
)
from ..api._internal import Call, WireTimes
from ._prompts import Item, Prompt, messages_of
from ._records import EMPTY_ANSWER, RequestRecord

__all__ = [
    "DEFAULT_DOCUMENTS", "ENDPOINTS", "GENERATING", "Endpoint", "Request", "Tokens",
    "chat_chunk", "endpoint_of", "finish", "request_of", "send", "send_sync",
]  # fmt: skip

#: The endpoints a workload may load.
ENDPOINTS = ("chat", "completions", "responses", "messages", "embeddings", "rerank")
#: Those that generate tokens (TTFT, TPOT and ITL mean something for them).
GENERATING = ("chat", "completions", "responses", "messages")
#: The documents a rerank query is ranked against unless told otherwise.
DEFAULT_DOCUMENTS = 8


@dataclass(slots=True)
class Request:
    """One request's content and settings: its messages (the session's history first),
    its output length, and the workload's sampling settings."""

    messages: Sequence[Mapping[str, Any]]
    max_tokens: int
    _: KW_ONLY
    stream: bool
    temperature: float | None
    seed: int | None
    ignore_eos: bool
    documents: int

    @property
    def text(self) -> str:
        """The messages as one text (a completion's prompt, an embedding's input)."""
        return "\n".join(str(m.get("content") or "") for m in self.messages)

    def chat_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            # the client's own sampling defaults off: the server's apply
            "top_p": None,
            "top_k": None,
            "frequency_penalty": None,
            "presence_penalty": None,
        }
        if self.ignore_eos:
            options["ignore_eos"] = True
        return options

    def extra_body(self) -> dict[str, Any]:
        """llama.cpp's own fields, for the APIs whose methods do not name them."""
        extra: dict[str, Any] = {} if self.seed is None else {"seed": self.seed}
        if self.ignore_eos:
            extra["ignore_eos"] = True
        return extra


def request_of(
    item: Item, history: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
) -> Request:
    """The request for ``item`` after ``history`` with a workload's settings
    (``options``: max_tokens, stream, temperature, seed, ignore_eos, documents)."""
    messages = [*history, *messages_of(item)] if history else messages_of(item)
    max_tokens = options["max_tokens"]
    if isinstance(item, Prompt) and item.max_tokens is not None:
        max_tokens = item.max_tokens  # this request's own output length
    return Request(
        messages, max_tokens, stream=options["stream"], temperature=options["temperature"],
        seed=options["seed"], ignore_eos=options["ignore_eos"], documents=options["documents"],
    )  # fmt: skip


class Tokens:
    """A stream's tokens as they come: each chunk with text timed by its bytes' arrival."""

    __slots__ = ("answer", "chunks", "last", "produced", "record", "started", "wire")

    def __init__(self, record: RequestRecord, wire: WireTimes, answer: list[str] | None) -> None:
        self.record, self.wire, self.answer = record, wire, answer
        self.started = time.perf_counter()
        self.last = 0.0
        self.chunks = 0
        self.produced = False

    def token(self, text: str | None, answer_text: bool = True) -> None:
        """A chunk with generated text, timed by its bytes' arrival; ``answer_text``: the
        answer's own (else reasoning, a token all the same, not the answer's text)."""
        if not text:
            return
        if answer_text and self.answer is not None:
            self.answer.append(text)
        wire = self.wire
        now = wire.received or time.perf_counter()
        if wire.lag is not None:  # timed by the kernel's stamp: note how late it was read
            most = self.record.read_lag
            self.record.read_lag = wire.lag if most is None or wire.lag > most else most
        if self.record.ttft is None:
            self.record.ttft = now - (self.wire.sent or self.started)
        else:
            self.record.itl.append(now - self.last)
        self.last = now
        self.chunks += 1
        self.produced = True

    def end(self) -> None:
        record = self.record
        if not record.output_tokens:
            record.output_tokens = self.chunks
        if not self.produced:
            empty_answer(record, f"the stream ({record.chunks} chunks)")


def empty_answer(record: RequestRecord, what: str, counted: bool = True) -> None:
    """Count the request an `EMPTY_ANSWER`, unless (``counted``) the server says it
    generated tokens: a token it held back (an incomplete UTF-8 byte, say) is one too."""
    if counted and (record.output_tokens or record.server_output_tokens):
        return
    record.error_type = EMPTY_ANSWER
    record.error = f"no output token: {what} held no text, reasoning or tool call"


def _usage(record: RequestRecord, usage: Any) -> None:
    """An OpenAI-style ``usage``'s counts."""
    if usage is None:
        return
    record.prompt_tokens = usage.prompt_tokens
    record.output_tokens = usage.completion_tokens
    details = usage.prompt_tokens_details
    record.cached_tokens = details.cached_tokens if details else None


def _seen(record: RequestRecord, model: str | None, answer_id: str | None) -> None:
    if model:
        record.model = model
    if answer_id and record.response_id is None:
        record.response_id = answer_id


def chat_chunk(tokens: Tokens, chunk: ChatCompletionChunk) -> None:
    """One chunk of a streamed chat answer, into its request's record."""
    record = tokens.record
    record.chunks += 1
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta.content or delta.reasoning_content:
            tokens.token(delta.content or delta.reasoning_content,
                         answer_text=bool(delta.content))  # fmt: skip
        elif delta.tool_calls:
            tokens.produced = True
    _usage(record, chunk.usage)
    record.add_server(chunk.timings)
    _seen(record, chunk.model, chunk.id)


def finish(record: RequestRecord, wire: WireTimes, begun: float, failure: BaseException | None,
           total_timeout: float | None) -> None:  # fmt: skip
    """Close a request's record: its failure (``failure``: what it raised), when it left
    and how long it took by the socket's times (a failure from the generator's start on
    it, as its timeout is counted)."""
    if failure is not None:
        record.error_type = type(failure).__name__
        record.error = str(failure) or type(failure).__name__
        if isinstance(failure, APITimeoutError) and total_timeout is not None:
            record.error = f"no whole answer within the {total_timeout:g} s timeout: {failure}"
    if wire.sent is not None:
        record.send_delay = wire.sent - begun
    if record.ok and wire.sent is not None and wire.received is not None:
        record.started += record.send_delay  # when it left, not when the generator began
        record.latency = wire.received - wire.sent
    else:
        record.latency = time.perf_counter() - begun


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a request of one endpoint calls, and how its answer is read.

    ``call(client, request, record)`` calls the client's method: with `LlamaCppClient`
    its result, with `AsyncLlamaCppClient` what to await for it (the two clients' methods
    take the same arguments, so one function serves both). A streamed result's events go
    to ``event`` one by one; a whole answer to ``answer``. `send` and `send_sync` drive
    them, the one for the load generator, the other for Locust's users."""

    name: str
    call: Callable[[Any, Request, RequestRecord], Any]
    answer: Callable[[RequestRecord, Any, Request, list[str] | None], None]
    event: Callable[[Tokens, Any], None] | None = None

    def streams(self, request: Request) -> bool:
        return request.stream and self.event is not None


async def send(
    endpoint: Endpoint,
    client: AsyncLlamaCppClient,
    request: Request,
    record: RequestRecord,
    wire: WireTimes,
    answer: list[str] | None,
) -> None:
    """One request of ``endpoint`` from the async client, read into ``record``."""
    result = await endpoint.call(client, request, record)
    if not endpoint.streams(request):
        endpoint.answer(record, result, request, answer)
        return
    assert endpoint.event is not None
    tokens, handle = Tokens(record, wire, answer), endpoint.event
    async with result:
        async for event in result:
            handle(tokens, event)
    tokens.end()


def send_sync(
    endpoint: Endpoint,
    client: LlamaCppClient,
    request: Request,
    record: RequestRecord,
    wire: WireTimes,
    answer: list[str] | None,
) -> None:
    """One request of ``endpoint`` from the blocking client, read into ``record``."""
    result = endpoint.call(client, request, record)
    if not endpoint.streams(request):
        endpoint.answer(record, result, request, answer)
        return
    assert endpoint.event is not None
    tokens, handle = Tokens(record, wire, answer), endpoint.event
    with result:
        for event in result:
            handle(tokens, event)
    tokens.end()


def _chat_call(client: Any, request: Request, record: RequestRecord) -> Any:
    options = request.chat_options()
    if request.stream:
        options["stream"] = True
    return client.chat.completions.create(messages=request.messages, **options)


def _chat_answer(record: RequestRecord, reply: Any, request: Request,
                 answer: list[str] | None) -> None:  # fmt: skip
    _usage(record, reply.usage)
    record.add_server(reply.timings)
    _seen(record, reply.model, reply.id)
    message = reply.choices[0].message if reply.choices else None
    if answer is not None and message is not None:
        answer.append(message.content or "")
    if message is None:  # no choice at all: nothing held a token, whatever it says
        empty_answer(record, "the answer (no choices)", counted=False)
    elif not (message.content or message.reasoning_content or message.tool_calls):
        empty_answer(record, "the answer's message")


def _completions_call(client: Any, request: Request, record: RequestRecord) -> Any:
    options = request.chat_options()
    for name in ("top_k", "frequency_penalty", "presence_penalty"):
        options.pop(name)
    if request.stream:
        options["stream"] = True
    return client.completions.create(prompt=request.text, **options)


def _completions_answer(record: RequestRecord, reply: Any, request: Request,
                        answer: list[str] | None) -> None:  # fmt: skip
    _usage(record, reply.usage)
    record.add_server(reply.timings)
    _seen(record, reply.model, reply.id)
    text = reply.choices[0].text if reply.choices else ""
    if answer is not None:
        answer.append(text)
    if not text:
        empty_answer(record, "the completion")


def _completion_chunk(tokens: Tokens, chunk: Completion) -> None:
    record = tokens.record
    record.chunks += 1
    if chunk.choices:
        tokens.token(chunk.choices[0].text)
    _usage(record, chunk.usage)
    record.add_server(chunk.timings)
    _seen(record, chunk.model, chunk.id)


def _responses_call(client: Any, request: Request, record: RequestRecord) -> Any:
    options: dict[str, Any] = {
        "max_output_tokens": request.max_tokens, "temperature": request.temperature,
        "extra_body": request.extra_body() or None,
    }  # fmt: skip
    if request.stream:
        options["stream"] = True
    return client.responses.create(request.messages, **options)


def _responses_answer(record: RequestRecord, reply: Any, request: Request,
                      answer: list[str] | None) -> None:  # fmt: skip
    _response_usage(record, reply)
    _seen(record, reply.model, reply.id)
    record.add_server(reply.timings)
    if answer is not None:
        answer.append(reply.output_text)
    if not reply.output_text:
        empty_answer(record, "the response")


def _response_event(tokens: Tokens, event: ResponseStreamEvent) -> None:
    record = tokens.record
    record.chunks += 1
    if event.type == "response.output_text.delta":
        tokens.token(event.delta)
    elif event.type == "response.reasoning_text.delta":
        tokens.token(event.delta, answer_text=False)
    if event.response is not None:
        _response_usage(record, event.response)
        _seen(record, event.response.model, event.response.id)
    record.add_server(event.timings)


def _response_usage(record: RequestRecord, response: Any) -> None:
    usage = response.usage
    if usage is None:
        return
    record.prompt_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens or 0
    details = getattr(usage, "input_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached is not None:
        record.cached_tokens = cached


def _messages_call(client: Any, request: Request, record: RequestRecord) -> Any:
    system = [m for m in request.messages if m.get("role") == "system"]
    rest = [m for m in request.messages if m.get("role") != "system"]
    options: dict[str, Any] = {
        "system": "\n".join(str(m.get("content") or "") for m in system) or None,
        "temperature": request.temperature, "extra_body": request.extra_body() or None,
    }  # fmt: skip
    if request.stream:
        options["stream"] = True
    return client.messages.create(rest, request.max_tokens, **options)


def _messages_answer(record: RequestRecord, reply: Any, request: Request,
                     answer: list[str] | None) -> None:  # fmt: skip
    _seen(record, reply.model, reply.id)
    _message_usage(record, reply.usage)
    record.add_server(reply.timings)
    text = "".join(b.text or "" for b in reply.content if getattr(b, "text", None))
    if answer is not None:
        answer.append(text)
    if not reply.content:
        empty_answer(record, "the message")


def _message_event(tokens: Tokens, event: MessageStreamEvent) -> None:
    record = tokens.record
    record.chunks += 1
    delta = event.delta or {}
    if event.type == "content_block_delta":
        if delta.get("type") == "text_delta":
            tokens.token(delta.get("text"))
        elif delta.get("type") == "thinking_delta":
            tokens.token(delta.get("thinking"), answer_text=False)
        elif delta.get("type") == "input_json_delta":
            tokens.produced = True
    if event.message is not None:
        _seen(record, event.message.model, event.message.id)
        _message_usage(record, event.message.usage)
    if event.usage:
        _message_usage(record, event.usage)
    record.add_server(event.timings)


def _message_usage(record: RequestRecord, usage: Any) -> None:
    if not usage:
        return
    found = usage if isinstance(usage, Mapping) else getattr(usage, "__dict__", {})
    if found.get("input_tokens") is not None:
        cached = found.get("cache_read_input_tokens") or 0
        record.prompt_tokens = found["input_tokens"] + cached
        record.cached_tokens = cached if "cache_read_input_tokens" in found else None
    if found.get("output_tokens"):
        record.output_tokens = found["output_tokens"]


def _embeddings_call(client: Any, request: Request, record: RequestRecord) -> Any:
    return client.embeddings.create(request.text)


def _embeddings_answer(record: RequestRecord, reply: Any, request: Request,
                       answer: list[str] | None) -> None:  # fmt: skip
    record.prompt_tokens = None if reply.usage is None else reply.usage.prompt_tokens
    record.model = reply.model or record.model
    if not reply.data or not reply.data[0].embedding:
        record.error_type = EMPTY_ANSWER
        record.error = "no embedding in the answer"


def _rerank_call(client: Any, request: Request, record: RequestRecord) -> Any:
    query = request.text
    documents = _documents(query, request.documents, record.index)
    # the request `client.rerank` sends, its whole answer kept: the tokens the server read
    # are in its ``usage``, which the method's results leave out
    call = Call("POST", "/v1/rerank", _whole, body={"query": query, "documents": documents},
                operation="rerank")  # fmt: skip
    return client.execute_call(call)


def _rerank_answer(record: RequestRecord, reply: Any, request: Request,
                   answer: list[str] | None) -> None:  # fmt: skip
    results = reply.get("results") if isinstance(reply, dict) else reply
    usage = (reply.get("usage") if isinstance(reply, dict) else None) or {}
    tokens = usage.get("prompt_tokens") or usage.get("total_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        record.prompt_tokens = tokens
    if isinstance(reply, dict) and reply.get("model"):
        record.model = str(reply["model"])
    if not isinstance(results, list) or len(results) != request.documents:
        record.error_type = EMPTY_ANSWER
        count = len(results) if isinstance(results, list) else 0
        record.error = f"{count} scores for {request.documents} documents"


def _whole(data: Any) -> Any:
    return data


def _documents(query: str, count: int, seed: int) -> list[str]:
    """``count`` documents as long as the query: its words shuffled, each differently."""
    words = query.split() or ["empty"]
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        shuffled = list(words)
        rng.shuffle(shuffled)
        found.append(" ".join(shuffled))
    return found


_ENDPOINTS = {
    endpoint.name: endpoint
    for endpoint in (
        Endpoint("chat", _chat_call, _chat_answer, chat_chunk),
        Endpoint("completions", _completions_call, _completions_answer, _completion_chunk),
        Endpoint("responses", _responses_call, _responses_answer, _response_event),
        Endpoint("messages", _messages_call, _messages_answer, _message_event),
        Endpoint("embeddings", _embeddings_call, _embeddings_answer),
        Endpoint("rerank", _rerank_call, _rerank_answer),
    )
}


def endpoint_of(name: str) -> Endpoint:
    """The `Endpoint` named ``name`` (one of `ENDPOINTS`)."""
    try:
        return _ENDPOINTS[name]
    except KeyError:
        raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {name!r}") from None
