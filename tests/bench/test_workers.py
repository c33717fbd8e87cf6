"""The load spread over worker processes (`Workers`, ``bench --workers``), against the
exact-time server: the records merge as one process would number them, every request's
start is on the run's one clock whichever process sent it, sessions keep their turns,
progress hears of every request, a worker that dies fails the run instead of hanging
it, and the options refuse what cannot work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from llamatelemetry.bench import (
    Arrivals,
    RequestRecord,
    RunResult,
    SyntheticPrompts,
    Workload,
    open_client,
    run_load,
)
from llamatelemetry.bench._load import START_MARGIN, Plan
from llamatelemetry.bench._records import UNFINISHED
from llamatelemetry.bench._workers import Workers
from llamatelemetry.testing._exact_server import ExactTimeServer

TOKENS = 4


@pytest.fixture(scope="module")
def exact() -> Iterator[ExactTimeServer]:
    with ExactTimeServer(ttft=0.02, itl=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def workers(exact: ExactTimeServer) -> Iterator[Workers]:
    pool = Workers(2, exact.url, None, 64, 60.0)
    try:
        yield pool
    finally:
        pool.close()


def run(
    url: str,
    pool: Workers | None,
    concurrency: int | None = None,
    heard: list[RequestRecord] | None = None,
    began: list[float] | None = None,
    **options: object,
) -> RunResult:
    options_ = dict(options)
    arrivals = options_.pop("arrivals", None)

    async def go_() -> RunResult:
        async with open_client(url, concurrency=64) as client:
            workload = Workload(
                SyntheticPrompts(16, seed=1), max_tokens=TOKENS, warmup=0,
                **{"requests": 32, **options_},  # type: ignore[arg-type]
            )  # fmt: skip
            return await run_load(
                client, workload, concurrency, arrivals=arrivals,  # type: ignore[arg-type]
                workers=pool, on_request=None if heard is None else heard.append,
                on_start=None if began is None else lambda: began.append(time.perf_counter()),
            )  # fmt: skip

    return asyncio.run(go_())


def test_two_workers_merge_into_one_run_on_one_clock(
    exact: ExactTimeServer, workers: Workers
) -> None:
    exact.records(clear=True)
    heard: list[RequestRecord] = []
    began: list[float] = []
    result = run(exact.url, workers, 16, heard, began)
    truth = exact.records(clear=True)
    assert result.workers == 2 and result.completed == result.requests == 32
    assert [r.index for r in result.records] == list(range(32))
    assert sorted(r.index for r in heard) == list(range(32))  # progress heard of each
    assert {r.response_id for r in result.records} == set(truth)
    # Every start is on the run's clock, whichever process sent it: the server's arrival
    # stamp minus the start is the run's origin, the workers' head start after it began
    # (a worker on a clock of its own would be off by most of the head start).
    origins = [truth[r.response_id].arrived - r.started for r in result.records]
    expected = began[0] + START_MARGIN
    assert all(expected - 0.002 < origin < expected + 0.01 for origin in origins), (
        expected, origins)  # fmt: skip
    for record in result.records:
        assert record.ttft is not None
        assert record.ttft >= truth[record.response_id].ttft - 1e-4  # never early
    assert result.delays and result.cpu_seconds is not None and result.cpu_seconds > 0


def test_sessions_keep_their_turns_and_numbers_across_workers(
    exact: ExactTimeServer, workers: Workers
) -> None:
    result = run(exact.url, workers, 4, requests=6, turns=3)
    assert result.completed == 18
    for record in result.records:
        assert record.session is not None and record.turn is not None
        assert record.index == record.session * 3 + record.turn
    assert {r.session for r in result.records} == set(range(6))
    assert all(r.history_tokens > 0 for r in result.records if r.turn)


def test_an_open_loop_run_keeps_its_schedule_across_workers(
    exact: ExactTimeServer, workers: Workers
) -> None:
    arrivals = Arrivals(40.0, duration=0.5, seed=3)
    result = run(exact.url, workers, None, arrivals=arrivals)
    assert result.completed == result.requests > 5
    scheduled = [r.scheduled for r in result.records]
    assert scheduled == sorted(scheduled)  # numbered in schedule order, as one process does
    assert all(r.lag is not None and r.lag < 0.2 for r in result.records)


def test_a_plan_is_shared_out_whole() -> None:
    workload = Workload(["x"], requests=1, turns=2)
    items = [[{"role": "user", "content": str(i)}] for i in range(14)]
    plan = Plan(workload, items, list(range(7)), [0.1 * i for i in range(7)], 5, None)  # type: ignore[arg-type]
    shares = [plan.share(part, 3) for part in range(3)]
    assert sorted(n for s in shares for n in s.sessions) == list(range(7))
    assert sum(s.cap or 0 for s in shares) == 5
    for share in shares:
        for k, number in enumerate(share.sessions):
            assert share.items[2 * k : 2 * k + 2] == items[2 * number : 2 * number + 2]
            assert share.schedule is not None and share.schedule[k] == 0.1 * number


def test_a_worker_that_dies_fails_the_run(exact: ExactTimeServer) -> None:
    pool = Workers(2, exact.url, None, 8, 60.0)
    try:
        pool._processes[1].kill()  # noqa: SLF001 - the test's own doing
        pool._processes[1].wait()  # noqa: SLF001
        with pytest.raises(RuntimeError, match="worker process ended before the run"):
            run(exact.url, pool, 4)
    finally:
        pool.close()


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workers", "0"), "0 is not within 1..256"),
        (("--workers", "many"), "'many' is not a number of workers nor 'auto'"),
        (("--workers", "2", "--otlp-endpoint", "http://127.0.0.1:4318"),
         "--workers other than 1 sends from worker processes"),
    ],
)  # fmt: skip
def test_workers_options_that_cannot_work_are_refused(args: tuple[str, ...], says: str) -> None:
    done = bench("--url", "http://127.0.0.1:9", *args)
    assert done.returncode == 2 or done.returncode == 1, done.stderr
    assert says in " ".join(done.stderr.split()), done.stderr


def test_bench_workers_from_the_command_line(exact: ExactTimeServer, tmp_path: object) -> None:
    prompts = f"{tmp_path}/prompts.jsonl"
    with open(prompts, "w") as file:
        file.writelines(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(8))
    done = bench("--url", exact.url, "--prompts-file", prompts, "-n", "24", "-c", "8",
                 "--max-tokens", str(TOKENS), "--workers", "2", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["config"]["workers"] == 2
    [level] = report["runs"]
    assert level["completed"] == 24 and level["generator"]["workers"] == 2
    assert level["generator"]["delay_ms"]["count"] >= 1


def test_requests_that_never_end_come_back_from_the_workers_too() -> None:
    """A server slower than the run's grace: every request is still in flight when the
    run stops waiting. The workers report none as it ends, and still hand every one
    back, unfinished, in its place."""
    with ExactTimeServer(ttft=5.0, itl=0.0) as slow:
        pool = Workers(2, slow.url, None, 16, 60.0)
        try:
            arrivals = Arrivals(20.0, duration=0.3, grace=0.3, seed=1)
            heard: list[RequestRecord] = []
            result = run(slow.url, pool, None, heard, arrivals=arrivals)
        finally:
            pool.close()
    assert result.requests > 2 and [r.index for r in result.records] == list(range(result.requests))
    assert heard == [] and result.unfinished == result.requests
    assert {r.error_type for r in result.records} == {UNFINISHED}
