"""``bench``'s workload through Locust's distributed mode: a master and two workers on
this machine load the real tiny-model server for a few seconds, and the master writes one
``bench`` report of every request they measured (client and server TTFT, TPOT, cached
tokens), which agrees with Locust's own count, and which ``bench --baseline`` compares
with a run of its own; ``--llama-html`` writes the page."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from llamatelemetry.server import ServerManager

from .test_load import ok_json

TOKENS = 6
DOCS = Path(__file__).parents[2] / "docs" / "benchmarks.md"


def documented_locustfile() -> str:
    """The locustfile the Benchmarks page shows (in a text fence: a docs test that ran it
    in its own process would let Locust's gevent patch that process)."""
    section = DOCS.read_text().split("### Beyond one machine: Locust", 1)[1]
    body = section.split("```text\n", 1)[1].split("```", 1)[0]
    assert "LlamaCppUser" in body
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_master_and_two_workers_write_one_bench_report(
    chat_server: ServerManager, tmp_path: Path
) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(documented_locustfile())
    port, report, page = free_port(), tmp_path / "report.json", tmp_path / "report.html"
    base = [sys.executable, "-m", "locust", "-f", str(locustfile)]
    ours = ["--llama-max-tokens", str(TOKENS), "--llama-ignore-eos", "--llama-prompt-words", "12"]
    master = subprocess.Popen(
        [*base, "--master", "--headless", "-u", "4", "-r", "4", "-t", "3s",
         "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--host", chat_server.url, "--stop-timeout", "10",
         "--json-file", str(tmp_path / "locust"), "--llama-report", str(report),
         "--llama-html", str(page), *ours],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    workers = [
        subprocess.Popen(
            [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *ours],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        output, _ = master.communicate(timeout=90)
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    assert master.returncode == 0, output[-3000:]
    data = json.loads(report.read_text())
    [run] = data["runs"]
    assert run["concurrency"] == 4 and run["generator"]["workers"] == 2
    assert run["requests"] == run["completed"] > 8
    for request in run["per_request"]:
        assert request["output_tokens"] == TOKENS
        # (a gevent user may read all of a fast answer at once: a TPOT of 0 is possible)
        assert request["ttft_ms"] > 0 and request["tpot_ms"] >= 0
        assert request["server_ttft_ms"] > 0 and request["cached_tokens"] is not None
    starts = [r["start_ms"] for r in run["per_request"]]
    assert starts == sorted(starts) and starts[0] == 0.0
    # Locust counted what we did (its final figures: its CSV is only written each second),
    # but for the requests in flight when the master quit: it waits half a second for its
    # workers' last figures, and a request ending then may reach it in ours or its own, or
    # neither (one per user at most)
    [chat] = [e for e in json.loads((tmp_path / "locust.json").read_text()) if e["name"] == "chat"]
    assert abs(chat["num_requests"] - run["requests"]) <= 4
    assert page.read_text().startswith("<!doctype html>")
    # A bench run of its own, at the same concurrency, compares with it.
    compared = ok_json("--url", chat_server.url, "-n", "8", "-c", "4", "--max-tokens",
                       str(TOKENS), "--ignore-eos", "--prompt-tokens", "16",
                       "--scrape-interval", "0", "--baseline", str(report))  # fmt: skip
    changes = compared["comparison"]["changes"]
    assert {c["level"] for c in changes} == {"concurrency 4"} and len(changes) == 5


def test_a_locust_run_of_rerank_writes_its_report(
    rerank_server: ServerManager, tmp_path: Path
) -> None:
    """Another endpoint, Locust on its own (no workers): every request is a rerank, named
    so in Locust's figures, with the server's count of the tokens it read."""
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(documented_locustfile())
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "2",
         "-r", "2", "-t", "2s", "--host", rerank_server.url, "--stop-timeout", "10",
         "--json-file", str(tmp_path / "locust"), "--llama-endpoint", "rerank",
         "--llama-documents", "3", "--llama-prompt-words", "12",
         "--llama-report", str(report)],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["config"]["endpoint"] == "rerank" and data["config"]["documents"] == 3
    [run] = data["runs"]
    assert run["requests"] == run["completed"] > 2
    for request in run["per_request"]:
        assert request["ttft_ms"] is None and request["e2e_ms"] > 0
        assert request["prompt_tokens"] > 0
    # Locust's final figures (its CSV, written each second, may miss the last requests)
    stats = json.loads((tmp_path / "locust.json").read_text())
    [rerank] = [entry for entry in stats if entry["name"] == "rerank"]
    assert rerank["num_requests"] == run["requests"]


def test_options_bench_would_refuse_stop_locust_before_it_sends(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(documented_locustfile())
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1",
         "-t", "5s", "--host", "http://127.0.0.1:9", "--llama-endpoint", "embeddings",
         "--llama-ignore-eos"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "llamatelemetry: --llama-ignore-eos is for endpoints that generate" in done.stderr
