"""``bench`` against servers that misbehave on purpose: one that trickles its answer
forever (``--timeout`` bounds a whole request, ``--duration`` a whole open-loop level),
one that answers with nothing (an empty answer is an error, never goodput), and schedules
the arrivals' sampler cannot represent (refused before they are planned).

Time bounds here are guards against a hang, never measurements.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.bench import (
    SLO,
    Arrivals,
    SyntheticPrompts,
    Workload,
    _schedule,
    arrival_times,
    open_client,
    run_load,
)
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest, sse

from ..replies import CHAT
from .test_load import dead_url, invoke

#: A streamed chunk with one token of text.
TOKEN = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
}
#: One token every half second, for about an hour: a server that never ends its answer.
TRICKLE = Reply(200, chunks=sse(*[TOKEN] * 7200, done=False), chunk_delay=0.5)
#: The error types of an answer without a token, and of a request a level's end cut short.
EMPTY_ANSWER, UNFINISHED = "EmptyAnswer", "Unfinished"
#: The burstiness the arrivals accept, and the most requests one schedule may hold.
MIN_BURSTINESS, MAX_BURSTINESS, MAX_ARRIVALS = 0.02, 1e6, 1_000_000
#: Seconds a run that must end on its own is given before the test calls it a hang.
HANG_GUARD = 30.0


def chat_only(reply: Reply) -> Any:
    """A server that answers chat with ``reply`` and anything else (the template probes)
    with 404, so that a run needs nothing but chat."""

    def answer(request: SeenRequest) -> Reply:
        if request.path.startswith("/v1/chat/completions"):
            return reply
        return Reply(404, {"error": {"code": 404, "message": "no", "type": "not_found_error"}})

    return answer


@pytest.fixture()
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Say something."}\n', encoding="utf-8")
    return path


def bench_process(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``llamatelemetry bench ARGS --json`` in a child process that must end by itself within
    `HANG_GUARD` seconds (else the test fails, and the child is killed)."""
    import time

    command = [sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench"]
    began = time.monotonic()
    try:
        done = subprocess.run(
            [*command, *args, "--json", "--scrape-interval", "0", "--warmup", "0"],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"bench {' '.join(args)} was still running after {HANG_GUARD:g} s")
    return done, time.monotonic() - began


# -- 1: --timeout bounds a whole request; --duration a whole level -------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("-n", "1", "--timeout", "1"),
        ("--rate", "2", "--duration", "2", "--timeout", "1", "--seed", "3"),
    ],
    ids=["closed-loop", "open-loop"],
)
def test_timeout_ends_a_request_the_server_trickles_forever(
    prompts_file: Path, args: tuple[str, ...]
) -> None:
    with FaultServer(chat_only(TRICKLE)) as server:
        done, took = bench_process("--url", server.url, "--prompts-file", str(prompts_file), *args)
    assert done.returncode == 1, done.stderr  # every request failed
    assert "failed" in done.stderr and "timeout" in done.stderr
    [run] = json.loads(done.stdout)["runs"]
    assert run["requests"] >= 1 and run["completed"] == 0
    assert run["error_types"] == {"APITimeoutError": run["requests"]}
    assert all(1.0 <= r["e2e_ms"] / 1000 < 1.0 + 5.0 for r in run["per_request"])
    print(f"{args}: {run['requests']} requests, each failed after --timeout; run took {took:.1f} s")


async def test_a_duration_ends_its_level_and_counts_what_was_still_in_flight() -> None:
    """The client would wait an hour for each answer; the level still ends its grace after
    its duration, and says which requests it cut short and which it never sent."""
    arrivals = Arrivals(8.0, duration=0.5, grace=0.5, seed=4)
    due = len(arrival_times(arrivals))
    assert due >= 3
    with FaultServer(chat_only(TRICKLE)) as server:
        async with open_client(server.url, concurrency=64, timeout=3600.0) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=1, warmup=0,
                                max_concurrency=2)  # fmt: skip
            result = await asyncio.wait_for(run_load(client, workload, arrivals=arrivals),
                                            HANG_GUARD)  # fmt: skip
    assert result.requests == due and result.completed == 0
    assert result.unfinished == due and result.error_types() == {UNFINISHED: due}
    in_flight = [r for r in result.records if r.error and "in flight" in r.error]
    never_sent = [r for r in result.records if r.error and "never sent" in r.error]
    assert len(in_flight) == 2 and len(never_sent) == due - 2  # --max-concurrency 2
    assert result.duration == pytest.approx(1.0, abs=0.5)  # duration + grace, not an hour
    data = result.to_dict()
    assert data["unfinished"] == due and data["errors"] == due
    assert data["arrivals"]["grace"] == 0.5
    print(f"{due} requests due in 0.5 s, cut at {result.duration:.2f} s: "
          f"{len(in_flight)} in flight, {len(never_sent)} never sent")  # fmt: skip


