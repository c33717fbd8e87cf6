"""``bench`` for capacity planning: no run measures the prompt cache unless asked to,
open-loop arrivals leave on schedule whatever the server does, goodput against SLOs, the
search for the highest load meeting them, the server sampled during the run."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.bench import (
    SLO,
    Arrivals,
    RequestRecord,
    RunResult,
    SyntheticPrompts,
    Workload,
    arrival_times,
    find_capacity,
    open_client,
    run_load,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import start_chat_server
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

from ..replies import CHAT
from .test_load import invoke, ok_json


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerManager]:
    """A server of this module's own: what its cache holds comes from these tests only."""
    with start_chat_server(tmp_path_factory.mktemp("bench-cache"), n_parallel=2) as server:
        yield server


def cached_per_request(run: dict[str, Any]) -> list[int]:
    return [r["cached_tokens"] for r in run["per_request"]]


def test_no_run_level_or_warmup_finds_its_prompts_in_the_cache(
    fresh_server: ServerManager,
) -> None:
    args = ["--url", fresh_server.url, "-n", "4", "-c", "1,2", "--max-tokens", "4",
            "--prompt-tokens", "48", "--warmup", "2"]  # fmt: skip
    for _ in range(2):  # a second run against the same live server: nothing cached either
        data = ok_json(*args)
        for run in data["runs"]:
            prefix = run["cache_prefix_tokens"]
            assert prefix is not None and prefix > 0  # the chat template's own
            assert run["cache_warning"] is None, run["cache_warning"]
            assert max(cached_per_request(run)) <= prefix + 8
        assert data["prompts"]["kind"] == "synthetic" and data["prompts"]["seed"] is None


def test_a_repeated_seed_is_a_repeated_run_and_the_report_says_so(
    fresh_server: ServerManager,
) -> None:
    args = ["--url", fresh_server.url, "-n", "3", "-c", "1", "--max-tokens", "2",
            "--prompt-tokens", "48", "--seed", "11", "--warmup", "0"]  # fmt: skip
    first = ok_json(*args)["runs"][0]
    again = ok_json(*args)["runs"][0]
    assert first["cache_warning"] is None
    assert (
        again["cache_warning"] is not None and "measured the prompt cache" in again["cache_warning"]
    )
    assert min(cached_per_request(again)) > again["cache_prefix_tokens"] + 8
    human = invoke(*args)
    assert human.exit_code == 0 and "measured the prompt cache" in human.stdout


def test_a_shared_prefix_measures_the_cache_on_purpose(fresh_server: ServerManager) -> None:
    [run] = ok_json("--url", fresh_server.url, "-n", "4", "-c", "1", "--max-tokens", "2",
                    "--prompt-tokens", "32", "--shared-prefix", "64")["runs"]  # fmt: skip
    assert run["cache_warning"] is None
    assert run["cache_prefix_tokens"] >= 64
    # After the warm-up put the prefix in the cache, every request finds it there.
    assert min(cached_per_request(run)) >= 48


def test_synthetic_prompts_never_repeat_within_a_source() -> None:
    source = SyntheticPrompts(words=6, seed=3)
    taken = [p[0]["content"] for p in source.take(150) + source.take(150)]
    assert len(set(taken)) == 300
    starts = [tuple(text.split()[:2]) for text in taken]
    assert len(set(starts)) == 300  # no two begin alike
    assert all(len(text.split()) == 6 for text in taken)
    again = [p[0]["content"] for p in SyntheticPrompts(words=6, seed=3).take(5)]
    assert again == taken[:5]  # a seed repeats a run
    assert SyntheticPrompts(6).take(1) != SyntheticPrompts(6).take(1)  # no seed: new ones


# -- open loop ---------------------------------------------------------------------------


