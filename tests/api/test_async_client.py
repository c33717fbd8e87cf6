"""AsyncLlamaCppClient against the real llama.cpp server (4 parallel slots)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api import (
    APITimeoutError,
    AsyncLlamaCppClient,
    AsyncStream,
    AuthenticationError,
    ChatCompletion,
    ChatCompletionChunk,
    LlamaCppClient,
    NotSupportedError,
    StreamInterruptedError,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient, LlamaCppInstrumentor
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

from ..conftest import API_KEY, wait_until_idle

MESSAGES = [{"role": "user", "content": "What is GGUF?"}]


@pytest.fixture
async def aclient(chat_server: ServerManager) -> AsyncIterator[AsyncLlamaCppClient]:
    async with AsyncLlamaCppClient(chat_server.url) as client:
        yield client


async def wait_all_idle(client: AsyncLlamaCppClient, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while any(slot["state"] == "processing" for slot in await client.slots.list()):
        assert asyncio.get_running_loop().time() < deadline, "a slot stayed busy"
        await asyncio.sleep(0.05)


async def test_sync_and_async_return_equal_results(
    aclient: AsyncLlamaCppClient, chat_server: ServerManager
) -> None:
    with LlamaCppClient(chat_server.url) as sync:
        sync_reply = sync.chat.completions.create(
            messages=MESSAGES, max_tokens=12, temperature=0, seed=5
        )
        sync_stream = "".join(
            c.choices[0].delta.content or ""
            for c in sync.chat.completions.create(
                messages=MESSAGES, max_tokens=8, temperature=0, stream=True
            )
        )
        sync_rest = [
            sync.tokenize("Hello, world!"),
            sync.detokenize([1, 300, 301]),
            sync.complete("abc", max_tokens=4, temperature=0).content,
            sync.apply_template(MESSAGES),
            [m["id"] for m in sync.models.list()],
            sync.health.check(),
            [a["id"] for a in sync.lora.list()],
        ]
        sync_vector = sync.embed("x")
    reply = await aclient.chat.completions.create(
        messages=MESSAGES, max_tokens=12, temperature=0, seed=5
    )
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == sync_reply.choices[0].message.content
    assert reply.usage.completion_tokens == sync_reply.usage.completion_tokens == 12
    stream = await aclient.chat.completions.create(
        messages=MESSAGES, max_tokens=8, temperature=0, stream=True
    )
    assert isinstance(stream, AsyncStream)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == sync_stream
    rest = [
        await aclient.tokenize("Hello, world!"),
        await aclient.detokenize([1, 300, 301]),
        (await aclient.complete("abc", max_tokens=4, temperature=0)).content,
        await aclient.apply_template(MESSAGES),
        [m["id"] for m in await aclient.models.list()],
        await aclient.health.check(),
        [a["id"] for a in await aclient.lora.list()],
    ]
    assert rest == sync_rest
    assert await aclient.embed("x") == pytest.approx(sync_vector, abs=1e-5)
    slots = await aclient.slots.list()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    assert "llamacpp:prompt_tokens_total" in await aclient.metrics.values()
    assert (await aclient.lora.set_scales({0: 1.0}))[0]["scale"] == 1.0
    assert await aclient.health.wait_until_ready(5) == {"status": "ok"}


async def test_32_concurrent_streams_complete_without_interleaving(
    aclient: AsyncLlamaCppClient,
) -> None:
    async def one(i: int) -> tuple[int, list[ChatCompletionChunk]]:
        stream = await aclient.chat.completions.create(
            messages=[{"role": "user", "content": f"stream number {i}"}],
            max_tokens=4 + i % 7,
            stream=True,
            seed=i,
        )
        return i, [chunk async for chunk in stream]

    results = await asyncio.gather(*(one(i) for i in range(32)))
    assert len(results) == 32
    for i, chunks in results:
        expected = 4 + i % 7
        assert len({c.id for c in chunks}) == 1  # every chunk belongs to this stream
        content = [c for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(content) == expected
        assert chunks[-1].usage.completion_tokens == expected
        assert chunks[-1].timings.predicted_n == expected
    assert len({chunks[0].id for _, chunks in results}) == 32
    await wait_all_idle(aclient)


async def test_cancelled_task_frees_connection_and_slot(
    aclient: AsyncLlamaCppClient, caplog: pytest.LogCaptureFixture, chat_server: ServerManager
) -> None:
    wait_until_idle(chat_server)  # the one busy slot must be this test's
    caplog.set_level(logging.ERROR, logger="asyncio")
    started = asyncio.Event()
    holder: dict[str, AsyncStream[ChatCompletionChunk]] = {}

    async def consume() -> None:
        stream = await aclient.chat.completions.create(
            messages=MESSAGES, max_tokens=3000, stream=True
        )
        holder["stream"] = stream
        count = 0
        async for _ in stream:
            count += 1
            if count == 3:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    busy = [s for s in await aclient.slots.list() if s["state"] == "processing"]
    assert len(busy) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert holder["stream"].closed
    assert holder["stream"].response.is_closed
    await wait_all_idle(aclient)
    assert (
        await aclient.chat.completions.create(messages=MESSAGES, max_tokens=2)
    ).usage.completion_tokens == 2
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]


async def test_stream_async_with_and_aclose(aclient: AsyncLlamaCppClient) -> None:
    async with await aclient.chat.completions.create(
        messages=MESSAGES, max_tokens=50, stream=True
    ) as stream:
        first = await stream.__anext__()
        assert first.choices[0].delta.role == "assistant"
    assert stream.closed
    stream2 = await aclient.chat.completions.create(messages=MESSAGES, max_tokens=50, stream=True)
    await stream2.__anext__()
    await stream2.aclose()
    await stream2.aclose()
    assert [c async for c in stream2] == []
    await wait_all_idle(aclient)


async def test_validation_happens_before_anything_is_awaited(aclient: AsyncLlamaCppClient) -> None:
    with pytest.raises(TypeError, match="messages must be a list"):
        aclient.chat.completions.create(messages="hello")
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        aclient.chat_completion(messages=MESSAGES, temperature=float("nan"))
    with pytest.raises(ValueError, match="documents must not be empty"):
        aclient.rerank("q", [])


async def test_errors_are_the_same_classes(
    chat_server: ServerManager, key_server: ServerManager
) -> None:
    async with AsyncLlamaCppClient("http://127.0.0.1:9", max_retries=0) as dead:
        with pytest.raises(requests.ConnectionError):
            await dead.tokenize("x")
    async with AsyncLlamaCppClient(key_server.url) as anonymous:
        with pytest.raises(AuthenticationError):
            await anonymous.tokenize("x")
    async with AsyncLlamaCppClient(key_server.url, api_key=API_KEY) as keyed:
        assert await keyed.tokenize("x", add_special=False)
    async with AsyncLlamaCppClient(chat_server.url) as client:
        with pytest.raises(NotSupportedError, match="--reranking"):
            await client.rerank("q", ["a"])


@pytest.mark.usefixtures("fast_backoff")
async def test_retries_and_timeouts_with_async_sleep() -> None:
    loading = Reply(503, {"error": {"code": 503, "message": "Loading model"}})
    ok = Reply(200, {"status": "ok", "tokens": [1, 2]})
    with FaultServer([loading, loading, ok]) as server:
        async with AsyncLlamaCppClient(server.url, max_retries=2) as client:
            assert await client.tokenize("x") == [1, 2]
        assert len(server.requests) == 3
    with FaultServer(Reply(200, {"tokens": []}, delay=1.0)) as server:
        async with AsyncLlamaCppClient(server.url, timeout=0.2, max_retries=0) as client:
            with pytest.raises(requests.Timeout) as info:
                await client.tokenize("x")
            assert isinstance(info.value, APITimeoutError)
    chunk = {"choices": [{"index": 0, "delta": {"content": "a"}}]}
    with FaultServer(Reply(chunks=sse(chunk, chunk, chunk), drop_after=1)) as server:
        async with AsyncLlamaCppClient(server.url) as client:
            stream = await client.chat.completions.create(messages=MESSAGES, stream=True)
            with pytest.raises(StreamInterruptedError):
                async for _ in stream:
                    pass
            assert stream.closed


async def test_connection_limit_queues_instead_of_failing(chat_server: ServerManager) -> None:
    async with AsyncLlamaCppClient(chat_server.url, max_connections=2) as client:
        replies = await asyncio.gather(
            *(client.chat.completions.create(messages=MESSAGES, max_tokens=3) for _ in range(8))
        )
    assert [r.usage.completion_tokens for r in replies] == [3] * 8


async def test_concurrent_spans_are_siblings_under_the_caller(chat_server: ServerManager) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    async with InstrumentedAsyncLlamaCppClient(chat_server.url, tracer_provider=provider) as client:
        with tracer.start_as_current_span("caller") as caller:
            await asyncio.gather(
                *(client.chat.completions.create(messages=MESSAGES, max_tokens=2) for _ in range(4))
            )
            stream = await client.chat.completions.create(
                messages=MESSAGES, max_tokens=3, stream=True
            )
            chunks = [c async for c in stream]
        response = await client.chat_completions({"messages": MESSAGES, "max_tokens": 2})
    assert response.usage.completion_tokens == 2
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat"]
    assert len(chats) == 6
    under_caller = [s for s in chats if s.parent is not None]
    assert len(under_caller) == 5
    assert all(s.parent.span_id == caller.get_span_context().span_id for s in under_caller)
    stream_span = [s for s in chats if s.attributes.get("gen_ai.request.stream")][0]
    assert (
        stream_span.attributes["gen_ai.usage.output_tokens"]
        == 3
        == chunks[-1].usage.completion_tokens
    )
    assert stream_span.attributes["gen_ai.response.time_to_first_chunk"] > 0
    provider.shutdown()


async def test_instrumentor_covers_the_async_client(chat_server: ServerManager) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with AsyncLlamaCppClient(chat_server.url) as client:
        bare = await client.tokenize("Hello")
        instrumentor = LlamaCppInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            instrumented = await client.tokenize("Hello")
        finally:
            instrumentor.uninstrument()
        after = await client.tokenize("Hello")
    assert bare == instrumented == after
    assert [s.name for s in exporter.get_finished_spans()] == ["tokenize"]
    provider.shutdown()
