"""``bench`` against what it reads: a server whose ``/slots`` and ``/metrics`` answer in odd
shapes (the run keeps its report), and input files that are wrong in ways noticed only
late, or only as a traceback (each refused before the first request, in one line)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llamatelemetry.cli import main
from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

from ..replies import CHAT

NOT_FOUND = Reply(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found"}})

#: What an odd (or older) server may answer on /slots, one after another.
ODD_SLOTS: list[Any] = [
    # an older or compatible server: next_token an object, not a list (a valid shape)
    [
        {
            "id": 0,
            "is_processing": True,
            "n_ctx": 4096,
            "n_prompt_tokens": 10,
            "next_token": {"has_next_token": True, "n_decoded": 3},
        }
    ],  # fmt: skip
    [{"id": 0, "is_processing": True, "n_ctx": "lots", "next_token": [{"n_decoded": 1}]}],
    [{"id": 0, "is_processing": True, "n_ctx": 4096, "next_token": "soon"}],
    [{"id": 0, "is_processing": True, "n_ctx": 4096, "next_token": [7, 8]}],
    [{"id": 0, "is_processing": True, "n_ctx": 4096, "n_prompt_tokens": [1]}],
    [{"id": 0, "is_processing": True, "n_ctx": 10**40}],
    b'[{"id": 0, "is_processing": true, "n_ctx": 1e400}]',
    {"slots": "an object, not a list"},
    [3, "four"],
    b"[{garbage",
]
ODD_METRICS: list[Any] = [
    "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 1\n",
    "llamacpp:tokens_predicted_total this-is-not-a-number\n",
    "{{{ not prometheus at all\n",
    "llamacpp:tokens_predicted_total NaN\nllamacpp:requests_deferred +Inf\n",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["bench", *args])


def hostile(slots: list[Any], metrics: list[Any]) -> Callable[[SeenRequest], Reply]:
    """Chat answered as a server would; /slots and /metrics each from their list, in turn."""
    lock = threading.Lock()
    next_slots, next_metrics = itertools.cycle(slots), itertools.cycle(metrics)

    def answer(request: SeenRequest) -> Reply:
        path = request.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            return Reply(200, CHAT, delay=0.03)
        with lock:
            if path == "/slots":
                return Reply(200, next(next_slots), content_type="application/json")
            if path == "/metrics":
                return Reply(200, next(next_metrics), content_type="text/plain; version=0.0.4")
        return NOT_FOUND

    return answer


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    return path


def error_lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def chats(server: FaultServer) -> list[SeenRequest]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


# -- item 4: a finished run keeps its report, whatever /slots and /metrics say ----------


def sampled_args(prompts: Path) -> list[str]:
    """Two levels of 16 short requests, the server sampled every 0.02 s."""
    return ["-n", "16", "-c", "1,2", "--no-stream", "--warmup", "0", "--max-tokens", "2",
            "--prompts-file", str(prompts), "--scrape-interval", "0.02"]  # fmt: skip


def sampled_run(script: Any, args: list[str]) -> tuple[Any, list[str]]:
    """``bench --json`` against a server answering with ``script``: the result, and the
    paths of every request that was not a chat (the samples)."""
    with FaultServer(script) as server:
        result = invoke("--url", server.url, *args, "--json")
        scraped = [r.path for r in server.requests if not r.path.endswith("/chat/completions")]
    return result, scraped


def test_odd_slots_and_metrics_cost_samples_not_the_report(prompts: Path) -> None:
    args = sampled_args(prompts)
    result, scraped = sampled_run(hostile(ODD_SLOTS, ODD_METRICS), args)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    report = json.loads(result.stdout)
    runs = report["runs"]
    assert [run["completed"] for run in runs] == [16, 16]
    # Every odd shape was seen (the cycle went round), and each cost a sample, counted.
    assert scraped.count("/slots") > 2 * len(ODD_SLOTS)
    failed = sum(run["server_sample_failures"] for run in runs)
    assert failed >= len(ODD_SLOTS)
    samples = [s for run in runs for s in run["server_samples"]]
    # The object-shaped next_token is read, not refused: its slot's context is counted.
    assert any(s["context_used"] == pytest.approx(13 / 4096, abs=1e-4) for s in samples)
    for sample in samples:  # nothing odd leaked into the report's figures
        for value in sample.values():
            assert value is None or (isinstance(value, (int, float)) and 0 <= value < 1e9)
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or Infinity in it

    with FaultServer(hostile(ODD_SLOTS, ODD_METRICS)) as server:
        human = invoke("--url", server.url, *args)
    assert human.exit_code == 0, human.output
    assert "Benchmark" in human.stdout and "concurrency" in human.stdout
    assert "server samples lost" in human.stdout  # the human report says so too


async def test_a_watch_survives_every_odd_answer() -> None:
    from llamatelemetry.bench import ServerWatch

    with FaultServer(hostile(ODD_SLOTS, ODD_METRICS)) as server:
        watch = ServerWatch(server.url, interval=1.0)
        try:
            for _ in range(2 * len(ODD_SLOTS)):
                await watch.sample()
            samples = await watch.stop()
        finally:
            await watch.aclose()
    # Of each round of ten /slots answers, only the object-shaped next_token reads;
    # every one of the other nine costs a sample, and one only, whatever /metrics said.
    assert 2 * (len(ODD_SLOTS) - 1) <= watch.run_failures <= 2 * len(ODD_SLOTS)
    assert [s.busy_slots for s in samples if s.busy_slots is not None] == [1, 1]
    assert all(s.generated_per_s is None or s.generated_per_s >= 0 for s in samples)


# -- a server started without --metrics (or --slots): an endpoint off is not a lost sample --

#: llama-server's answer on /metrics when started without ``--metrics`` (its default).
METRICS_OFF = Reply(501, {"error": {"code": 501, "type": "not_supported_error", "message":
    "This server does not support metrics endpoint. Start it with `--metrics`"}})  # fmt: skip
SLOTS = [{"id": 0, "is_processing": False, "n_ctx": 4096}]


def switched_off(slots: Reply, metrics: Reply) -> Callable[[SeenRequest], Reply]:
    """Chat answered as a server would; /slots and /metrics always as given."""

    def answer(request: SeenRequest) -> Reply:
        path = request.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            return Reply(200, CHAT, delay=0.03)
        return {"/slots": slots, "/metrics": metrics}.get(path, NOT_FOUND)

    return answer


@pytest.mark.parametrize(
    ("slots", "metrics", "off"),
    [
        (Reply(200, SLOTS), METRICS_OFF, "/metrics"),
        (Reply(200, SLOTS), NOT_FOUND, "/metrics"),
        (NOT_FOUND, Reply(200, ODD_METRICS[0], content_type="text/plain"), "/slots"),
    ],
    ids=["metrics-501", "metrics-404", "slots-404"],
)
def test_an_endpoint_switched_off_is_not_sampled_and_loses_no_sample(
    prompts: Path, slots: Reply, metrics: Reply, off: str
) -> None:
    args = sampled_args(prompts)
    result, scraped = sampled_run(switched_off(slots, metrics), args)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [run["server_sample_failures"] for run in runs] == [0, 0]
    assert scraped.count(off) == 1  # asked once, then left alone for the rest of the run
    on = "/slots" if off == "/metrics" else "/metrics"
    assert scraped.count(on) > 1
    samples = [s for run in runs for s in run["server_samples"]]
    if on == "/slots":
        assert samples and all(s["busy_slots"] is not None for s in samples)
    else:
        assert samples and all(s["deferred"] == 1 for s in samples)

    with FaultServer(switched_off(slots, metrics)) as server:
        human = invoke("--url", server.url, *args)
    assert human.exit_code == 0, human.output
    assert "server samples lost" not in human.stdout


async def test_a_watch_of_a_server_without_metrics_samples_its_slots() -> None:
    from llamatelemetry.bench import ServerWatch

    with FaultServer(switched_off(Reply(200, SLOTS), METRICS_OFF)) as server:
        watch = ServerWatch(server.url, interval=1.0)
        try:
            for _ in range(5):
                await watch.sample()
            samples = await watch.stop()
        finally:
            await watch.aclose()
        scraped = [r.path for r in server.requests]
    assert watch.run_failures == 0
    assert [(s.busy_slots, s.total_slots) for s in samples] == [(0, 1)] * 5
    assert scraped.count("/metrics") == 1 and scraped.count("/slots") == 5


async def test_a_round_where_both_endpoints_fail_loses_one_sample() -> None:
    from llamatelemetry.bench import ServerWatch

    garbage_slots = Reply(200, b"[{garbage", content_type="application/json")
    garbage_metrics = Reply(200, ODD_METRICS[2], content_type="text/plain")
    rounds = 6
    with FaultServer(switched_off(garbage_slots, garbage_metrics)) as server:
        watch = ServerWatch(server.url, interval=1.0)
        try:
            for _ in range(rounds):
                await watch.sample()
            samples = await watch.stop()
        finally:
            await watch.aclose()
        scraped = [r.path for r in server.requests]
    assert scraped.count("/slots") == scraped.count("/metrics") == rounds  # both still asked
    assert samples == [] and watch.run_failures == rounds  # not 2 × rounds


# -- item 6: every input file checked whole before the first request ------------------


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A server that records what it is sent: a refused input sends nothing at all."""
    with FaultServer(hostile(ODD_SLOTS[:1], ODD_METRICS[:1])) as fault:
        yield fault