def test_arrivals_follow_the_asked_for_process() -> None:
    gaps = lambda times: [b - a for a, b in zip([0.0, *times], times, strict=False)]  # noqa: E731
    poisson = arrival_times(Arrivals(20.0, seed=1), 4000)
    assert statistics.fmean(gaps(poisson)) == pytest.approx(1 / 20, rel=0.05)
    cv = statistics.pstdev(gaps(poisson)) / statistics.fmean(gaps(poisson))
    assert cv == pytest.approx(1.0, abs=0.06)  # exponential gaps
    bursty = gaps(arrival_times(Arrivals(20.0, burstiness=0.25, seed=1), 4000))
    assert statistics.pstdev(bursty) / statistics.fmean(bursty) == pytest.approx(2.0, rel=0.1)
    ramped = arrival_times(Arrivals(20.0, ramp_up=10.0, duration=20.0, seed=2))
    first_half = sum(1 for t in ramped if t < 10.0)
    assert first_half == pytest.approx(100, abs=30) and len(ramped) - first_half == pytest.approx(
        200, abs=45
    )
    assert all(t < 20.0 for t in ramped) and ramped == sorted(ramped)
    with pytest.raises(ValueError, match="rate must be a positive number"):
        Arrivals(0.0)
    with pytest.raises(ValueError, match="needs a number of requests or a duration"):
        arrival_times(Arrivals(1.0))


async def test_requests_leave_on_schedule_while_the_server_falls_behind() -> None:
    """Each answer takes 0.6 s; 12 requests at 40/s must all leave within their 0.3 s
    schedule, not one answer after another (that would put the second more than 0.5 s
    behind, the last 6 s)."""
    with FaultServer(Reply(200, CHAT, delay=0.6)) as server:
        async with open_client(server.url, concurrency=64) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=12, stream=False, warmup=0)
            result = await run_load(client, workload, arrivals=Arrivals(40.0, seed=5))
    assert result.completed == 12 and result.rate == 40.0
    schedule = [r.scheduled for r in result.records]
    assert schedule == arrival_times(Arrivals(40.0, seed=5), 12)
    lag = result.lag()
    assert lag is not None and lag.max < 250.0  # ms: every request left on time
    assert max(r.started for r in result.records) < max(schedule) + 0.25  # type: ignore[type-var]
    assert result.duration < max(schedule) + 0.6 + 1.0  # type: ignore[operator]
    assert len(server.requests) == 12


async def test_max_concurrency_makes_the_schedule_slip_and_says_so() -> None:
    with FaultServer(Reply(200, CHAT, delay=0.2)) as server:
        async with open_client(server.url, concurrency=8) as client:
            workload = Workload(
                SyntheticPrompts(4, seed=1), requests=6, stream=False, warmup=0, max_concurrency=1
            )
            result = await run_load(client, workload, arrivals=Arrivals(100.0, seed=1))
    lag = result.lag()
    assert lag is not None and lag.max > 600.0  # the sixth waited for five answers


def test_the_command_line_runs_rates_and_reports_lag_and_the_server(
    fresh_server: ServerManager,
) -> None:
    data = ok_json("--url", fresh_server.url, "--rate", "30,60", "--duration", "0.5",
                   "--max-tokens", "3", "--prompt-tokens", "16",
                   "--scrape-interval", "0.05")  # fmt: skip
    assert [run["rate"] for run in data["runs"]] == [30.0, 60.0]
    assert all(run["concurrency"] is None for run in data["runs"])  # no closed loop asked
    for run in data["runs"]:
        assert run["arrivals"]["duration"] == 0.5 and run["arrivals"]["burstiness"] == 1.0
        assert 3 <= run["requests"] <= run["rate"] * 1.5 and run["errors"] == 0
        assert run["lag_ms"]["count"] == run["requests"]
        samples = run["server_samples"]
        assert len(samples) >= 1  # how many fit in the run depends on how busy the machine is
        assert all(0 <= s["busy_slots"] <= s["total_slots"] == 2 for s in samples)
        times = [s["t"] for s in samples]
        assert 0 < times[0] and times == sorted(times)  # taken while the run ran, in turn
        assert run["server"]["total_slots"] == 2 and run["server"]["busy_slots"]["max"] <= 2
        generator = run["generator"]
        assert generator["cpu_per_request_ms"] > 0 and generator["cpu_per_chunk_us"] > 0
        assert 0 < generator["load"] < 4
    quiet = ok_json("--url", fresh_server.url, "-n", "2", "--max-tokens", "2",
                    "--scrape-interval", "0")["runs"][0]  # fmt: skip
    assert quiet["server_samples"] == [] and quiet["server"]["busy_slots"] is None


