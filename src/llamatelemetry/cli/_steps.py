"""The demo's API calls: every call of the "API Client" page, in its order, then the extras.

Each step makes one call through `LlamaCppClient`, then fills its `CallRecord` with token
counts, llama.cpp's timings, a one-line ``summary`` for people and ``data`` for machines.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import (
    APIStatusError,
    ChatCompletion,
    ChatCompletionChunk,
    LlamaCppClient,
    NativeCompletion,
    Stream,
)
from ..api._internal import timings_of
from ._calls import CallRecord, SpanLog, measured_call

__all__ = ["STEPS", "DemoContext", "Step", "run_steps"]

CHAT_TOKENS = 32
SHORT_TOKENS = 16
#: The server counters shown from ``GET /metrics``.
KEY_COUNTERS = (
    "llamacpp:prompt_tokens_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:n_decode_total",
)
RERANK_QUERY = "What is flash attention?"
RERANK_DOCUMENTS = [
    "Flash attention is a memory-efficient attention algorithm.",
    "CUDA is a parallel computing platform by NVIDIA.",
    "Attention mechanisms are core to transformer models.",
    "Python is a popular programming language.",
]
#: Llama 2 ids of "Hello, world!" (the spec's example), used if tokenize gave nothing.
SPEC_TOKEN_IDS = [1, 22557, 29892, 3186, 29991]


@dataclass
class DemoContext:
    """What the steps call: the clients, the model's id and a live sink for streamed text."""

    client: LlamaCppClient
    rerank_client: LlamaCppClient
    model_id: str
    on_stream_text: Callable[[str], None] = lambda text: None
    on_stream_end: Callable[[], None] = lambda: None
    token_ids: list[int] = field(default_factory=list)
    spans: SpanLog | None = None  # where the clients' spans are collected, when tracing
    #: An unchanged openai SDK client for the chat server, observed while it is open.
    openai_client: Callable[[], AbstractContextManager[Any]] | None = None


StepFn = Callable[[DemoContext, CallRecord], None]


@dataclass(frozen=True)
class Step:
    """One API call of the demo: its name as written in code, its endpoint, its function."""

    operation: str
    endpoint: str
    run: StepFn
    streams: bool = False  # prints its output live (no spinner over it)


STEPS: list[Step] = []


def _step(operation: str, endpoint: str, *, streams: bool = False) -> Callable[[StepFn], StepFn]:
    """Register a step; the demo runs them in the order they are defined below."""

    def register(fn: StepFn) -> StepFn:
        STEPS.append(Step(operation, endpoint, fn, streams))
        return fn

    return register


def run_steps(
    ctx: DemoContext,
    calls: list[CallRecord],
    on_record: Callable[[CallRecord], None] = lambda record: None,
    progress: Callable[[Step], AbstractContextManager[object]] = lambda step: nullcontext(),
) -> None:
    """Run every step, measured; a call the server cannot do is recorded as skipped.

    ``progress(step)`` is held open while the step runs (a spinner); ``on_record`` gets
    each finished record.
    """
    for step in STEPS:
        measured = measured_call(calls, step.operation, step.endpoint, ctx.spans)
        with progress(step), measured as record:
            try:
                step.run(ctx, record)
            except APIStatusError as exc:
                record.skip(exc)
        on_record(record)


