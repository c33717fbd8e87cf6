"""Speculative decoding on a real model: generated tokens per second with and without
draft-less n-gram speculation, on a repetitive prompt (the model copies a table and goes
on with it) where n-grams have something to find.

    python benchmarks/bench_speculative.py [--rounds 3] [--types ngram-mod,ngram-simple]
        [--model SmolLM2.gguf] [--backend binary|embedded] [--server-path llama-server]

Every configuration runs its own server (one slot, the same threads), and the rounds
interleave them, a fresh prompt each time with ``cache_prompt=False``. Reported: the
server's own generation speed (``timings.predicted_per_second``), the client's wall
clock per request, and the draft acceptance. At temperature 0 the text must be the same
with and without speculation; the script checks it. No target: speculation pays only when
checking a draft costs less than generating it, which depends on the model and the
hardware, so this measures rather than promises.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import machine

from llamatelemetry.server import ServerManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM = "You copy text exactly and then continue its pattern."


def prompt(round_: int) -> list[dict[str, str]]:
    rows = "".join(
        f"row_{i} = compute(row_{i - 1}, weight={i + round_}, bias=0.5, name='row_{i}')\n"
        for i in range(1, 24)
    )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Copy this, then add ten more rows:\n{rows}"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--types", default="ngram-mod,ngram-simple")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--backend", default="auto", choices=["auto", "binary", "embedded"])
    parser.add_argument("--server-path", default=os.environ.get("LLAMA_SERVER_PATH"))
    args = parser.parse_args()
    if args.model is None:
        from tests.models import fetch

        args.model = fetch()

    configurations = ["none", *args.types.split(",")]
    servers: dict[str, ServerManager] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-speculative-"))
    try:
        for name in configurations:
            server = ServerManager(
                port=0, backend=args.backend, server_path=args.server_path, log_dir=log_dir
            )
            extra = {} if name == "none" else {"speculative": name}
            server.start(args.model, n_parallel=1, ctx_size=4096, n_threads=args.threads, **extra)
            servers[name] = server
        speed: dict[str, list[float]] = {n: [] for n in configurations}
        wall: dict[str, list[float]] = {n: [] for n in configurations}
        drafted: dict[str, list[int]] = {n: [] for n in configurations}
        accepted: dict[str, list[int]] = {n: [] for n in configurations}
        for round_ in range(args.rounds):
            texts = {}
            for name in configurations:
                with servers[name].client(timeout=300) as client:
                    started = time.perf_counter()
                    reply = client.chat.completions.create(
                        messages=prompt(round_),
                        max_tokens=args.max_tokens,
                        temperature=0,
                        cache_prompt=False,
                    )
                    wall[name].append(time.perf_counter() - started)
                timings = reply.timings
                assert timings is not None and timings.predicted_per_second is not None
                speed[name].append(timings.predicted_per_second)
                drafted[name].append(timings.draft_n or 0)
                accepted[name].append(timings.draft_n_accepted or 0)
                texts[name] = reply.choices[0].message.content
            same = all(text == texts["none"] for text in texts.values())
            print(f"round {round_ + 1}: same text with and without speculation: {same}")
    finally:
        for server in servers.values():
            server.stop()

    print(f"\nSpeculative decoding, {args.model.name}, {args.max_tokens} tokens, temperature 0,")
    print(f"{args.threads} threads, {args.rounds} rounds; {machine()}")
    base = statistics.median(speed["none"])
    print(f"  {'configuration':<14}{'tok/s (server)':>16}{'ratio':>8}{'wall s':>9}{'accepted':>10}")
    for name in configurations:
        tokens = statistics.median(speed[name])
        share = sum(accepted[name]) / sum(drafted[name]) if sum(drafted[name]) else None
        shown = "-" if share is None else f"{share:.0%}"
        print(
            f"  {name:<14}{tokens:>16.1f}{tokens / base:>8.2f}"
            f"{statistics.median(wall[name]):>9.2f}{shown:>10}"
        )


if __name__ == "__main__":
    main()