# -- SLOs and capacity -------------------------------------------------------------------


def record(ttft: float, latency: float, tokens: int = 5, ok: bool = True) -> RequestRecord:
    found = RequestRecord(0, latency=latency, ttft=ttft, output_tokens=tokens)
    if not ok:
        found.error, found.error_type = "boom", "APIError"
    return found


def test_slos_parse_and_count_goodput() -> None:
    slo = SLO.parse("ttft=200ms, tpot=50ms,e2e=1.5s", attainment=0.5)
    assert (slo.ttft, slo.tpot, slo.e2e) == (0.2, 0.05, 1.5)
    assert SLO.parse("e2e=250").e2e == 250.0  # no unit: seconds
    records = [
        record(0.1, 0.3),  # tpot 0.05: met
        record(0.3, 0.4),  # ttft too slow
        record(0.1, 0.9),  # tpot 0.2: too slow
        record(0.1, 0.2, ok=False),  # failed
    ]
    result = RunResult(1, True, 5, records, duration=2.0)
    met = slo.evaluate(result)
    assert (met.met, met.requests, met.share, met.goodput, met.ok) == (1, 4, 0.25, 0.5, False)
    for bad, message in (("ttft=fast", "not an objective"), ("ttft=1s,ttft=2s", "twice"),
                         ("itl=5ms", "not an objective")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            SLO.parse(bad)
    with pytest.raises(ValueError, match="at least one objective"):
        SLO()


def fake_runs(limit: float, tried: list[float]) -> Any:
    """Runs whose requests all meet the SLO up to ``limit``, none above."""

    async def run(level: float) -> RunResult:
        tried.append(level)
        latency = 0.1 if level <= limit else 5.0
        return RunResult(None, True, 5, [record(0.05, latency)], duration=1.0)

    return run


def test_the_capacity_search_doubles_then_bisects() -> None:
    slo = SLO(e2e=1.0)
    tried: list[float] = []
    best, runs = asyncio.run(find_capacity(fake_runs(6.3, tried), slo, 1.0, bisections=4))
    assert tried == [1.0, 2.0, 4.0, 8.0, 6.0, 7.0, 6.5, 6.25] and len(runs) == len(tried)
    assert best == 6.25
    tried = []
    best, _ = asyncio.run(find_capacity(fake_runs(5, tried), slo, 4.0, integer=True))
    assert best == 5.0 and tried == [4.0, 8.0, 6.0, 5.0]
    tried = []
    best, _ = asyncio.run(find_capacity(fake_runs(0.3, tried), slo, 4.0))
    assert tried[:4] == [4.0, 2.0, 1.0, 0.5] and best is not None and 0.25 <= best <= 0.3
    best, _ = asyncio.run(find_capacity(fake_runs(-1, []), slo, 4.0))
    assert best is None


def test_the_command_line_finds_the_capacity(fresh_server: ServerManager) -> None:
    data = ok_json("--url", fresh_server.url, "-n", "3", "-c", "1", "--max-tokens", "2",
                   "--prompt-tokens", "16", "--slo", "e2e=30s", "--find-capacity", "concurrency",
                   "--scrape-interval", "0", "--warmup", "0")  # fmt: skip
    assert data["slo"]["e2e_ms"] == 30000 and data["capacity"]["by"] == "concurrency"
    levels = [run["concurrency"] for run in data["runs"]]
    # The -c level, reused by the search, which doubles up to the run's 3 requests.
    assert levels == [1, 2, 3]
    assert data["capacity"] == {"by": "concurrency", "highest_meeting_slo": 3.0, "bounded": False}
    assert all(run["slo"]["ok"] and run["slo"]["share"] == 1.0 for run in data["runs"])
    # from 64 req/s, halved four times: a second of arrivals (from 4 req/s: fifteen)
    human = invoke("--url", fresh_server.url, "-n", "2", "--max-tokens", "2", "--warmup", "0",
                   "--slo", "ttft=1us", "--find-capacity", "rate", "--rate", "64",
                   "--scrape-interval", "0")  # fmt: skip
    assert human.exit_code == 0, human.output
    assert "No rate tried met the SLO (ttft≤0.001ms for 90% of requests)" in human.stdout
    assert "goodput" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "5"], "--duration is for open-loop runs: add --rate"),
        (["--find-capacity", "rate"], "add --slo"),
        (["--slo", "ttft=1s", "--no-stream"], "drop --no-stream"),
        (["--slo", "speed=fast"], "not an objective"),
        (["--rate", "0"], "not a rate of 0.001 to 1e6"),
        (["--rate", "nan"], "not a rate of 0.001 to 1e6"),
        (["--rate", "1", "--duration", "inf"], "not a finite number"),
        (["--rate", "1", "--ramp-up", "nan"], "not a finite number"),
        (["--scrape-interval", "nan"], "not a finite number"),
        (["--slo-attainment", "0.5"], "add --slo"),
        (["--html", "/no/such/folder/r.html"], "no folder /no/such/folder"),
        (["--rate", "x"], "not a number of requests per second"),
    ],
)
def test_open_loop_and_slo_options_are_checked(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = invoke("--url", "http://127.0.0.1:9", *args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_run_is_timed_by_the_clock_it_reports(fresh_server: ServerManager) -> None:
    started = time.monotonic()
    [run] = ok_json("--url", fresh_server.url, "-n", "2", "--max-tokens", "2",
                    "--scrape-interval", "0")["runs"]  # fmt: skip
    assert run["duration_s"] <= time.monotonic() - started


# -- comparing runs ----------------------------------------------------------------------


def fake_report(shift_ms: float, throughputs: list[float], seed: int) -> dict[str, Any]:
    import random

    rng, same = random.Random(seed), random.Random(99)  # TPOT: the same on every side
    runs = []
    for throughput in throughputs:
        requests = [
            {"ok": True, "ttft_ms": 100 + shift_ms + rng.gauss(0, 10),
             "tpot_ms": 20 + same.gauss(0, 2), "e2e_ms": 500 + shift_ms + rng.gauss(0, 30)}
            for _ in range(60)
        ]  # fmt: skip
        runs.append({"concurrency": 2, "rate": None, "per_request": requests,
                     "request_throughput": throughput,
                     "output_throughput": throughput * 10})  # fmt: skip
    return {"runs": runs}


def test_comparisons_tell_a_change_from_the_noise() -> None:
    from llamatelemetry.bench import compare_reports

    before = fake_report(0, [10.0, 10.4, 9.8], seed=1)
    same = {c.metric: c for c in compare_reports(fake_report(0, [10.1, 9.9, 10.2], seed=2), before)}
    slower = {
        c.metric: c for c in compare_reports(fake_report(40, [7.0, 7.2, 6.9], seed=3), before)
    }
    assert same["TTFT p50 (ms)"].verdict == "within noise"
    assert same["req/s"].verdict == "within noise"
    assert slower["TTFT p50 (ms)"].verdict == "higher"
    low, high = slower["TTFT p50 (ms)"].low, slower["TTFT p50 (ms)"].high
    assert low is not None and high is not None and 25 < low <= high < 55  # the shift: 40 ms
    assert slower["req/s"].verdict == "lower" and slower["req/s"].relative == pytest.approx(
        -0.3, abs=0.02
    )
    assert slower["TPOT p50 (ms)"].verdict == "within noise"  # it did not change
    once = compare_reports(fake_report(0, [10.0], seed=4), fake_report(0, [9.0], seed=5))
    assert {c.metric: c.verdict for c in once}["req/s"].startswith("no noise estimate")
    assert compare_reports({"runs": [{"rate": 5.0, "concurrency": None}]}, before) == []


def test_repeats_a_baseline_and_an_html_report(fresh_server: ServerManager, tmp_path: Path) -> None:
    args = ["--url", fresh_server.url, "-n", "4", "-c", "2", "--max-tokens", "3",
            "--prompt-tokens", "16", "--repeat", "3", "--scrape-interval", "0"]  # fmt: skip
    first = ok_json(*args)
    assert [run["concurrency"] for run in first["runs"]] == [2, 2, 2]
    baseline = tmp_path / "before.json"
    baseline.write_text(__import__("json").dumps(first))
    page = tmp_path / "report.html"
    second = ok_json(*args, "--baseline", str(baseline), "--html", str(page))
    changes = {c["metric"]: c for c in second["comparison"]["changes"]}
    assert set(changes) == {"TTFT p50 (ms)", "TPOT p50 (ms)", "E2E p50 (ms)", "req/s", "tok/s"}
    assert all(c["level"] == "concurrency 2" and c["ci95"] is not None for c in changes.values())
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "data:image/png;base64," in text
    assert "Compared with" in text and "http" not in text.split("<pre>")[0].replace(
        fresh_server.url, ""
    ).replace("http://", "")  # nothing fetched from anywhere
    human = invoke(*args, "--baseline", str(baseline))
    assert human.exit_code == 0 and "Compared with" in human.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = invoke(*args, "--baseline", str(bad))
    assert refused.exit_code != 0 and "not a report of" in refused.output


def test_odd_baselines_are_refused_before_the_run_or_their_odd_runs_left_out(
    tmp_path: Path,
) -> None:
    from llamatelemetry.bench import compare_reports

    for text in ('{"runs": [1]}', '{"runs": [{}]}', "[]", '{"runs": [{"concurrency": 1}]}'):
        path = tmp_path / "odd.json"
        path.write_text(text)
        refused = invoke("--url", "http://127.0.0.1:9", "--baseline", str(path))
        assert refused.exit_code != 0 and "not a report of" in refused.output, text
    good = fake_report(0, [10.0, 10.2], seed=1)
    odd = {"runs": [*good["runs"], {"concurrency": 2, "request_throughput": "x"},
                    {"concurrency": 2, "request_throughput": 1.0, "output_throughput": 2.0,
                     "per_request": [{"ok": True, "ttft_ms": "slow"}, None]}]}  # fmt: skip
    changes = {c.metric: c for c in compare_reports(good, odd)}
    assert changes["TTFT p50 (ms)"].verdict == "within noise"  # the odd requests left out


def test_a_tpot_objective_is_met_by_a_one_token_answer() -> None:
    slo = SLO(tpot=0.01)
    assert slo.met(record(0.1, 0.2, tokens=1))
    assert not slo.met(record(0.1, 0.5, tokens=3))  # (0.5 - 0.1) / 2 = 0.2 s per token


# -- workloads ----------------------------------------------------------------------------


def test_sharegpt_conversations_and_traces_load(tmp_path: Path) -> None:
    import json

    from llamatelemetry.bench import Prompt, load_prompts_file

    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([
        {"conversations": [{"from": "system", "value": "Be brief."},
                           {"from": "human", "value": "What is GGUF?"},
                           {"from": "gpt", "value": "x" * 40}, {"from": "human", "value": "And?"}]},
        {"conversations": [{"from": "gpt", "value": "a greeting nobody asked for"}]},
        {"conversations": [{"from": "human", "value": "Hi"}]},
    ]))  # fmt: skip
    first, second = load_prompts_file(sharegpt)
    assert first == Prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is GGUF?"}],
        max_tokens=10,  # its answer: 40 characters, about 10 tokens
    )
    assert second == Prompt([{"role": "user", "content": "Hi"}], None)
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"prompt": "a", "timestamp": 3.5, "max_tokens": 4}\n{"prompt": "b"}\n')
    assert load_prompts_file(trace) == [Prompt([{"role": "user", "content": "a"}], 4, 3.5),
                                        [{"role": "user", "content": "b"}]]  # fmt: skip
    alien = '[{"conversations": [{"from": "alien", "value": "x"}]}]'
    for bad, message in (('{"prompt": "a", "max_tokens": 0}', "max_tokens must be"),
                         ('{"prompt": "a", "timestamp": -1}', "timestamp must be"),
                         ('[{"conversations": 5}]', "no 'conversations' list"),
                         (alien, "turn")):  # fmt: skip
        trace.write_text(bad)
        with pytest.raises(ValueError, match=message):
            load_prompts_file(trace)