def _quote(text: str | None, limit: int = 48) -> str:
    """``text`` on one line, shortened, in quotes."""
    flat = " ".join((text or "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f'"{flat}"'


def _messages(question: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def _record_chat(record: CallRecord, response: ChatCompletion) -> None:
    """A chat answer's counts, timings and summary: this client's, or the openai SDK's
    (which keeps llama.cpp's timings, a field it does not know, as a plain dict)."""
    record.add_usage(response.usage)
    record.add_timings(timings_of(response))
    choice = response.choices[0]
    record.summary = f"{_quote(choice.message.content)}  finish={choice.finish_reason}"
    record.data = {"finish_reason": choice.finish_reason}


def _record_native(record: CallRecord, response: NativeCompletion) -> None:
    record.prompt_tokens = response.tokens_evaluated
    record.completion_tokens = response.tokens_predicted
    record.add_timings(response.timings)
    record.summary = f"{_quote(response.content)}  finish={response.finish_reason}"
    record.data = {"finish_reason": response.finish_reason}


# -- the spec page, in its order ------------------------------------------------------


@_step("health.check", "GET /health")
def _health(ctx: DemoContext, record: CallRecord) -> None:
    health = ctx.client.health.check()
    record.summary = f"status={health.get('status')}"
    record.data = dict(health)


@_step("chat.completions.create", "POST /v1/chat/completions")
def _chat_create(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = CHAT_TOKENS
    response = ctx.client.chat.completions.create(
        messages=_messages("What is GGUF format?", "You are a helpful assistant."),
        max_tokens=CHAT_TOKENS,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
    )
    _record_chat(record, response)


@_step("chat_completion", "POST /v1/chat/completions")
def _chat_completion(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = SHORT_TOKENS
    response = ctx.client.chat_completion(
        messages=_messages("Explain tensor cores."), max_tokens=SHORT_TOKENS, temperature=0.5
    )
    _record_chat(record, response)


def _stream_chunks(ctx: DemoContext, record: CallRecord) -> Iterator[ChatCompletionChunk]:
    stream: Stream[ChatCompletionChunk] = ctx.client.chat.completions.create(
        messages=_messages("Write a poem about GPUs."), max_tokens=CHAT_TOKENS, stream=True
    )
    with stream:
        for chunk in stream:
            if record.first_chunk_ms is None:
                record.first_chunk_ms = record.elapsed_ms()
            yield chunk


@_step("chat.completions.create[stream]", "POST /v1/chat/completions (SSE)", streams=True)
def _chat_stream(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = CHAT_TOKENS
    parts: list[str] = []
    chunks = 0
    try:
        for chunk in _stream_chunks(ctx, record):
            chunks += 1
            text = chunk.choices[0].delta.content
            if text:
                parts.append(text)
                ctx.on_stream_text(text)
            record.add_usage(chunk.usage)
            record.add_timings(chunk.timings)
    finally:
        ctx.on_stream_end()
    record.summary = f"{_quote(''.join(parts))}  {chunks} chunks"
    record.data = {"chunks": chunks, "content_chunks": len(parts)}


@_step("embed", "POST /v1/embeddings")
def _embed(ctx: DemoContext, record: CallRecord) -> None:
    vector = ctx.client.embed("What is CUDA?")
    head = ", ".join(f"{x:+.3f}" for x in vector[:3])
    record.summary = f"{len(vector)} dims  [{head}, …]"
    record.data = {"dims": len(vector)}


@_step("embeddings.create", "POST /v1/embeddings")
def _embeddings_create(ctx: DemoContext, record: CallRecord) -> None:
    response = ctx.client.embeddings.create(
        input=["llamatelemetry", "llama.cpp", "CUDA programming"], model=ctx.model_id
    )
    record.add_usage(response.usage)
    record.completion_tokens = None  # embeddings generate nothing
    dims = [len(item.embedding) for item in response.data]
    record.summary = f"{len(dims)} vectors of {', '.join(map(str, sorted(set(dims))))} dims"
    record.data = {"count": len(dims), "dims": dims}


@_step("tokenize", "POST /tokenize")
def _tokenize(ctx: DemoContext, record: CallRecord) -> None:
    ids = ctx.client.tokenize("Hello, world!")
    ctx.token_ids = [int(i) for i in ids]
    record.summary = f"{_quote('Hello, world!')} → {len(ids)} tokens {ctx.token_ids}"
    record.data = {"tokens": ctx.token_ids}


@_step("detokenize", "POST /detokenize")
def _detokenize(ctx: DemoContext, record: CallRecord) -> None:
    ids = ctx.token_ids or SPEC_TOKEN_IDS
    text = ctx.client.detokenize(ids)
    record.summary = f"{len(ids)} tokens → {_quote(text)}"
    record.data = {"text": text}


@_step("rerank", "POST /v1/rerank")
def _rerank(ctx: DemoContext, record: CallRecord) -> None:
    results = ctx.rerank_client.rerank(query=RERANK_QUERY, documents=RERANK_DOCUMENTS)
    best = results[0]
    record.summary = (
        f"{len(results)} documents, best {best['score']:.4f}: "
        f"{_quote(RERANK_DOCUMENTS[best['index']], 32)}"
    )
    record.data = {"order": [r["index"] for r in results], "scores": [r["score"] for r in results]}


@_step("models.list", "GET /v1/models")
def _models(ctx: DemoContext, record: CallRecord) -> None:
    models = ctx.client.models.list()
    ids = [str(m.get("id")) for m in models]
    record.summary = f"{len(ids)} model(s): {', '.join(Path(i).name for i in ids)}"
    record.data = {"ids": ids}


@_step("slots.list", "GET /slots")
def _slots(ctx: DemoContext, record: CallRecord) -> None:
    slots = ctx.client.slots.list()
    states = [{"id": s.get("id"), "state": s.get("state")} for s in slots]
    record.summary = f"{len(slots)} slot(s): " + ", ".join(
        f"#{s['id']} {s['state']}" for s in states
    )
    record.data = {"slots": states}


@_step("lora.list", "GET /lora-adapters")
def _lora(ctx: DemoContext, record: CallRecord) -> None:
    adapters = ctx.client.lora.list()
    listed = [{"id": a.get("id"), "path": a.get("path"), "scale": a.get("scale")} for a in adapters]
    if listed:
        record.summary = ", ".join(
            f"#{a['id']} {Path(str(a['path'])).name} scale={a['scale']}" for a in listed
        )
    else:
        record.summary = "no adapters loaded (start the server with lora=[...] to add some)"
    record.data = {"adapters": listed}


@_step("metrics.get", "GET /metrics")
def _metrics_get(ctx: DemoContext, record: CallRecord) -> None:
    text = ctx.client.metrics.get()
    record.summary = f"{len(text.splitlines())} lines of Prometheus text"
    record.data = {"bytes": len(text.encode())}


@_step("metrics.values", "GET /metrics")
def _metrics_values(ctx: DemoContext, record: CallRecord) -> None:
    values = ctx.client.metrics.values()
    counters = {name: values[name] for name in KEY_COUNTERS if name in values}
    record.summary = "  ".join(
        f"{name.removeprefix('llamacpp:')}={value:g}" for name, value in counters.items()
    )
    record.data = {"counters": counters}


# -- beyond the spec page: the rest of the client ----------------------------------------


@_step("completions.create", "POST /v1/completions")
def _completions_create(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = SHORT_TOKENS
    response = ctx.client.completions.create(prompt="The GGUF file format", max_tokens=SHORT_TOKENS)
    record.add_usage(response.usage)
    record.add_timings(response.timings)
    choice = response.choices[0]
    record.summary = f"{_quote(choice.text)}  finish={choice.finish_reason}"
    record.data = {"finish_reason": choice.finish_reason}


@_step("complete", "POST /completion")
def _complete(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = SHORT_TOKENS
    response = ctx.client.complete("The GGUF file format", max_tokens=SHORT_TOKENS)
    _record_native(record, response)


@_step("infill", "POST /infill")
def _infill(ctx: DemoContext, record: CallRecord) -> None:
    record.max_tokens = SHORT_TOKENS
    response = ctx.client.infill(
        "def fibonacci(n):\n    ", "\n    return result", max_tokens=SHORT_TOKENS
    )
    _record_native(record, response)


@_step("apply_template", "POST /apply-template")
def _apply_template(ctx: DemoContext, record: CallRecord) -> None:
    prompt = ctx.client.apply_template(_messages("What is GGUF?", "You are concise."))
    shown = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    record.summary = repr(shown)
    record.data = {"prompt": prompt}


@_step("props.get", "GET /props")
def _props(ctx: DemoContext, record: CallRecord) -> None:
    props: dict[str, Any] = ctx.client.props.get()
    settings = props.get("default_generation_settings") or {}
    facts = {
        "total_slots": props.get("total_slots"),
        "n_ctx": settings.get("n_ctx"),
        "build_info": props.get("build_info"),
    }
    record.summary = "  ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
    record.data = facts


# -- the openai SDK, unchanged ---------------------------------------------------------

OPENAI_MISSING = "skipped: the openai SDK is not installed (pip install openai)"


@_step("openai.chat.completions.create", "POST /v1/chat/completions")
def _openai_sdk(ctx: DemoContext, record: CallRecord) -> None:
    """A call through the openai SDK, as people's code makes it: its span has llama.cpp's
    timings like the client's own."""
    record.max_tokens = SHORT_TOKENS
    if ctx.openai_client is None or importlib.util.find_spec("openai") is None:
        record.status = "skipped"
        record.summary = OPENAI_MISSING
        return
    with ctx.openai_client() as sdk:
        answer = sdk.chat.completions.create(
            model=ctx.model_id,
            messages=_messages("What is a KV cache?"),
            max_tokens=SHORT_TOKENS,
        )
    _record_chat(record, answer)
