"""The generator's latencies against a server whose every token's time is known
(`ExactTimeServer`: each request's arrival from the kernel's receive stamp, each token's
write time), paired request by request through the answers' ids.

What must hold whatever the machine's load: no reading is early (a request is timed from
before its first byte left, a token from after its bytes came). Where token times are the
event loop's, the delay each run reports of itself bounds how late they are (90 % of the
TTFTs and of all token times read at most its p99 + 1 ms late). Where the kernel stamps
received bytes (Linux), token times are its stamps: at every level, however late the loop
read them, 90 % of the tokens that came in a read of their own (not with the next one,
whose time they would take) are timed within a millisecond of the truth, and no more of
them read later than that than the report counts as read together, and a tenth. At one
stream, on an idle loop, within a millisecond of the truth as well.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from llamatelemetry.api._socket_stream import KERNEL_STAMPS
from llamatelemetry.bench import (
    RequestRecord,
    RunResult,
    SyntheticPrompts,
    Workload,
    open_client,
    run_load,
)
from llamatelemetry.bench._delay_probe import DelayProbe
from llamatelemetry.bench._distribution_summary import percentile
from llamatelemetry.bench._html import write_html
from llamatelemetry.cli._render import _print_run, _warnings
from llamatelemetry.testing._exact_server import ExactRecord, ExactTimeServer

TOKENS = 8
EARLY = 1e-4  # clock conversion and rounding: no reading may be earlier than this


@pytest.fixture(scope="module")
def exact() -> Iterator[ExactTimeServer]:
    with ExactTimeServer(ttft=0.03, itl=0.02) as server:
        yield server


def run(url: str, streams: int) -> RunResult:
    async def go() -> RunResult:
        async with open_client(url, concurrency=streams) as client:
            workload = Workload(
                SyntheticPrompts(16, seed=streams), requests=streams, max_tokens=TOKENS, warmup=0
            )
            return await run_load(client, workload, streams)

    return asyncio.run(go())


def errors(result: RunResult, truth: dict[str, ExactRecord]) -> tuple[list[float], list[float]]:
    """How late each TTFT read, and each token's time counted from the request's start."""
    ttft, tokens = [], []
    for record in result.records:
        assert record.ok, record.error
        assert record.ttft is not None and record.response_id is not None
        true = truth[record.response_id]
        assert len(true.writes) == TOKENS == len(record.itl) + 1
        ttft.append(record.ttft - true.ttft)
        measured = record.ttft
        for k, written in enumerate(true.writes):
            measured += record.itl[k - 1] if k else 0.0
            tokens.append(measured - (written - true.arrived))
    return sorted(ttft), sorted(tokens)


def alone_errors(result: RunResult, truth: dict[str, ExactRecord]) -> list[float]:
    """How late each token read that came in a read of its own (not with the next one:
    a gap to it above 0), from its true write."""
    found = []
    for record in result.records:
        true = truth[record.response_id or ""]
        assert record.ttft is not None and record.read_lag is not None
        sent = true.arrived  # (how late the request left is in no token's error here)
        measured = [record.ttft, *(record.ttft + sum(record.itl[:k]) for k in range(1, TOKENS))]
        for k, written in enumerate(true.writes):
            if k == TOKENS - 1 or record.itl[k] > 0:
                found.append(measured[k] - (written - sent))
    return sorted(found)


@pytest.mark.parametrize("streams", [1, 32, 128, 512])
def test_the_reported_delay_bounds_the_error_against_exact_token_times(
    exact: ExactTimeServer, streams: int
) -> None:
    exact.records(clear=True)
    result = run(exact.url, streams)
    truth = exact.records(clear=True)
    assert {r.response_id for r in result.records} == set(truth)  # every one paired
    ttft, tokens = errors(result, truth)
    assert ttft[0] >= -EARLY and tokens[0] >= -EARLY, (ttft[0], tokens[0])
    delay = result.generator_delay()
    assert delay is not None and delay.count >= 2
    if streams == 1:
        assert percentile(ttft, 50) <= delay.median / 1000 + 0.001, (ttft, delay)
    if not KERNEL_STAMPS:  # token times are the loop's: its probed delay bounds them
        bound = delay.p99 / 1000 + 0.001
        assert percentile(ttft, 90) <= bound, (percentile(ttft, 90), delay)
        assert percentile(tokens, 90) <= bound, (percentile(tokens, 90), delay)
        return
    # The kernel's stamps: every token read before the next came is timed to its own
    # stamp; one read with the next takes the next one's (a gap of 0 in the report). So
    # past 1 ms late are at most the tokens the report counts as read together, and a
    # tenth more (the process itself, not its loop, may be kept off the CPU: a delay no
    # probe of its own sees).
    assert result.kernel_timed() and result.read_lag() is not None
    alone = alone_errors(result, truth)
    assert len(alone) >= len(tokens) // 10, (len(alone), len(tokens))
    assert percentile(alone, 90) <= 0.001, (percentile(alone, 90), result.read_lag())
    first_together = sum(1 for r in result.records if r.itl and r.itl[0] == 0.0) / len(ttft)
    late = sum(1 for error in ttft if error > 0.001) / len(ttft)
    assert late <= first_together + 0.1, (late, first_together, delay)
    together = sum(1 for r in result.records for gap in r.itl if gap == 0.0) / len(tokens)
    late = sum(1 for error in tokens if error > 0.001) / len(tokens)
    assert late <= together + 0.1, (late, together, delay)


def test_the_delay_probe_sees_a_blocked_event_loop() -> None:
    """A loop that does not come back to its sockets for 0.2 s: a probe sent meanwhile
    waited for most of it, and says so; an idle loop's probes waited next to nothing."""

    async def go() -> tuple[list[float], list[float]]:
        idle = DelayProbe(interval=0.01)
        idle.start()
        await asyncio.sleep(0.2)
        quiet = idle.stop()
        probe = DelayProbe(interval=0.01)
        probe.start()
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # the loop blocked, as by a long stretch of work
        await asyncio.sleep(0.05)
        return quiet, probe.stop()

    quiet, blocked = asyncio.run(go())
    assert len(quiet) >= 5 and len(blocked) >= 5
    assert max(blocked) >= 0.15, blocked
    assert sorted(quiet)[len(quiet) // 2] < 0.05, quiet


def finished(delays: list[float]) -> RunResult:
    records = []
    for i in range(20):
        record = RequestRecord(i, latency=0.01 + 0.005 * 7, ttft=0.01, output_tokens=8)
        record.itl = [0.005] * 7
        records.append(record)
    return RunResult(4, True, 8, records, 1.0, delays=delays)


def test_a_delay_past_a_tenth_of_the_median_itl_is_warned_of_in_every_report(
    tmp_path: Path,
) -> None:
    quiet = finished([0.0001] * 100)
    assert quiet.delay_warning() is None
    loud = finished([0.0001] * 97 + [0.002] * 3)  # p99 2 ms: 40% of the 5 ms ITL
    warning = loud.delay_warning()
    assert warning is not None
    assert "2.0 ms (p99" in warning and "40% of the median inter-token latency" in warning
    data = loud.to_dict()["generator"]
    assert data["delay_warning"] == warning and data["delay_ms"]["p99"] == pytest.approx(2.0)
    assert warning in _warnings(loud)
    page = tmp_path / "report.html"
    write_html({"runs": [loud.to_dict()]}, [loud], page)
    assert html.escape(warning) in page.read_text()


def test_with_kernel_stamps_a_read_lag_past_the_itl_is_warned_of(tmp_path: Path) -> None:
    """The same probed delay, but every token timed by the kernel's receive stamp: the
    loop's lateness is in no token time, so no warning while it read every token before
    the next came. Past the median ITL, tokens come in one read with the next and take
    its time: that is warned of, with their share, once past a tenth of them."""
    run = finished([0.0001] * 97 + [0.002] * 3)
    for record in run.records:
        record.read_lag = 0.002 + record.index * 0.0001
    assert run.kernel_timed() and run.delay_warning() is None
    data = run.to_dict()["generator"]
    assert data["kernel_timed"] is True and data["read_lag_ms"]["max"] == pytest.approx(3.9)
    assert data["tokens_read_together"] == 0.0
    console = Console(record=True, width=200)
    _print_run(console, run)
    row = next(line for line in console.export_text().splitlines() if "read lag" in line)
    assert "2.95 ms median, 3.88 ms p99" in row
    for record in run.records:  # read 6 ms late, past the 5 ms ITL: a token in 7 was late
        record.read_lag, record.itl = 0.006, [0.005] * 5 + [0.0, 0.01]
    warning = run.delay_warning()
    assert warning is not None and "6.0 ms (p99)" in warning and "14% of the tokens" in warning
    for record in run.records[1:]:  # as late, but a token in 140 took the next one's time
        record.itl = [0.005] * 7
    assert run.read_together() == pytest.approx(1 / 140) and run.delay_warning() is None
    for record in run.records[1:4]:  # 22 in 140 read with the next: warned of again
        record.itl = [0.0] * 7
    assert "16% of the tokens" in (run.delay_warning() or "")
    run.records[0].read_lag = None  # one request timed by the loop: the probed delay counts
    assert not run.kernel_timed() and "to read what the server sent" in (run.delay_warning() or "")


def test_tokens_due_at_the_same_instant_are_all_written() -> None:
    """A server whose tokens all fall due at once (no wait at all) still answers every
    stream whole, and records a write for each token."""
    with ExactTimeServer(ttft=0.0, itl=0.0) as server:
        result = run(server.url, 64)
        truth = server.records()
    assert result.completed == 64 and len(truth) == 64
    assert all(len(record.writes) == TOKENS for record in truth.values())


def test_requests_that_left_late_are_warned_of_and_the_json_is_behind_a_fold(
    tmp_path: Path,
) -> None:
    """A generator that cannot keep up sends late, and so measures a lighter load than
    asked for: past a tenth of the median TTFT, the report says so. The page keeps its
    JSON behind a download link and a closed fold, the same report either way."""
    result = finished([0.0001] * 100)
    assert result.send_warning() is None
    for record in result.records:
        record.send_delay = 0.004  # 40% of the 10 ms TTFT, but a connection's opening
    assert result.send_warning() is None
    for record in result.records:
        record.ttft, record.latency = 0.03, 0.03 + 0.005 * 7
        record.send_delay = 0.006  # 20% of the 30 ms TTFT, and more than a setup
    warning = result.send_warning()
    assert warning is not None and "waited 6.0 ms (median" in warning
    assert "lighter than asked for" in warning and "of 4 asked for" in warning
    data = result.to_dict()
    assert data["generator"]["send_warning"] == warning
    assert data["generator"]["send_delay_ms"]["median"] == pytest.approx(6.0)
    page = tmp_path / "report.html"
    report = {"runs": [data]}
    write_html(report, [result], page)
    text = page.read_text()
    assert html.escape(warning) in text
    assert text.count("<pre>") == 1 and "<details><summary>Show it here</summary><pre>" in text
    encoded = text.split("href='data:application/json;base64,")[1].split("'")[0]
    assert json.loads(base64.b64decode(encoded)) == json.loads(json.dumps(report))