def test_a_trace_is_replayed_at_its_recorded_times(
    fresh_server: ServerManager, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(
        f'{{"prompt": "request number {i} of the trace", "timestamp": {10 + 0.25 * i}, '
        f'"max_tokens": {2 + i}}}\n' for i in range(4)
    ))  # fmt: skip
    [run] = ok_json("--url", fresh_server.url, "--prompts-file", str(trace), "--replay",
                    "--ignore-eos", "--scrape-interval", "0", "--warmup", "0")["runs"]  # fmt: skip
    assert run["replay"] is True and run["requests"] == 4
    starts = [r["start_ms"] for r in run["per_request"]]
    for i, start in enumerate(starts):
        assert 250 * i <= start < 250 * (i + 1)  # left on the recorded schedule, in its turn
    assert [r["output_tokens"] for r in run["per_request"]] == [2, 3, 4, 5]  # their own lengths
    refused = invoke("--url", fresh_server.url, "--replay")
    assert refused.exit_code != 0 and "--replay sends a --prompts-file trace" in refused.output


def test_lengths_drawn_from_a_spread(fresh_server: ServerManager) -> None:
    [run] = ok_json("--url", fresh_server.url, "-n", "12", "--max-tokens", "10",
                    "--prompt-tokens", "40", "--length-spread", "0.5", "--ignore-eos",
                    "--scrape-interval", "0", "--seed", "3")["runs"]  # fmt: skip
    outputs = [r["output_tokens"] for r in run["per_request"]]
    prompts = [r["prompt_tokens"] for r in run["per_request"]]
    assert all(5 <= n <= 15 for n in outputs) and len(set(outputs)) >= 4
    assert max(prompts) - min(prompts) >= 10  # prompt lengths spread too
    [flat] = ok_json("--url", fresh_server.url, "-n", "4", "--max-tokens", "6", "--ignore-eos",
                     "--scrape-interval", "0")["runs"]  # fmt: skip
    assert {r["output_tokens"] for r in flat["per_request"]} == {6}


