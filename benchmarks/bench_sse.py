"""Stream decoding alone: a real 200-token chat stream is recorded once from the tiny-model
llama.cpp server (the raw bytes, split as the network delivered them), then decoded many
times in memory, ours against the openai SDK's, interleaved.

    python benchmarks/bench_sse.py [--rounds 9] [--ops 200] [--tokens 200]

Two levels, each with the chunks as received and re-split into 16 KiB reads:
- SSE framing: bytes to events. Ours: ``SSEDecoder().feed(chunk)`` per chunk; openai's:
  ``openai._streaming.SSEDecoder().iter_bytes(chunks)``.
- The whole stream: bytes to typed chunks, through each library's own response stream
  (SSE, JSON, error-event checks, model objects). Ours: ``Stream`` over an
  ``httpx.Response``, yielding validated ``ChatCompletionChunk`` models; openai's:
  ``openai.Stream`` over an ``httpx2.Response``, yielding its ``ChatCompletionChunk``
  (built without validation).

Target (issue 7): ours faster (ours / openai MB/s >= 1.00) at both levels.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import httpx
import httpx2
import openai
from _harness import compare, machine
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.types.chat import ChatCompletionChunk as OpenAIChunk

from llamatelemetry.api import SSEDecoder, Stream
from llamatelemetry.api.resources.chat import CHAT_STREAM
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Say something."}]
READ_SIZE = 16 * 1024


def record(url: str, tokens: int) -> list[bytes]:
    """The body of one streamed chat completion, in the pieces the network delivered."""
    body = {
        "messages": MESSAGES,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with (
        httpx.Client(timeout=600, trust_env=False) as http,
        http.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
    ):
        response.raise_for_status()
        return list(response.iter_raw())


def resplit(chunks: list[bytes], size: int) -> list[bytes]:
    data = b"".join(chunks)
    return [data[i : i + size] for i in range(0, len(data), size)]


def verdict(name: str, value: float, op: str, target: float) -> bool:
    good = value <= target if op == "<=" else value >= target
    print(f"  {name:<44} {value:7.3f}   target {op} {target:.2f}   {'OK' if good else 'MISS'}")
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ops", type=int, default=200, help="decodes of the stream per round")
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp) as server:
        received = record(server.url, args.tokens)
    size = sum(map(len, received))
    oai = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="none")  # never called

    def ours_sse(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            decoder = SSEDecoder()
            return sum(len(decoder.feed(chunk)) for chunk in chunks)

        return run

    def openai_sse(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            return sum(1 for _ in OpenAISSEDecoder().iter_bytes(iter(chunks)))

        return run

    def ours_full(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            return len(list(Stream(httpx.Response(200, content=iter(chunks)), CHAT_STREAM)))

        return run

    def openai_full(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            response = httpx2.Response(
                200, content=iter(chunks), request=httpx2.Request("POST", "http://127.0.0.1:9/")
            )
            stream = openai.Stream(cast_to=OpenAIChunk, response=response, client=oai)
            return len(list(stream))

        return run

    splits = {"as received": received, "16 KiB reads": resplit(received, READ_SIZE)}
    print(
        f"llamatelemetry stream decoding — {machine()}; recorded {args.tokens}-token stream: "
        f"{size:,} bytes in {len(received)} network reads"
    )
    ratios: list[tuple[str, float]] = []
    for level, ours, theirs in (
        ("SSE framing", ours_sse, openai_sse),
        ("whole stream to typed chunks", ours_full, openai_full),
    ):
        for split, chunks in splits.items():
            events = {ours(chunks)(), theirs(chunks)()}
            assert len(events) == 1, f"{level}: the decoders disagree: {events}"
            ops = args.ops if level == "SSE framing" else max(args.ops // 10, 5)
            results = compare(
                {"ours": ours(chunks), "openai": theirs(chunks)},
                ops=ops,
                rounds=args.rounds,
                warmup=3,
            )
            ours_mbs = size / results["ours"].median / 1e6
            their_mbs = size / results["openai"].median / 1e6
            print(
                f"\n{level}, {split} ({events.pop()} events)\n"
                f"  llamatelemetry  {ours_mbs:8.1f} MB/s\n"
                f"  openai SDK      {their_mbs:8.1f} MB/s   x{ours_mbs / their_mbs:.2f}"
            )
            ratios.append((f"{level}, {split}", ours_mbs / their_mbs))
    oai.close()
    print("\nverdict (ours / openai MB/s)")
    for name, ratio in ratios:
        verdict(name, ratio, ">=", 1.00)


if __name__ == "__main__":
    main()
