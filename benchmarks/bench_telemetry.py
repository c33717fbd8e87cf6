"""Telemetry overhead: InstrumentedLlamaCppClient with a real SDK pipeline (batch span
processor and periodic metric reader, both exporting OTLP to a local collector in its own
process) against the bare LlamaCppClient, on the same tiny-model llama.cpp server,
interleaved.

    python benchmarks/bench_telemetry.py [--rounds 30] [--ops 50]

Target (issue 5): instrumented / bare <= 1.10 per call and per stream (wall time). The
process's CPU per op is shown too: it includes the SDK's and our background threads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

import httpx
from _harness import Result, compare, machine, report

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Say something."}]


def overhead(what: str, results: dict[str, Result]) -> None:
    bare, instrumented = results["bare"], results["instrumented"]
    print(
        f"  telemetry per {what}: +{(instrumented.median - bare.median) * 1e6:.0f} us wall, "
        f"+{(instrumented.cpu_median - bare.cpu_median) * 1e6:.0f} us process CPU "
        f"(CPU ratio {instrumented.cpu_median / bare.cpu_median:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ops", type=int, default=50)
    parser.add_argument("--stream-tokens", type=int, default=32)
    args = parser.parse_args()

    # The collector runs in its own process, as it would in production: decoding what it
    # receives is its work, not the application's.
    collector = subprocess.Popen(
        [sys.executable, "-m", "llamatelemetry.testing._otlp"], stdout=subprocess.PIPE, text=True
    )
    assert collector.stdout is not None
    collector_url = collector.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp) as server:
        telemetry = setup_telemetry(
            "bench", otlp_endpoint=collector_url, set_global=False
        )  # SDK defaults
        bare = LlamaCppClient(server.url)
        instrumented = InstrumentedLlamaCppClient(
            server.url,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )

        def call(client: LlamaCppClient) -> object:
            return client.chat.completions.create(messages=MESSAGES, max_tokens=1)

        def stream(client: LlamaCppClient) -> object:
            return sum(
                1
                for _ in client.chat.completions.create(
                    messages=MESSAGES, max_tokens=args.stream_tokens, stream=True
                )
            )

        print(f"llamatelemetry telemetry overhead — {machine()}, server {server.url}")
        calls = compare(
            {"bare": lambda: call(bare), "instrumented": lambda: call(instrumented)},
            ops=args.ops,
            rounds=args.rounds,
        )
        r1 = report("non-streamed chat, max_tokens=1", calls, "bare", "<= 1.10")
        overhead("call", calls)
        streams = compare(
            {"bare": lambda: stream(bare), "instrumented": lambda: stream(instrumented)},
            ops=max(args.ops // 5, 5),
            rounds=args.rounds,
            warmup=5,
        )
        r2 = report(f"streamed chat, {args.stream_tokens} tokens", streams, "bare", "<= 1.10")
        overhead("stream", streams)
        telemetry.force_flush()
        print(f"\nexported spans: {httpx.get(collector_url).json()['spans']}")
        print(
            f"verdict: per call {r1:.3f} {'OK' if r1 <= 1.10 else 'OVER'}, "
            f"per stream {r2:.3f} {'OK' if r2 <= 1.10 else 'OVER'}"
        )
        telemetry.shutdown()
        bare.close()
        instrumented.close()
    collector.terminate()
    collector.wait()
    collector.stdout.close()


if __name__ == "__main__":
    main()