def test_multi_turn_sessions_replay_their_history(fresh_server: ServerManager) -> None:
    [run] = ok_json("--url", fresh_server.url, "-n", "3", "-c", "2", "--turns", "3",
                    "--max-tokens", "4", "--prompt-tokens", "24", "--scrape-interval", "0",
                    "--warmup", "0")["runs"]  # fmt: skip
    requests = run["per_request"]
    assert run["requests"] == 9 and run["errors"] == 0
    assert sorted((r["session"], r["turn"]) for r in requests) == [
        (s, t) for s in range(3) for t in range(3)
    ]
    for session in range(3):
        turns = sorted((r for r in requests if r["session"] == session), key=lambda r: r["turn"])
        prompts = [r["prompt_tokens"] for r in turns]
        assert prompts[0] < prompts[1] < prompts[2]  # each turn carries the history
        assert turns[2]["cached_tokens"] > run["cache_prefix_tokens"] + 8  # found in the cache
        assert [r["start_ms"] for r in turns] == sorted(r["start_ms"] for r in turns)
    assert run["cache_warning"] is None  # a session's own history is not a repeated prompt
    cached = sum(r["cached_tokens"] for r in requests)
    assert run["cache_hit_ratio"] == round(cached / sum(r["prompt_tokens"] for r in requests), 4)
    assert 0 < run["cache_hit_ratio"] < 1
    # Turn by turn: the prompts grow with the history, and the cache serves more of them.
    turns = run["by_turn"]
    assert [t["turn"] for t in turns] == [0, 1, 2] and all(t["completed"] == 3 for t in turns)
    for turn in turns:
        mine = [r for r in requests if r["turn"] == turn["turn"]]
        assert turn["prompt_tokens"]["mean"] == pytest.approx(
            sum(r["prompt_tokens"] for r in mine) / 3, abs=1e-3)  # fmt: skip
        assert turn["cached_tokens"]["max"] == max(r["cached_tokens"] for r in mine)
        assert turn["ttft_ms"]["count"] == 3
    means = [t["cached_tokens"]["mean"] for t in turns]
    assert means[0] < means[1] < means[2]
    human = invoke("--url", fresh_server.url, "-n", "2", "-c", "2", "--turns", "2",
                   "--max-tokens", "4", "--prompt-tokens", "24",
                   "--scrape-interval", "0")  # fmt: skip
    assert human.exit_code == 0 and "by turn of the sessions" in human.stdout


