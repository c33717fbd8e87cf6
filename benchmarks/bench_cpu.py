"""Process CPU: what each client burns, not how long the server takes.

    python benchmarks/bench_cpu.py [--rounds 5] [--tokens 400] [--streams 3]
                                   [--calls 200] [--concurrent 64]

Against one tiny-model server in its own process, interleaved round by round, the CPU of
this process (all its threads: exporters and the metric recorder included):

- per streamed chunk of a long stream: raw ``httpx.Client.stream`` + ``iter_lines`` +
  ``json.loads`` per line (the floor); ``LlamaCppClient``; the openai SDK;
  ``InstrumentedLlamaCppClient`` with a real SDK pipeline (batch span processor, periodic
  metric reader, OTLP to a collector in another process): telemetry's added CPU per chunk;
- per call (``max_tokens=1``, not streamed): what our telemetry adds to our client, beside
  what the official ``opentelemetry-instrumentation-openai-v2`` adds to the openai SDK on
  the same SDK pipeline;
- ``--concurrent`` async streams at once: chunks per CPU-second of ``AsyncLlamaCppClient``
  against raw ``httpx.AsyncClient`` + ``aiter_lines`` + ``json.loads``.

The goals, as ratios: per chunk ours <= 1.0x raw and <= 0.35x openai; telemetry <= 5 us
per chunk and <= 0.5x what openai-v2 adds per call; async chunks per CPU-second >= raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx
from _harness import compare, machine

from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--streams", type=int, default=3, help="streams per candidate a round")
    parser.add_argument("--calls", type=int, default=200, help="calls per candidate a round")
    parser.add_argument("--concurrent", type=int, default=64, help="async streams at once")
    parser.add_argument("--part", choices=["chunk", "call", "async", "all"], default="all")
    args = parser.parse_args()
    import openai

    collector = subprocess.Popen(
        [sys.executable, "-m", "llamatelemetry.testing._otlp"], stdout=subprocess.PIPE, text=True
    )
    assert collector.stdout is not None
    collector_url = collector.stdout.readline().strip()
    body = {"messages": MESSAGES, "max_tokens": args.tokens, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    chunks_seen: dict[str, int] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            start_chat_server(tmp, n_parallel=1, ctx_size=4096, n_threads=1) as server,
        ):
            telemetry = setup_telemetry("bench-cpu", otlp_endpoint=collector_url, set_global=False)
            ours = LlamaCppClient(server.url)
            traced = InstrumentedLlamaCppClient(
                server.url,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            )
            sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
            raw = httpx.Client(timeout=60)

            def raw_stream() -> int:
                n = 0
                headers = {"Connection": "close"}  # as ours: llama-server closes it anyway
                url = server.url + "/v1/chat/completions"
                with raw.stream("POST", url, json=body, headers=headers) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            json.loads(line[6:])
                            n += 1
                return n

            def client_stream(client: LlamaCppClient) -> Callable[[], int]:
                def run() -> int:
                    stream = client.chat.completions.create(
                        messages=MESSAGES, max_tokens=args.tokens, stream=True, ignore_eos=True
                    )
                    return sum(1 for _ in stream)

                return run

            def sdk_stream() -> int:
                stream = sdk.chat.completions.create(
                    model="tiny", messages=MESSAGES, max_tokens=args.tokens, stream=True,  # type: ignore[arg-type]
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
                )  # fmt: skip
                return sum(1 for _ in stream)

            candidates = {
                "raw httpx": raw_stream,
                "ours": client_stream(ours),
                "openai SDK": sdk_stream,
                "ours + telemetry": client_stream(traced),
            }
            if args.part in ("chunk", "all"):
                for name, fn in candidates.items():
                    chunks_seen[name] = fn()  # also a warm-up
                results = compare(candidates, ops=args.streams, rounds=args.rounds, warmup=1)
                report_chunks(results, chunks_seen, args)
            if args.part in ("call", "all"):
                per_call(server.url, ours, traced, sdk, telemetry, args)
            telemetry.shutdown()
        if args.part in ("async", "all"):
            with (
                tempfile.TemporaryDirectory() as tmp,
                start_chat_server(tmp, n_parallel=8, ctx_size=8192, n_threads=1) as server,
            ):
                asyncio.run(concurrent_streams(server.url, args))
    finally:
        collector.terminate()
        collector.wait()
        collector.stdout.close()


def report_chunks(results: dict[str, Any], chunks_seen: dict[str, int], args: Any) -> None:
    per_chunk = {
        name: result.cpu_median / chunks_seen[name] * 1e6 for name, result in results.items()
    }
    print(f"\nCPU per streamed chunk, {args.tokens}-token streams, {args.rounds} rounds of "
          f"{args.streams}; {machine()}")  # fmt: skip
    for name, micros in per_chunk.items():
        print(f"  {name:<18} {micros:8.1f} µs per chunk  ({chunks_seen[name]} chunks a stream)")
    floor, sdk_cost = per_chunk["raw httpx"], per_chunk["openai SDK"]
    added = per_chunk["ours + telemetry"] - per_chunk["ours"]
    verdicts(
        ("per chunk, ours / raw httpx", per_chunk["ours"] / floor, 1.0),
        ("per chunk, ours / openai SDK", per_chunk["ours"] / sdk_cost, 0.35),
        ("telemetry added per chunk, µs", added, 5.0),
    )


def verdicts(*rows: tuple[str, float, float]) -> None:
    for label, value, target in rows:
        verdict = "OK" if value <= target else "MISS"
        print(f"  {label:<36} {value:8.3f}   target <= {target:.2f}   {verdict}")


def per_call(
    url: str, ours: LlamaCppClient, traced: LlamaCppClient, sdk: Any, telemetry: Any, args: Any
) -> None:
    """CPU per non-streamed call, each candidate's block of calls timed on its own; the
    openai-v2 instrumentation is switched on (untimed) around its own block only."""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()

    def instrument() -> None:
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )

    def ours_call(client: LlamaCppClient) -> Callable[[], object]:
        return lambda: client.chat.completions.create(messages=MESSAGES, max_tokens=1)

    def sdk_call() -> object:
        return sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]

    candidates: dict[str, tuple[Callable[[], object], Callable[[], None], Callable[[], None]]] = {
        "ours": (ours_call(ours), lambda: None, lambda: None),
        "ours + telemetry": (ours_call(traced), lambda: None, lambda: None),
        "openai SDK": (sdk_call, lambda: None, lambda: None),
        "openai SDK + openai-v2": (sdk_call, instrument, instrumentor.uninstrument),
    }
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(args.rounds + 1):  # the first round warms up
        names = list(candidates) if round_index % 2 == 0 else list(candidates)[::-1]
        for name in names:
            call, before, after = candidates[name]
            before()
            started = time.process_time()
            for _ in range(args.calls):
                call()
            spent = (time.process_time() - started) / args.calls
            after()
            if round_index:
                cpu[name].append(spent)
    median = {name: statistics.median(values) * 1e6 for name, values in cpu.items()}
    print(f"\nCPU per call (max_tokens=1), {args.rounds} rounds of {args.calls}")
    for name, micros in median.items():
        print(f"  {name:<24} {micros:8.1f} µs per call")
    ours_added = median["ours + telemetry"] - median["ours"]
    v2_added = median["openai SDK + openai-v2"] - median["openai SDK"]
    print(f"  telemetry added per call: ours {ours_added:.1f} µs, openai-v2 {v2_added:.1f} µs")
    verdicts(("per call, our telemetry / openai-v2's", ours_added / v2_added, 0.5))


async def concurrent_streams(url: str, args: Any) -> None:
    """Chunks per CPU-second with ``--concurrent`` streams in flight at once."""
    tokens = 64
    body = {"messages": MESSAGES, "max_tokens": tokens, "stream": True, "ignore_eos": True}
    raw = httpx.AsyncClient(limits=httpx.Limits(max_connections=args.concurrent), timeout=600)
    ours = AsyncLlamaCppClient(url, max_connections=args.concurrent)

    async def raw_stream() -> int:
        n = 0
        headers = {"Connection": "close"}
        async with raw.stream(
            "POST", url + "/v1/chat/completions", json=body, headers=headers
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
                    n += 1
        return n

    async def ours_stream() -> int:
        stream = await ours.chat.completions.create(
            messages=MESSAGES, max_tokens=tokens, stream=True, ignore_eos=True
        )
        return len([chunk async for chunk in stream])

    rates: dict[str, list[float]] = {"raw httpx.AsyncClient": [], "AsyncLlamaCppClient": []}
    jobs = dict(zip(rates, (raw_stream, ours_stream), strict=True))
    for round_index in range(args.rounds + 1):
        for name in list(jobs) if round_index % 2 == 0 else list(jobs)[::-1]:
            job = jobs[name]
            started = time.process_time()
            chunks = sum(await asyncio.gather(*(job() for _ in range(args.concurrent))))
            if round_index:
                rates[name].append(chunks / (time.process_time() - started))
    await raw.aclose()
    await ours.aclose()
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{args.concurrent} concurrent async streams of {tokens} tokens, {args.rounds} rounds")
    for name, rate in median.items():
        print(f"  {name:<24} {rate:9.0f} chunks per CPU-second")
    ratio = median["AsyncLlamaCppClient"] / median["raw httpx.AsyncClient"]
    print(f"  async chunks per CPU-second, ours / raw     {ratio:8.3f}   target >= 1.00   "
          f"{'OK' if ratio >= 1.0 else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
