"""The load generator's own cost: process CPU per request and per stream chunk at 64
concurrent streams, against a raw ``httpx.AsyncClient`` loop doing the least a generator
can (send, iterate the lines, ``json.loads`` each), in the same process, interleaved.

    python benchmarks/bench_generator.py [--rounds 3] [--streams 64] [--requests 256]

The server is the tiny model in its own process (its CPU is not counted). From the CPU
per chunk follows how many streams one core can drive at a given generation speed: at
50 tokens/s a stream brings 50 chunks a second, so one core drives 1 / (50 × CPU per
chunk) of them. Target: the generator within 1.5× of the raw loop per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import httpx
from _harness import machine

from llamatelemetry.bench import SyntheticPrompts, Workload, open_client, run_load
from llamatelemetry.testing import start_chat_server

MAX_TOKENS = 64


async def generator_round(url: str, streams: int, requests: int, seed: int) -> tuple[float, int]:
    """CPU seconds and chunks of one run of the load generator."""
    async with open_client(url, concurrency=streams) as client:
        workload = Workload(
            SyntheticPrompts(24, seed=seed), requests=requests, max_tokens=MAX_TOKENS,
            ignore_eos=True, warmup=0,
        )  # fmt: skip
        result = await run_load(client, workload, streams)
    assert result.errors == 0, result.error_samples()
    assert result.cpu_seconds is not None
    return result.cpu_seconds, sum(r.chunks for r in result.records)


async def raw_round(url: str, streams: int, requests: int, seed: int) -> tuple[float, int]:
    """The same requests from a bare httpx loop: the floor a generator can reach."""
    prompts = SyntheticPrompts(24, seed=seed).take(requests)
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    gate = asyncio.Semaphore(streams)
    chunks = 0

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def one(messages: object) -> None:
            nonlocal chunks
            body = {"messages": messages, "max_tokens": MAX_TOKENS, "stream": True,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
            # llama-server closes a stream's connection after it: both sides say so first.
            headers = {"Connection": "close"}
            async with (
                gate,
                http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
            ):
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])
                        chunks += 1

        started = time.process_time()
        await asyncio.gather(*(one(p) for p in prompts))
        return time.process_time() - started, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256)
    args = parser.parse_args()
    per_chunk: dict[str, list[float]] = {"generator": [], "raw httpx": []}
    per_request: dict[str, list[float]] = {"generator": [], "raw httpx": []}
    with tempfile.TemporaryDirectory() as tmp:
        with start_chat_server(tmp, n_parallel=8, n_threads=1, ctx_size=8 * 512) as server:
            for round_ in range(args.rounds):
                for name, run in (("generator", generator_round), ("raw httpx", raw_round)):
                    cpu, chunks = asyncio.run(run(server.url, args.streams, args.requests, round_))
                    per_chunk[name].append(cpu / chunks)
                    per_request[name].append(cpu / args.requests)
    chunk = {name: statistics.median(values) for name, values in per_chunk.items()}
    request = {name: statistics.median(values) for name, values in per_request.items()}
    print(f"\nLoad generator CPU, {args.streams} concurrent streams, {args.requests} requests "
          f"of {MAX_TOKENS} tokens, {args.rounds} rounds; {machine()}")  # fmt: skip
    for name in per_chunk:
        print(f"  {name:<10} {chunk[name] * 1e6:8.1f} µs per chunk  "
              f"{request[name] * 1000:7.2f} ms per request")  # fmt: skip
    ratio = chunk["generator"] / chunk["raw httpx"]
    print(f"  per chunk, generator / raw httpx   {ratio:.3f}   target <= 1.50   "
          f"{'OK' if ratio <= 1.5 else 'MISS'}")  # fmt: skip
    for speed in (20, 50, 100):
        print(f"  one core drives about {1 / (speed * chunk['generator']):,.0f} streams "
              f"at {speed} tokens/s each")  # fmt: skip


if __name__ == "__main__":
    main()