async def test_a_failed_turn_ends_its_session() -> None:
    replies = iter([Reply(200, CHAT), Reply(500, {"error": {"code": 500, "message": "boom"}})])
    with FaultServer(lambda request: next(replies, Reply(200, CHAT))) as server:
        async with open_client(server.url) as client:
            workload = Workload(
                SyntheticPrompts(4, seed=1), requests=1, turns=4, stream=False, warmup=0
            )
            result = await run_load(client, workload, 1)
    assert [r.error_type for r in result.records] == [
        None,
        "InternalServerError",
        "SessionAborted",
        "SessionAborted",
    ]
    assert len(server.requests) == 2 and result.completed == 1


async def test_failed_samples_are_counted_not_hidden() -> None:
    from llamatelemetry.bench import ServerWatch

    looks = itertools.count(1)
    sampled = threading.Event()

    def answer(request: SeenRequest) -> Reply:
        """No /metrics, no /slots: chat answers to them too. The run's own answers wait
        until the watch has failed four samples (one failure each, however many of its
        parts failed): it asks /metrics a fifth time only after it has counted them."""
        if request.path.split("?")[0] == "/metrics" and next(looks) == 5:
            sampled.set()
        elif request.path.endswith("/chat/completions"):
            assert sampled.wait(60)
        return Reply(200, CHAT)

    with FaultServer(answer) as server:
        watch = ServerWatch(server.url, interval=0.02)
        async with open_client(server.url, concurrency=2) as client:
            workload = Workload(SyntheticPrompts(4, seed=1), requests=6, stream=False, warmup=0)
            result = await run_load(client, workload, 1, watch=watch)
        await watch.aclose()
    assert result.server == [] and result.server_failures >= 4
    assert result.to_dict()["server_sample_failures"] == result.server_failures


def test_a_shared_prefix_holds_the_tokens_asked_for(chat_server: ServerManager) -> None:
    """Its words are calibrated to tokens on average: a prefix short of them is grown."""
    from llamatelemetry.api import AsyncLlamaCppClient
    from llamatelemetry.bench._prompts import synthetic_source

    async def measured() -> list[int]:
        async with AsyncLlamaCppClient(chat_server.url) as client:
            return [
                (await synthetic_source(client, 32, seed, shared_tokens=64)).shared_tokens
                for seed in range(40)
            ]

    shared = asyncio.run(measured())
    assert min(shared) >= 64
    assert max(shared) <= 64 + 16  # grown a word or a few at a time, not doubled
