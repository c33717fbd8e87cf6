"""What a user writes with the async client; mypy --strict must accept it as is."""

from __future__ import annotations

import asyncio

from llamatelemetry.api import AsyncLlamaCppClient, ChatCompletion, NativeCompletion
from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient


async def main() -> None:
    async with AsyncLlamaCppClient("http://127.0.0.1:8080") as client:
        reply: ChatCompletion = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        text: str | None = reply.choices[0].message.content
        stream = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        async for chunk in stream:
            piece: str | None = chunk.choices[0].delta.content
            print(piece, text)
        same: ChatCompletion = await client.chat_completion(
            messages=[{"role": "user", "content": "Hi"}]
        )
        ids: list[int] = await client.tokenize("Hello")
        words: str = await client.detokenize(ids)
        vector: list[float] = await client.embed("x")
        vectors: list[list[float]] = await client.embed(["x", "y"])
        native: NativeCompletion = await client.complete("x", max_tokens=4)
        ranked = await client.rerank("q", ["a", "b"])
        score: float = ranked[0]["score"]
        slots = await client.slots.list()
        health = await client.health.check()
        samples = await client.metrics.parse()
        print(same, words, vector, vectors, native.content, score, slots, health, samples)
        pieces = await client.complete("x", stream=True, max_tokens=4)
        async for part in pieces:
            print(part.content)
        filled: str = (await client.infill("def f():", max_tokens=4)).content
        print(filled)
    async with AsyncLlamaCppClient(timeout=(1.0, 5.0), max_connections=8) as tuned:
        await tuned.completions.create("x", max_tokens=4, top_k=None, seed=3)
    async with InstrumentedAsyncLlamaCppClient("http://127.0.0.1:8080") as traced:
        traced_reply: ChatCompletion = await traced.chat_completions(
            {"messages": [{"role": "user", "content": "Hi"}]}
        )
        print(traced_reply.id)


asyncio.run(main())
