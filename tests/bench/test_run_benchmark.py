"""`run_benchmark` from Python against the real tiny-model server: the report's figures are
what was sent (the tiny model never ends an answer early, so every request generates
exactly ``max_tokens`` tokens, and the server's own counters must agree), the progress
it is given hears of every run and request, and nothing is printed."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from llamatelemetry.bench import (
    Arrivals,
    BenchConfig,
    BenchProgress,
    RequestRecord,
    RunResult,
    run_benchmark,
)
from llamatelemetry.server import ServerManager


class Heard(BenchProgress):
    def __init__(self) -> None:
        self.url: str | None = None
        self.levels: list[tuple[int | None, float | None, int | None]] = []
        self.measuring_ = 0
        self.requests: list[RequestRecord] = []
        self.finished_: list[RunResult] = []

    def server(self, url: str) -> None:
        self.url = url

    def level(self, concurrency: int | None, arrivals: Arrivals | None, total: int | None) -> None:
        self.levels.append((concurrency, None if arrivals is None else arrivals.rate, total))

    def measuring(self) -> None:
        self.measuring_ += 1

    def request(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def finished(self, result: RunResult) -> None:
        self.finished_.append(result)


def predicted(server: ServerManager) -> int:
    """The tokens the server says it generated, in all."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no llamacpp:tokens_predicted_total")


def test_a_benchmark_from_python_reports_what_it_sent(
    chat_server: ServerManager, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    requests, max_tokens, warmup = 6, 4, 1
    config = BenchConfig(
        url=chat_server.url, requests=requests, concurrency=[1, 3], rates=[50.0], seed=3,
        prompt_tokens=24, max_tokens=max_tokens, warmup=warmup, scrape_interval=0.05,
    )  # fmt: skip
    before = predicted(chat_server)
    heard = Heard()
    with caplog.at_level(logging.INFO, logger="llamatelemetry.bench"):
        report = run_benchmark(config, progress=heard)

    assert capsys.readouterr() == ("", "")  # a library: nothing printed
    assert len([r for r in caplog.records if r.name == "llamatelemetry.bench"]) == 3
    runs = report.runs
    assert [(r.concurrency, r.rate) for r in runs] == [(1, None), (3, None), (None, 50.0)]
    for run in runs:
        assert (run.requests, run.completed, run.errors) == (requests, requests, 0)
        assert run.output_tokens == requests * max_tokens
        assert all(r.prompt_tokens and r.prompt_tokens >= 20 for r in run.records)
        assert run.duration > 0 and run.request_throughput > 0
    assert report.requests == report.completed == 3 * requests
    assert report.url == chat_server.url and report.model and report.started_server is None
    # The server generated the measured requests' tokens and the warm-ups', nothing more.
    sent = 3 * (requests + warmup) * max_tokens
    deadline = time.monotonic() + 5  # its counters are updated as each slot is released
    while predicted(chat_server) - before < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predicted(chat_server) - before == sent

    assert heard.url == chat_server.url
    assert heard.levels == [(1, None, requests), (3, None, requests), (None, 50.0, requests)]
    assert heard.measuring_ == 3 and heard.finished_ == list(runs)
    assert len(heard.requests) == 3 * requests and all(r.ok for r in heard.requests)

    data = json.loads(json.dumps(report.to_dict()))  # the --json report, as JSON
    assert data["config"]["concurrency"] == [1, 3] and data["config"]["rates"] == [50.0]
    assert data["config"]["requests"] == requests and data["config"]["prompt_tokens"] == 24
    assert [r["completed"] for r in data["runs"]] == [requests] * 3
    assert data["capacity"] is None and data["slo"] is None


def test_the_progress_counts_every_turn_of_a_session(chat_server: ServerManager) -> None:
    heard = Heard()
    config = BenchConfig(url=chat_server.url, requests=2, turns=3, max_tokens=2,
                         prompt_tokens=8, warmup=0, scrape_interval=0)  # fmt: skip
    run_benchmark(config, progress=heard)
    assert heard.levels == [(1, None, 6)] and len(heard.requests) == 6