async def test_requests_that_end_within_the_grace_are_not_cut() -> None:
    with FaultServer(Reply(200, CHAT, delay=0.3)) as server:
        async with open_client(server.url, concurrency=64) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=1, stream=False, warmup=0)
            arrivals = Arrivals(20.0, duration=0.5, grace=5.0, seed=4)
            result = await run_load(client, workload, arrivals=arrivals)
    assert result.requests == len(arrival_times(arrivals)) and result.unfinished == 0
    assert result.completed == result.requests


# -- 8: an empty answer is an error of its own, never goodput ------------------------------


NO_TOKENS = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
EMPTY_STREAMS = {
    "done-only": Reply(200, chunks=[b"data: [DONE]\n\n"]),
    "role-and-usage": Reply(
        200,
        chunks=sse(
            {**TOKEN, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
            {**TOKEN, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**TOKEN, "choices": [], "usage": NO_TOKENS},
        ),
    ),
}
EMPTY_REPLIES = {
    "no-choices": Reply(200, {**CHAT, "choices": []}),
    "empty-content": Reply(200, {**CHAT, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
    ], "usage": NO_TOKENS}),
}  # fmt: skip


@pytest.mark.parametrize(
    ("stream", "reply"),
    [(True, r) for r in EMPTY_STREAMS.values()] + [(False, r) for r in EMPTY_REPLIES.values()],
    ids=[*EMPTY_STREAMS, *EMPTY_REPLIES],
)
async def test_an_answer_without_a_token_is_an_error_not_goodput(
    stream: bool, reply: Reply
) -> None:
    with FaultServer(chat_only(reply)) as server:
        async with open_client(server.url, concurrency=4) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=6, stream=stream, warmup=0)
            result = await run_load(client, workload, 2)
    assert result.completed == 0 and result.error_types() == {EMPTY_ANSWER: 6}
    assert all(r.error and "no output token" in r.error for r in result.records)
    attained = SLO(e2e=10.0).evaluate(result)
    assert attained.goodput == 0.0 and attained.share == 0.0
    assert result.to_dict()["error_types"] == {EMPTY_ANSWER: 6}


def test_the_command_line_counts_empty_answers_as_errors(prompts_file: Path) -> None:
    with FaultServer(chat_only(EMPTY_STREAMS["done-only"])) as server:
        result = invoke("--url", server.url, "--prompts-file", str(prompts_file), "-n", "3",
                        "--warmup", "0", "--scrape-interval", "0", "--slo", "e2e=10s",
                        "--json")  # fmt: skip
    assert result.exit_code == 1
    [run] = json.loads(result.stdout)["runs"]
    assert run["completed"] == 0 and run["error_types"] == {EMPTY_ANSWER: 3}
    assert run["slo"]["goodput"] == 0.0
    assert "no output token" in result.stderr


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, chunks=sse(TOKEN)),
        # a token the server counts but holds back (an incomplete UTF-8 byte) is one too
        Reply(
            200,
            chunks=sse({**TOKEN, "choices": [], "usage": {**NO_TOKENS, "completion_tokens": 1}}),
        ),
    ],
    ids=["one-token", "counted-token"],
)
async def test_an_answer_of_one_token_is_still_a_success(reply: Reply) -> None:
    with FaultServer(chat_only(reply)) as server:
        async with open_client(server.url) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=2, warmup=0)
            result = await run_load(client, workload, 1)
    assert result.completed == 2 and result.output_tokens == 2


# -- 9: burstiness within what the gamma sampler represents --------------------------------


def test_a_burstiness_the_sampler_cannot_represent_is_refused() -> None:
    for shape in (1e-10, 0.001, MIN_BURSTINESS / 2):
        with pytest.raises(ValueError, match="gaps of exactly 0"):
            Arrivals(1.0, burstiness=shape, duration=1.0)
    with pytest.raises(ValueError, match="constant"):
        Arrivals(1.0, burstiness=MAX_BURSTINESS * 10)
    Arrivals(1.0, burstiness=MIN_BURSTINESS)  # the bounds themselves are fine
    Arrivals(1.0, burstiness=MAX_BURSTINESS)


