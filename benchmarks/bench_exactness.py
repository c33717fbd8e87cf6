"""How exact are a load generator's latencies? ``llamatelemetry bench`` and guidellm, side
by side, against a server whose every token's time is known (`ExactTimeServer`: each
request's arrival from the kernel's receive stamp, each token's write time).

    python benchmarks/bench_exactness.py [--streams 1,32,128,512] [--rounds 3]
                                         [--guidellm /path/to/venv/bin/guidellm]
                                         [--workers N] [--ttft S] [--itl S]

Per request, paired by the answer's id: the generator's TTFT minus the true one (first
token written - request arrived), and its TPOT (mean gap between tokens) minus the true
one. Printed per level and tool: the median and p99 of those errors over all rounds, and
for ``bench`` the delay it reported of itself (p50/p99), its CPU per request, how long
requests waited in it before leaving (p99) and how many were in flight on average: a
generator that cannot keep up sends late, and then measures a lighter load. Both tools
run as their command lines, on the same server, alternating in each round. guidellm runs
with its defaults (one worker process per stream, up to 10), from a prompt file (no
tokenizer needed), with the model named so it asks for no model list. ``--workers N``
adds ``bench --workers N`` (default: as many as this process may use cores) at the levels
of 128 streams and more. ``--ttft`` and ``--itl`` set the server's first-token delay and
gap between tokens (default 0.05 and 0.02 s): a slower server is what hundreds of streams
sharing one GPU see, and it asks less of the generator per stream.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import machine

from llamatelemetry.bench._distribution_summary import percentile
from llamatelemetry.testing._exact_server import ExactRecord, ExactTimeServer

TTFT, ITL, TOKENS = 0.05, 0.02, 16
FLOOR = 0.001  # an error this small has nothing left to fall by


def write_prompts(folder: Path, count: int) -> tuple[Path, Path]:
    ours, theirs = folder / "prompts.jsonl", folder / "guidellm.jsonl"
    with ours.open("w") as a, theirs.open("w") as b:
        for i in range(count):
            text = f"Request {i}: say something."
            a.write(json.dumps({"prompt": text}) + "\n")
            b.write(json.dumps({"prompt": text, "output_tokens_count": TOKENS}) + "\n")
    return ours, theirs


def run_ours(
    url: str, prompts: Path, streams: int, requests: int, workers: int = 1
) -> tuple[list[dict], dict]:
    command = [
        sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench",
        "--url", url,
        "--prompts-file", str(prompts), "-n", str(requests), "-c", str(streams),
        "--max-tokens", str(TOKENS), "--warmup", "0", "--json", "--workers", str(workers),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    [run] = json.loads(done.stdout)["runs"]
    rows = [
        {"id": r["response_id"], "ttft": r["ttft_ms"] / 1000, "tpot": r["tpot_ms"] / 1000}
        for r in run["per_request"]
        if r["ok"]
    ]
    return rows, run["generator"]


def run_guidellm(guidellm: str, url: str, prompts: Path, streams: int, requests: int,
                 out: Path) -> list[dict]:  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL="ERROR")  # fmt: skip
    command = [
        guidellm, "run",
        "--backend", f"kind=openai_http,target={url},model=exact,http2=false",
        "--profile", f"kind=concurrent,streams={streams}",
        "--constraint", f"kind=max_requests,count={requests}",
        "--data", f"kind=json_file,path={prompts}",
        "--output", f"kind=json,path={out}",
        "--disable-console",
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True)
    rows = []
    for bench in json.loads(out.read_text())["benchmarks"]:
        for r in bench["requests"]["successful"]:
            t = r["info"]["timings"]
            n = r["output_tokens"]
            rows.append({
                "id": r["response_id"],
                "ttft": t["first_token_iteration"] - t["request_start"],
                "tpot": (t["last_token_iteration"] - t["first_token_iteration"]) / (n - 1),
            })  # fmt: skip
    return rows


def errors(rows: list[dict], truth: dict[str, ExactRecord]) -> tuple[list[float], list[float]]:
    ttft, tpot = [], []
    for row in rows:
        true = truth.get(row["id"])
        if true is None:
            continue
        ttft.append(row["ttft"] - true.ttft)
        tpot.append(row["tpot"] - (true.writes[-1] - true.writes[0]) / (len(true.writes) - 1))
    return ttft, tpot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,32,128,512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--guidellm", default=shutil.which("guidellm"))
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ttft", type=float, default=TTFT)
    parser.add_argument("--itl", type=float, default=ITL)
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    several = f"bench w{args.workers}"
    tools = ["bench"] + (["guidellm"] if args.guidellm else []) + [several]
    found: dict[tuple[str, int], dict[str, list[float]]] = {}
    server_at = ExactTimeServer(ttft=args.ttft, itl=args.itl)
    with tempfile.TemporaryDirectory() as tmp, server_at as server:
        folder = Path(tmp)
        most = max(max(64, 2 * s) for s in levels)
        ours_prompts, their_prompts = write_prompts(folder, most)
        for round_ in range(args.rounds):
            for streams in levels:
                requests = max(64, 2 * streams)
                order = tools if round_ % 2 == 0 else tools[::-1]
                for tool in order:
                    if tool == several and streams < 128:
                        continue
                    server.records(clear=True)
                    figures = found.setdefault((tool, streams), {})
                    if tool.startswith("bench"):
                        workers = args.workers if tool == several else 1
                        rows, generator = run_ours(
                            server.url, ours_prompts, streams, requests, workers
                        )
                        delay = generator["delay_ms"] or {}
                        figures.setdefault("delay_p50", []).append(delay.get("median", 0.0))
                        figures.setdefault("delay_p99", []).append(delay.get("p99", 0.0))
                        figures.setdefault("cpu_ms", []).append(generator["cpu_per_request_ms"])
                        sent = generator["send_delay_ms"] or {}
                        figures.setdefault("send_p99", []).append(sent.get("p99", 0.0))
                        figures.setdefault("in_flight", []).append(generator["in_flight_mean"])
                    else:
                        out = folder / f"guidellm-{streams}-{round_}.json"
                        rows = run_guidellm(args.guidellm, server.url, their_prompts, streams,
                                            requests, out)  # fmt: skip
                    ttft, tpot = errors(rows, server.records())
                    figures.setdefault("ttft", []).extend(ttft)
                    figures.setdefault("tpot", []).extend(tpot)
                    figures.setdefault("ttft_round", []).append(statistics.median(ttft))
                    figures.setdefault("lost", []).append(requests - len(ttft))
    print(f"\nGenerator error against exact token times (server: TTFT {args.ttft * 1e3:g} "
          f"ms, ITL {args.itl * 1e3:g} ms, {TOKENS} tokens), {args.rounds} rounds; "
          f"{machine()}")  # fmt: skip
    print(f"{'streams':>7} {'tool':<9} {'TTFT err p50':>12} {'(per round)':>22} {'p99':>8} "
          f"{'TPOT err p50':>12} {'p99':>7} {'lost':>5}  "
          "self-reported delay p50/p99, CPU/req; send delay p99, mean in flight")  # fmt: skip
    for streams in levels:
        for tool in tools:
            if (tool, streams) not in found:
                continue
            f = found[(tool, streams)]
            ttft, tpot = sorted(f["ttft"]), sorted(f["tpot"])
            rounds = "/".join(f"{v * 1e3:.2f}" for v in f["ttft_round"])
            extra = ""
            if tool.startswith("bench"):
                extra = (f"  {statistics.median(f['delay_p50']):.2f}/"
                         f"{statistics.median(f['delay_p99']):.2f} ms, "
                         f"{statistics.median(f['cpu_ms']):.2f} ms; send delay p99 "
                         f"{statistics.median(f['send_p99']):.0f} ms, "
                         f"{statistics.median(f['in_flight']):.0f} in flight")  # fmt: skip
            print(f"{streams:>7} {tool:<9} {percentile(ttft, 50) * 1e3:>9.2f} ms {rounds:>22} "
                  f"{percentile(ttft, 99) * 1e3:>8.2f} {percentile(tpot, 50) * 1e3:>9.3f} ms "
                  f"{percentile(tpot, 99) * 1e3:>7.3f} {sum(f['lost']):>5}{extra}")  # fmt: skip
        if ("guidellm", streams) in found:
            ours = percentile(sorted(found[("bench", streams)]["ttft"]), 50)
            theirs = percentile(sorted(found[("guidellm", streams)]["ttft"]), 50)
            verdict = "OK" if ours <= max(theirs, 0.001) else "MISS"
            print(f"{'':>7} median TTFT error bench / guidellm: {ours * 1e3:.2f} / "
                  f"{theirs * 1e3:.2f} ms  target: at most guidellm's (1 ms at 1 stream)  "
                  f"{verdict}")  # fmt: skip
        if (several, streams) in found:
            for q, name in ((50, "median"), (99, "p99")):
                one = percentile(sorted(found[("bench", streams)]["ttft"]), q)
                many = percentile(sorted(found[(several, streams)]["ttft"]), q)
                # (kernel-stamped, the median error sits at the floor, ~0.1 ms, either way)
                verdict = ("OK" if one >= args.workers * many
                           else "at the floor" if max(one, many) <= FLOOR else "MISS")  # fmt: skip
                print(f"{'':>7} {name} TTFT error 1 worker / {args.workers}: {one * 1e3:.2f} / "
                      f"{many * 1e3:.2f} ms = {one / many:.2f}x  target: >= {args.workers}x  "
                      f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
