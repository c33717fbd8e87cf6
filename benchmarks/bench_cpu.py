"""Process CPU per streamed chunk: what each client burns, not how long the server takes.

    python benchmarks/bench_cpu.py [--rounds 5] [--tokens 400] [--streams 3]

Against one tiny-model server in its own process, interleaved round by round, the CPU of
this process (all its threads: exporters and the metric recorder included) per chunk of a
long stream, for:

- raw ``httpx.Client.stream`` + ``iter_lines`` + ``json.loads`` per line (the floor);
- ``LlamaCppClient``; the openai SDK (``openai.OpenAI(base_url=.../v1)``);
- ``InstrumentedLlamaCppClient`` with a real SDK pipeline (batch span processor, periodic
  metric reader, OTLP to a collector in another process): telemetry's added CPU per chunk.

The issue's goals, as ratios: ours ≤ 1.0× raw, ≤ 0.35× openai; telemetry ≤ 5 µs per chunk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable

import httpx
from _harness import compare, machine

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--streams", type=int, default=3, help="streams per candidate a round")
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
            for name, fn in candidates.items():
                chunks_seen[name] = fn()  # also a warm-up
            results = compare(candidates, ops=args.streams, rounds=args.rounds, warmup=1)
            telemetry.shutdown()
    finally:
        collector.terminate()
        collector.wait()
        collector.stdout.close()

    per_chunk = {
        name: result.cpu_median / chunks_seen[name] * 1e6 for name, result in results.items()
    }
    print(f"\nCPU per streamed chunk, {args.tokens}-token streams, {args.rounds} rounds of "
          f"{args.streams}; {machine()}")  # fmt: skip
    for name, micros in per_chunk.items():
        print(f"  {name:<18} {micros:8.1f} µs per chunk  ({chunks_seen[name]} chunks a stream)")
    floor, sdk_cost = per_chunk["raw httpx"], per_chunk["openai SDK"]
    added = per_chunk["ours + telemetry"] - per_chunk["ours"]
    for label, value, op, target in (
        ("per chunk, ours / raw httpx", per_chunk["ours"] / floor, "<=", 1.0),
        ("per chunk, ours / openai SDK", per_chunk["ours"] / sdk_cost, "<=", 0.35),
        ("telemetry added per chunk, µs", added, "<=", 5.0),
    ):
        verdict = "OK" if value <= target else "MISS"
        print(f"  {label:<34} {value:8.3f}   target {op} {target:.2f}   {verdict}")


if __name__ == "__main__":
    main()