@pytest.mark.parametrize(
    ("rate", "shape"),
    [
        (5e-324, 0.5),  # rate × shape rounds to 0: the gaps' scale would divide by zero
        (1e-310, MIN_BURSTINESS),  # a scale past the largest float: every gap infinite
        (1e-310, 1.0),
        (5e-324, 1.0),
    ],
)
def test_a_rate_whose_gaps_no_float_holds_is_refused(rate: float, shape: float) -> None:
    with pytest.raises(ValueError, match="rate") as refused:
        Arrivals(rate, burstiness=shape)
    assert "gap" in str(refused.value)
    with pytest.raises(ValueError, match="rate"):
        Arrivals(rate, burstiness=shape, duration=1.0)


def test_a_schedule_never_holds_an_infinite_time() -> None:
    """A rate just low enough for a finite scale can still draw a gap (or, ramped up, a
    time) past the largest float: the schedule is refused, never slept on forever."""
    for arrivals in (
        Arrivals(1e-308, burstiness=1.0, seed=1),
        Arrivals(1e-300, burstiness=1.0, ramp_up=1e300, seed=1),
    ):
        with pytest.raises(ValueError, match="finite"):
            arrival_times(arrivals, 50)
    times = arrival_times(Arrivals(1e-6, burstiness=MIN_BURSTINESS, seed=1), 50)
    assert all(math.isfinite(t) and t >= 0 for t in times)  # low, but representable


@pytest.mark.parametrize("shape", ["1e-10", "0.001"])
def test_the_command_line_refuses_it_before_planning(shape: str) -> None:
    done, _ = bench_process("--url", dead_url(), "--rate", "1", "--duration", "1",
                            "--burstiness", shape)  # fmt: skip
    assert done.returncode == 2, done.stderr  # a usage error: nothing was sent
    assert "--burstiness" in done.stderr and "exactly 0" in done.stderr


@pytest.mark.parametrize("shape", [MIN_BURSTINESS, 0.05, 0.25, 1.0, 4.0, 1e3, MAX_BURSTINESS])
def test_a_schedule_keeps_the_asked_for_mean_rate(shape: float) -> None:
    """Gaps of gamma(shape) have a coefficient of variation of 1/sqrt(shape): the mean of n
    of them is off by 1/sqrt(shape * n) relatively, one standard error. Four of them is the
    tolerance; the seed is fixed."""
    rate, n = 50.0, 200_000
    times = arrival_times(Arrivals(rate, burstiness=shape, seed=7), n)
    measured = n / times[-1]
    tolerance = 4 / math.sqrt(shape * n)
    assert measured == pytest.approx(rate, rel=tolerance)
    # With a duration: the count of a renewal process over it has a variance of about
    # expected / shape.
    duration = 4000.0
    counted = len(arrival_times(Arrivals(rate, burstiness=shape, duration=duration, seed=8)))
    expected = rate * duration
    assert abs(counted - expected) <= 4 * math.sqrt(expected / shape)
    print(f"burstiness {shape:g}: mean rate {measured:.3f} req/s over {n} gaps "
          f"(asked {rate:g}, tolerance ±{tolerance:.2%}); {counted} in {duration:g} s "
          f"(expected {expected:g})")  # fmt: skip


def test_planning_a_duration_always_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="requests"):
        Arrivals(1e5, duration=1e6)  # 1e11 requests: refused, not planned
    too_many = int(MAX_ARRIVALS / 10)
    Arrivals(float(too_many), duration=10.0)  # just within
    # The bound also holds where a bursty schedule draws more than its share.
    with monkeypatch.context() as patched:
        patched.setattr(_schedule, "MAX_ARRIVALS", 50, raising=False)
        with pytest.raises(ValueError, match="more than 50"):
            arrival_times(Arrivals(4.0, burstiness=MIN_BURSTINESS, duration=12.0, seed=0))
    # At the lowest burstiness, a schedule for a duration is planned, gaps and all.
    times = arrival_times(Arrivals(100.0, burstiness=MIN_BURSTINESS, duration=100.0, seed=1))
    assert times == sorted(times) and all(0 <= t < 100.0 for t in times)
    assert statistics.fmean(b - a for a, b in zip(times, times[1:], strict=False)) > 0


# -- 10: a rate too low for its duration schedules nothing, and says so ----------------------


def test_a_run_with_nothing_scheduled_says_so(prompts_file: Path) -> None:
    assert not arrival_times(Arrivals(0.01, duration=1.0, seed=2))  # the seed used below
    with FaultServer(chat_only(Reply(200, CHAT))) as server:
        result = invoke("--url", server.url, "--prompts-file", str(prompts_file), "--rate",
                        "0.01", "--duration", "1", "--seed", "1", "--scrape-interval", "0",
                        "--warmup", "0")  # fmt: skip
        assert not [r for r in server.requests if r.path.startswith("/v1/chat")]
    assert result.exit_code == 1
    assert "no request was scheduled" in result.stderr
    assert "failed" not in result.stderr
