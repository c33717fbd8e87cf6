"""Throughput of several llama-servers behind nginx (``deploy/nginx.conf``) against one of
them alone, as ``llamatelemetry bench`` measures it through each; with ``--keepalive``,
also nginx with the upstream keep-alive pool that ``deploy/nginx.conf`` leaves out, and
with ``--max-conns``, nginx allowing each server only as many connections as it has slots:
both count the requests they lose.

    python benchmarks/bench_fleet.py [--servers 3] [--rounds 2] [-n 96] [--concurrency 6]
        [--max-tokens 64] [--keepalive] [--max-conns]

Every server runs the tiny model with 2 slots and 1 thread; the rounds alternate the
candidates in turn, each run a fresh bench process with fresh prompts. Needs nginx
(Debian's ``nginx-light``; ``python -m tests`` installs it as root). No target: what N
servers give depends on the cores there are for them (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from _harness import machine

from llamatelemetry.server import ServerManager
from llamatelemetry.testing import start_chat_server

ROOT = Path(__file__).resolve().parents[1]
SBIN = "/usr/sbin:/sbin"
SLOTS = 2


def nginx_conf(
    folder: Path, listen: int, upstreams: list[str], keepalive: bool, max_conns: bool
) -> None:
    """deploy/nginx.conf with these servers (as the deployment page's sed makes it), inside
    a main configuration of its own; with ``keepalive``, an upstream connection pool; with
    ``max_conns``, at most as many connections to a server as it has slots."""
    snippet = (ROOT / "deploy" / "nginx.conf").read_text()
    line = re.search(r"(?m)^( *)server llama-1:8080( [^;]*;)\n", snippet)
    assert line, "deploy/nginx.conf no longer names llama-1:8080 as expected"
    limit = f" max_conns={SLOTS}" if max_conns else ""
    servers = "".join(f"{line[1]}server {u}{limit}{line[2]}\n" for u in upstreams)
    snippet = re.sub(r"(?m)^ *server llama-\d+:8080[^;]*;\n", "", snippet)
    snippet = snippet.replace("    least_conn;\n", "    least_conn;\n" + servers, 1)
    snippet = snippet.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    if keepalive:
        snippet = snippet.replace("    least_conn;\n", "    least_conn;\n    keepalive 32;\n", 1)
        snippet = snippet.replace(
            "proxy_http_version 1.1;",
            'proxy_http_version 1.1;\n        proxy_set_header Connection "";',
        )
    folder.mkdir()
    (folder / "llama.conf").write_text(snippet)
    temp = "".join(
        f"    {kind}_temp_path {kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = f"pid nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n{temp}"
    main += "    include llama.conf;\n}\n"
    (folder / "nginx.conf").write_text(main)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


def bench(url: str, requests: int, concurrency: int, max_tokens: int) -> dict[str, float]:
    """One `llamatelemetry bench` run through ``url``, in a process of its own."""
    command = [sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench",
               "--url", url, "-n", str(requests), "--concurrency", str(concurrency),
               "--max-tokens", str(max_tokens), "--warmup", "0", "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    [run] = json.loads(done.stdout)["runs"]
    return {
        "requests/s": run["request_throughput"],
        "tokens/s": run["output_throughput"],
        "errors": run["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", "--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--keepalive", action="store_true", help="also nginx with keepalive 32")
    parser.add_argument(
        "--max-conns", action="store_true", help="also nginx with max_conns = slots per server"
    )
    args = parser.parse_args()
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:{SBIN}")
    if nginx is None:
        raise SystemExit("needs nginx (Debian's nginx-light)")

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers: list[ServerManager] = [
            stack.enter_context(start_chat_server(root / f"s{i}", n_parallel=SLOTS, n_threads=1))
            for i in range(args.servers)
        ]
        upstreams = [s.url.split("//")[1] for s in servers]
        candidates = {"one server": servers[0].url}
        variants = {"nginx": (False, False)}
        if args.keepalive:
            variants["nginx + keepalive"] = (True, False)
        if args.max_conns:
            variants[f"nginx + max_conns={SLOTS}"] = (False, True)
        for name, (keepalive, max_conns) in variants.items():
            port = free_port()
            folder = root / re.sub(r"\W+", "-", name)
            nginx_conf(folder, port, upstreams, keepalive, max_conns)
            process = subprocess.Popen(
                [
                    nginx,
                    "-p",
                    str(folder),
                    "-c",
                    "nginx.conf",
                    "-e",
                    "error.log",
                    "-g",
                    "daemon off;",
                ]
            )
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            candidates[f"{args.servers} servers, {name}"] = f"http://127.0.0.1:{port}"
            wait_for(f"http://127.0.0.1:{port}/health")

        runs: dict[str, list[dict[str, float]]] = {name: [] for name in candidates}
        for round_index in range(args.rounds):
            order = list(candidates) if round_index % 2 == 0 else list(candidates)[::-1]
            for name in order:
                runs[name].append(
                    bench(candidates[name], args.requests, args.concurrency, args.max_tokens)
                )

    print(f"\n{machine()}, {os.cpu_count()} cores; bench -n {args.requests} --concurrency "
          f"{args.concurrency} --max-tokens {args.max_tokens}, {args.rounds} rounds; "
          f"every server {SLOTS} slots, 1 thread")  # fmt: skip
    base = statistics.median(r["requests/s"] for r in runs["one server"])
    print(f"  {'':<32} {'requests/s':>18} {'tokens/s':>18} {'errors':>10} {'ratio':>6}")
    for name, results in runs.items():
        rate = [r["requests/s"] for r in results]
        tokens = [r["tokens/s"] for r in results]
        errors = [int(r["errors"]) for r in results]
        spans = f"{min(rate):8.1f}–{max(rate):<8.1f} {min(tokens):8.0f}–{max(tokens):<8.0f}"
        ratio = statistics.median(rate) / base
        print(f"  {name:<32} {spans} {'/'.join(map(str, errors)):>10} {ratio:6.2f}")


if __name__ == "__main__":
    main()
