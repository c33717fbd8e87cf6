"""Async throughput: AsyncLlamaCppClient against raw ``httpx.AsyncClient`` (JSON in, JSON
out, SSE lines parsed by hand), N concurrent calls and streams on the same tiny-model
llama.cpp server (4 slots), rounds interleaved.

    python benchmarks/bench_async.py [--calls 64] [--concurrency 16] [--rounds 8]

Target (issue 6): ours / raw httpx >= 0.90 throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import httpx
from _harness import machine

from llamatelemetry.api import AsyncLlamaCppClient
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Say something."}]


async def throughput(job: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--stream-tokens", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp) as server:
        url = server.url
        raw = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=600)
        ours = AsyncLlamaCppClient(url)

        async def raw_call() -> object:
            # The raw peer gets the one resend our client makes when llama-server has
            # closed a pooled keep-alive connection; without it a run cannot finish.
            try:
                r = await raw.post(
                    f"{url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1}
                )
            except httpx.RemoteProtocolError:
                r = await raw.post(
                    f"{url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1}
                )
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"]

        async def our_call() -> object:
            r = await ours.chat.completions.create(messages=MESSAGES, max_tokens=1)
            return r.choices[0].message.content

        async def raw_stream() -> object:
            body = {
                "messages": MESSAGES,
                "max_tokens": args.stream_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            pieces = []
            async with raw.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunk = json.loads(line[6:])
                        if chunk["choices"]:
                            pieces.append(chunk["choices"][0]["delta"].get("content") or "")
            return "".join(pieces)

        async def our_stream() -> object:
            stream = await ours.chat.completions.create(
                messages=MESSAGES, max_tokens=args.stream_tokens, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        print(
            f"llamatelemetry async throughput — {machine()}, server {url}, "
            f"{args.calls} calls, concurrency {args.concurrency}"
        )
        verdicts = []
        for title, raw_job, our_job, calls in (
            ("non-streamed chat, max_tokens=1", raw_call, our_call, args.calls),
            (
                f"streamed chat, {args.stream_tokens} tokens",
                raw_stream,
                our_stream,
                max(args.calls // 4, 8),
            ),
        ):
            await throughput(raw_job, 16, args.concurrency)  # warm-up
            await throughput(our_job, 16, args.concurrency)
            raw_rates, our_rates = [], []
            for i in range(args.rounds):
                pair = [(raw_rates, raw_job), (our_rates, our_job)]
                for rates, job in pair if i % 2 == 0 else pair[::-1]:
                    rates.append(await throughput(job, calls, args.concurrency))
            r, o = statistics.median(raw_rates), statistics.median(our_rates)
            ratio = o / r
            verdicts.append(ratio)
            print(
                f"\n{title}\n  raw httpx.AsyncClient  {r:8.1f} calls/s\n"
                f"  AsyncLlamaCppClient    {o:8.1f} calls/s   ratio {ratio:.3f}  "
                f"(target >= 0.90: {'OK' if ratio >= 0.90 else 'UNDER'})"
            )
        await raw.aclose()
        await ours.aclose()


if __name__ == "__main__":
    asyncio.run(main())