def refused(server: FaultServer, *args: str) -> str:
    """The one Error line of a run refused before its first request."""
    result = invoke("--url", server.url, "-n", "2", "--no-stream", "--warmup", "0", *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    [line] = error_lines(result)
    assert server.requests == [], [r.path for r in server.requests]
    return line


def report_with(request: dict[str, Any], **run: Any) -> dict[str, Any]:
    figures = {"concurrency": 1, "request_throughput": 1.0, "output_throughput": 2.0, **run}
    return {"runs": [{**figures, "per_request": [{"ok": True, "e2e_ms": 5.0}, request]}]}


def test_a_baseline_with_a_number_no_float_holds_is_refused_at_once(
    server: FaultServer, prompts: Path, tmp_path: Path
) -> None:
    huge = "9" * 400
    baseline = tmp_path / "before.json"
    baseline.write_text(json.dumps(report_with({"ok": True, "ttft_ms": 1.0})).replace(
        '"ttft_ms": 1.0', f'"ttft_ms": {huge}'
    ))  # fmt: skip
    line = refused(server, "--prompts-file", str(prompts), "--baseline", str(baseline))
    assert str(baseline) in line and "runs[0].per_request[1].ttft_ms" in line
    assert "400 digits" in line

    baseline.write_text(json.dumps(report_with({})).replace("1.0", huge, 1))
    line = refused(server, "--prompts-file", str(prompts), "--baseline", str(baseline))
    assert "runs[0].request_throughput" in line

    baseline.write_text(json.dumps(report_with({"ok": True, "tpot_ms": 1e300})))
    line = refused(server, "--prompts-file", str(prompts), "--baseline", str(baseline))
    assert "runs[0].per_request[1].tpot_ms" in line

    baseline.write_text(json.dumps(report_with({}, concurrency=10**30)))
    line = refused(server, "--prompts-file", str(prompts), "--baseline", str(baseline))
    assert "runs[0].concurrency" in line


def test_input_nested_100000_deep_is_one_error_line(
    server: FaultServer, prompts: Path, tmp_path: Path
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    baseline = tmp_path / "deep.json"
    baseline.write_text('{"runs":\n' + deep + "}")
    line = refused(server, "--prompts-file", str(prompts), "--baseline", str(baseline))
    assert f"{baseline}:2" in line and "nested deeper" in line

    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text('{"prompt": "fine"}\n{"messages": ' + deep + "}\n")
    line = refused(server, "--prompts-file", str(jsonl))
    assert f"{jsonl}:2" in line and "nested deeper" in line

    sharegpt = tmp_path / "deep.json"
    sharegpt.write_text(deep)
    line = refused(server, "--prompts-file", str(sharegpt))
    assert f"{sharegpt}:1" in line and "nested deeper" in line

    # Not deep enough to stop the parser, deep enough to stop the request's encoder later.
    middling = '{"role": "user", "content": "x", "name": ' + "[" * 500 + "]" * 500 + "}"
    jsonl.write_text('{"messages": [' + middling + "]}\n")
    line = refused(server, "--prompts-file", str(jsonl))
    assert f"{jsonl}:1" in line and "messages[0]" in line and "nested deeper" in line


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text('\ufeff{"prompt": "one"}\n{"prompt": "two"}\n', encoding="utf-8")
    sharegpt = tmp_path / "bom.json"
    sharegpt.write_text(
        "\ufeff" + json.dumps([{"conversations": [{"from": "human", "value": "Hi"}]}]),
        encoding="utf-8",
    )
    baseline = tmp_path / "before.json"
    baseline.write_text("\ufeff" + json.dumps(report_with({})), encoding="utf-8")
    for path in (jsonl, sharegpt):
        with FaultServer(hostile(ODD_SLOTS[:1], ODD_METRICS[:1])) as server:
            result = invoke("--url", server.url, "-n", "2", "--no-stream", "--warmup", "0",
                            "--prompts-file", str(path), "--baseline", str(baseline),
                            "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["runs"][0]["completed"] == 2 and "comparison" in report
        assert len(chats(server)) == 2


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"prompt": "a", "max_tokens": 100000000000000}', "max_tokens"),
        ('{"prompt": "a", "max_tokens": 1e14}', "max_tokens"),
        ('{"prompt": "a", "max_tokens": 2147483648}', "max_tokens"),
        ('{"messages": [{"role": "user", "content": "a", "name": NaN}]}', "messages[0]"),
        ('{"messages": [{"role": "user", "content": "a", "name": "\\ud800"}]}', "messages[0]"),
        ('{"prompt": "\\udfff lone"}', "messages[0]"),
    ],
)
def test_a_prompt_every_request_would_fail_with_is_refused_at_once(
    server: FaultServer, tmp_path: Path, line: str, says: str
) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + line + "\n")
    error = refused(server, "--prompts-file", str(path))
    assert f"{path}:3" in error and says in error


def test_a_sharegpt_turn_no_request_can_carry_is_refused_at_once(
    server: FaultServer, tmp_path: Path
) -> None:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Hi"}]},
        {"conversations": [{"from": "human", "value": "\ud800"}]},
    ]))  # fmt: skip
    error = refused(server, "--prompts-file", str(path))
    assert str(path) in error and "entry 2" in error


def test_text_that_is_not_utf8_is_refused_naming_its_line(
    server: FaultServer, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "one"}\n{"prompt": "caf\xe9"}\n')
    error = refused(server, "--prompts-file", str(path))
    assert f"{path}:2" in error and "UTF-8" in error
    baseline = tmp_path / "latin1.json"
    baseline.write_bytes(b'{"runs": [],\n "note": "caf\xe9"}')
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "one"}\n')
    error = refused(server, "--prompts-file", str(good), "--baseline", str(baseline))
    assert f"{baseline}:2" in error and "UTF-8" in error


def test_max_tokens_on_the_command_line_is_bounded_too(server: FaultServer) -> None:
    result = invoke("--url", server.url, "--max-tokens", "100000000000000")
    assert result.exit_code == 2 and "--max-tokens" in result.output
    assert server.requests == []
