"""``llamatelemetry.bench`` and ``llamatelemetry bench`` against the real tiny-model server.

The tiny model never emits its end-of-sequence token, so every request generates exactly
``max_tokens`` tokens: counts can be checked to the token.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from llamatelemetry.api import APIConnectionError, AsyncLlamaCppClient
from llamatelemetry.bench import (
    METRICS,
    BenchConfig,
    RequestRecord,
    RunResult,
    Summary,
    Workload,
    load_prompts_file,
    open_client,
    percentile,
    repeat_prompts,
    run_benchmark,
    run_load,
    run_sweep,
    synthetic_prompts,
)
from llamatelemetry.cli import main
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles, start_chat_server
from llamatelemetry.testing._otlp import OTLPReceiver

from ..cli.test_commands import INTERRUPTIBLE, free_port, interrupt, reap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MESSAGES = [{"role": "user", "content": "Say something."}]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["bench", *args])


def ok_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_ordered(summary: dict[str, Any] | Summary) -> None:
    s = summary if isinstance(summary, dict) else summary.to_dict()
    assert s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"]


# -- statistics ------------------------------------------------------------------------


def test_percentiles_interpolate_linearly() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(v) for v in range(1, 11)], 90) == pytest.approx(9.1)
    assert percentile([7.0], 99) == 7.0
    summary = Summary.of([3.0, 1.0, 2.0])
    assert summary is not None
    assert (summary.count, summary.min, summary.median, summary.max) == (3, 1.0, 2.0, 3.0)
    assert Summary.of([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1))
def test_percentiles_are_ordered(values: list[float]) -> None:
    summary = Summary.of(values)
    assert summary is not None
    assert_ordered(summary)


# -- the library -----------------------------------------------------------------------


async def test_streamed_run_counts_and_orders(chat_server: ServerManager) -> None:
    async with open_client(chat_server.url, concurrency=2) as client:
        prompts = await synthetic_prompts(client, 8, tokens=32, seed=3)
        assert len({p[0]["content"] for p in prompts}) == 8  # distinct: no shared cache
        result = await run_load(client, Workload(prompts, max_tokens=8), concurrency=2)

    assert (result.requests, result.completed, result.errors) == (8, 8, 0)
    assert result.output_tokens == 8 * 8
    for record in result.records:
        assert record.ok and record.output_tokens == 8
        assert record.prompt_tokens is not None and 24 <= record.prompt_tokens <= 32 * 1.3 + 32
        assert record.ttft is not None and record.server_ttft is not None
        assert record.ttft >= record.server_ttft
        assert record.server_latency is not None and record.latency >= record.server_latency
        assert 1 <= len(record.itl) <= 7
        assert record.tpot is not None and record.server_tpot is not None
    for metric in METRICS:
        client_side = result.summary(metric, "client")
        assert client_side is not None
        assert_ordered(client_side)
        server_side = result.summary(metric, "server")
        if metric == "itl":
            assert server_side is None
        else:
            assert server_side is not None and server_side.count == 8
            assert_ordered(server_side)
    assert result.duration > 0 and result.request_throughput > 0
    assert result.output_throughput == pytest.approx(64 / result.duration)


async def test_unstreamed_run_has_no_client_ttft(chat_server: ServerManager) -> None:
    async with open_client(chat_server.url, concurrency=2) as client:
        result = await run_load(
            client, Workload([MESSAGES] * 4, max_tokens=4, stream=False, warmup=0), concurrency=2
        )
    assert (result.completed, result.output_tokens) == (4, 16)
    assert result.summary("ttft") is None and result.summary("itl") is None
    assert result.summary("tpot") is None
    ttft = result.summary("ttft", "server")
    e2e = result.summary("e2e")
    assert ttft is not None and e2e is not None and e2e.count == 4
    assert all(
        r.server_latency is not None and r.latency >= r.server_latency for r in result.records
    )


async def test_sweep_gives_one_result_per_level(chat_server: ServerManager) -> None:
    levels_seen: list[int] = []
    done: list[int] = []
    async with open_client(chat_server.url, concurrency=3) as client:
        results = await run_sweep(
            client,
            Workload([MESSAGES] * 5, max_tokens=2),
            [1, 3],
            on_level=levels_seen.append,
            on_request=lambda r: done.append(r.index),
        )
    assert [r.concurrency for r in results] == levels_seen == [1, 3]
    assert all(r.completed == 5 for r in results)
    assert sorted(done) == sorted([*range(5), *range(5)])


async def test_unreachable_server_makes_every_request_an_error() -> None:
    async with open_client(dead_url(), concurrency=2) as client:
        result = await run_load(client, Workload([MESSAGES] * 3, max_tokens=2), concurrency=2)
    assert (result.requests, result.completed, result.errors) == (3, 0, 3)
    assert result.error_types() == {APIConnectionError.__name__: 3}
    assert result.summary("e2e") is None
    assert result.output_throughput == 0.0


async def test_server_gone_mid_run_counts_the_rest_as_errors(tmp_path: Path) -> None:
    with start_chat_server(tmp_path, n_parallel=1) as server:

        def stop_after_second(record: RequestRecord) -> None:
            if record.index == 1:
                server.stop()  # runs before the next request starts (concurrency 1)

        async with open_client(server.url) as client:
            result = await run_load(
                client,
                Workload([MESSAGES] * 6, max_tokens=2, warmup=0),
                concurrency=1,
                on_request=stop_after_second,
            )
    assert (result.requests, result.completed, result.errors) == (6, 2, 4)
    assert [r.ok for r in result.records] == [True, True, False, False, False, False]
    assert result.output_tokens == 2 * 2
    assert set(result.error_types()) == {APIConnectionError.__name__}


def test_prompt_files(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "one"}\n\n{"messages": [{"role": "user", "content": "two"}]}\n')
    prompts = load_prompts_file(path)
    assert prompts == [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}]]
    assert [p[0]["content"] for p in repeat_prompts(prompts, 5)] == ["one", "two"] * 2 + ["one"]
    path.write_text('{"prompt": "one"}\n{"text": "no"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2"):
        load_prompts_file(path)
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(ValueError, match=r":1: .*role"):
        load_prompts_file(path)


def test_workload_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Workload([])
    with pytest.raises(ValueError):
        Workload([MESSAGES], max_tokens=0)


async def test_open_client_is_instrumented_only_when_asked() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from llamatelemetry.telemetry import InstrumentedAsyncLlamaCppClient

    async with open_client("http://127.0.0.1:9", concurrency=3) as client:
        assert type(client) is AsyncLlamaCppClient and client.max_retries == 0
    tracer_provider, meter_provider = TracerProvider(), MeterProvider()
    async with open_client(
        "http://127.0.0.1:9", tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        assert isinstance(client, InstrumentedAsyncLlamaCppClient)
    tracer_provider.shutdown()
    meter_provider.shutdown()


# -- the command -----------------------------------------------------------------------


def test_json_results(chat_server: ServerManager) -> None:
    data = ok_json(
        "--url",
        chat_server.url,
        "-n",
        "6",
        "-c",
        "1,2",
        "--max-tokens",
        "5",
        "--prompt-tokens",
        "16",
        "--seed",
        "7",
    )
    assert data["url"] == chat_server.url
    assert data["config"]["concurrency"] == [1, 2]
    assert data["config"]["prompt_tokens"] == 16 and data["config"]["seed"] == 7
    assert data["model"] and data["started_at"]
    assert [run["concurrency"] for run in data["runs"]] == [1, 2]
    assert [run["draft_acceptance"] for run in data["runs"]] == [None, None]  # no drafting
    for run in data["runs"]:
        assert run["completed"] + run["errors"] == run["requests"] == 6
        assert run["errors"] == 0 and run["output_tokens"] == 6 * 5
        assert run["request_throughput"] > 0 and run["output_throughput"] > 0
        assert set(run["metrics"]) == {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}
        for metric, sides in run["metrics"].items():
            assert_ordered(sides["client"])
            if metric == "itl_ms":
                assert sides["server"] is None
            else:
                assert_ordered(sides["server"])
        assert run["metrics"]["e2e_ms"]["client"]["count"] == 6
        requests = run["per_request"]
        assert [r["index"] for r in requests] == list(range(6))
        assert all(r["ok"] and r["output_tokens"] == 5 for r in requests)
        assert all(r["e2e_ms"] >= r["server_e2e_ms"] for r in requests)


def test_human_output_and_plot(chat_server: ServerManager, tmp_path: Path) -> None:
    plot = tmp_path / "bench.png"
    result = invoke(
        "--url",
        chat_server.url,
        "-n",
        "4",
        "-c",
        "1,2",
        "--max-tokens",
        "4",
        "--prompt-tokens",
        "8",
        "--plot",
        str(plot),
    )
    assert result.exit_code == 0, result.output
    for text in (
        "Concurrency 1",
        "Concurrency 2",
        "Time to first token",
        "Inter-token",
        "client",
        "server",
        "req/s",
        "Sweep",
    ):
        assert text in result.stdout
    assert "Traceback" not in result.output
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    import matplotlib.image

    pixels = matplotlib.image.imread(plot)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_unstreamed_plot(chat_server: ServerManager, tmp_path: Path) -> None:
    plot = tmp_path / "whole.png"
    data = ok_json(
        "--url",
        chat_server.url,
        "-n",
        "3",
        "--max-tokens",
        "3",
        "--no-stream",
        "--prompt-tokens",
        "8",
        "--plot",
        str(plot),
    )
    run = data["runs"][0]
    assert run["metrics"]["ttft_ms"]["client"] is None
    assert run["metrics"]["ttft_ms"]["server"]["count"] == 3
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_prompts_file(chat_server: ServerManager, tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hello there, how are you today?"})
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                ]
            }
        )
        + "\n"
    )
    data = ok_json(
        "--url", chat_server.url, "-n", "4", "--max-tokens", "2", "--prompts-file", str(path)
    )
    assert data["config"]["prompts_file"] == str(path)
    assert data["config"]["prompt_tokens"] is None
    tokens = [r["prompt_tokens"] for r in data["runs"][0]["per_request"]]
    assert tokens[0] == tokens[2] and tokens[1] == tokens[3] and tokens[0] != tokens[1]


def test_bad_prompts_file_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n")
    result = invoke("--url", dead_url(), "--prompts-file", str(path))
    assert result.exit_code == 1
    assert "bad.jsonl:1" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("extra", [[], ["--json"], ["--prompts-file"]])
def test_nothing_listening_is_a_clean_failure(tmp_path: Path, extra: list[str]) -> None:
    if extra == ["--prompts-file"]:
        path = tmp_path / "p.jsonl"
        path.write_text('{"prompt": "hi"}\n')
        extra = ["--prompts-file", str(path)]
    url = dead_url()
    result = invoke("--url", url, "-n", "3", *extra)
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and "Traceback" not in result.output
    assert url in result.output
    assert result.stdout == ""  # no JSON: the prompt calibration needs the server, and failed
    if "--prompts-file" in extra:  # no calibration: every request was sent, and failed
        assert "all 3 requests" in result.output


def test_every_failed_request_is_in_the_json(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi"}\n')
    result = invoke(
        "--url", dead_url(), "-n", "3", "-c", "2", "--prompts-file", str(path), "--json"
    )
    assert result.exit_code == 1
    run = json.loads(result.stdout)["runs"][0]
    assert (run["requests"], run["completed"], run["errors"]) == (3, 0, 3)
    assert run["error_types"] == {"APIConnectionError": 3}
    assert "all 3 requests" in result.stderr


def test_spans_exported_over_otlp(chat_server: ServerManager) -> None:
    with OTLPReceiver() as receiver:
        data = ok_json(
            "--url",
            chat_server.url,
            "-n",
            "3",
            "--max-tokens",
            "2",
            "--prompt-tokens",
            "8",
            "--warmup",
            "1",
            "--otlp-endpoint",
            receiver.url,
        )
        assert data["runs"][0]["completed"] == 3
        spans = receiver.spans()
    chats = [s for s in spans if s["name"].startswith("chat")]
    assert len(chats) == 3 + 1  # the warm-up request is a span too
    assert all(s["attributes"]["gen_ai.request.max_tokens"] == 2 for s in chats)
    assert any(s["name"].startswith("tokenize") for s in spans)  # the prompt calibration


def _chat_count(exposition: str) -> float | None:
    found = re.search(r'(?m)^gen_ai_client_operation_duration_seconds_count\{[^}]*'
                      r'gen_ai_operation_name="chat"[^}]*\} (\S+)$', exposition)  # fmt: skip
    return float(found.group(1)) if found else None


def test_prometheus_holds_the_last_figures_of_the_run(chat_server: ServerManager) -> None:
    """A scraper every 0.3 s, as Prometheus: bench exits only after a scrape that took every
    measured request (not the warm-up), and serves its client metrics while it runs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    scraped: list[tuple[float, str]] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(0.3):
            try:
                scraped.append((time.monotonic(), httpx.get(url, timeout=5).text))
            except httpx.HTTPError:
                pass

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        result = invoke("--url", chat_server.url, "-n", "6", "-c", "2", "--max-tokens", "4",
                        "--prompt-tokens", "8", "--warmup", "1", "--prometheus-port", str(port),
                        "--prometheus-wait", "20", "--json")  # fmt: skip
        ended = time.monotonic()
    finally:
        stop.set()
        scraper.join()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["completed"] == 6
    assert f"client metrics for Prometheus at {url}" in result.stderr
    assert "waiting up to 20 s" in result.stderr and "warning" not in result.stderr
    before_exit = [text for at, text in scraped if at <= ended]
    assert _chat_count(before_exit[-1]) == 6  # the last scrape: every measured request
    assert not _listening(port)  # the endpoint is gone with the run


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_without_a_scrape_bench_waits_as_long_as_told_and_warns(
    chat_server: ServerManager,
) -> None:
    began = time.monotonic()
    result = invoke("--url", chat_server.url, "-n", "2", "--max-tokens", "2", "--prompt-tokens",
                    "8", "--warmup", "0", "--prometheus-port", "0", "--prometheus-wait", "1.5",
                    "--json")  # fmt: skip
    took = time.monotonic() - began
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["completed"] == 2  # the report is whole
    assert "warning: no scrape of http://127.0.0.1:" in result.stderr
    assert "in 1.5 s: Prometheus lacks the run's last figures" in result.stderr
    assert took >= 1.5


def test_an_error_before_any_request_does_not_wait_for_prometheus() -> None:
    began = time.monotonic()
    result = invoke("--url", dead_url(), "--prometheus-port", "0", "--prometheus-wait", "30")
    assert result.exit_code == 1
    assert "waiting" not in result.output and "warning" not in result.output
    assert time.monotonic() - began < 15


def test_ctrl_c_while_waiting_for_prometheus_says_so(chat_server: ServerManager) -> None:
    process = subprocess.Popen(
        [*INTERRUPTIBLE, sys.executable, "-c", "from llamatelemetry.cli import main; main()",
         "bench", "--url", chat_server.url, "-n", "2", "--max-tokens", "2", "--prompt-tokens",
         "8", "--warmup", "0", "--prometheus-port", "0", "--prometheus-wait", "60", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        while "waiting up to 60 s" not in process.stderr.readline():
            assert process.poll() is None
        began = time.monotonic()
        out, err = interrupt(process)
        assert time.monotonic() - began < 10
        assert process.returncode == 130
        assert json.loads(out)["runs"][0]["completed"] == 2  # the report came first
        assert "Interrupted: stopped waiting: Prometheus may lack the run's last figures." in err
    finally:
        reap(process)


def test_prometheus_port_with_telemetry_switched_off_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    result = invoke("--url", dead_url(), "--prometheus-port", "0")
    assert result.exit_code == 1
    assert "--prometheus-port: OTEL_SDK_DISABLED=true switches telemetry off" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus-wait", "5"], "--prometheus-wait is for the client metrics' endpoint"),
        (["--prometheus-host", "127.0.0.1"], "--prometheus-host is for the client metrics'"),
        (["--prometheus-port", "0", "--prometheus-wait", "inf"], "inf is not a finite number"),
        (["--prometheus-port", "0", "--prometheus-wait", "nan"], "nan is not a finite number"),
        (["--prometheus-host", "0.0.0.0"], "--prometheus-host is for the client metrics'"),
        (["--prometheus-port", "70000"], "70000 is not in the range 0<=x<=65535"),
        (["--prometheus-port", "0", "--prometheus-wait", "-1"], "-1.0 is not in the range x>=0"),
    ],
)
def test_prometheus_options_are_checked_before_the_run(args: list[str], message: str) -> None:
    result = invoke("--url", dead_url(), *args)
    assert result.exit_code in (1, 2)
    assert message in result.output and "Traceback" not in result.output
    assert "requests" not in result.output  # nothing was sent


def test_a_taken_prometheus_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("--url", dead_url(), "--prometheus-port", str(port))
    assert result.exit_code == 1
    assert f"--prometheus-port: cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_otlp_endpoint_without_a_collector_fails_before_the_run() -> None:
    result = invoke("--url", dead_url(), "--otlp-endpoint", dead_url())
    assert result.exit_code == 1
    assert "no collector answers" in result.output and "Traceback" not in result.output


def test_model_option_starts_a_server(tiny_files: TinyModelFiles) -> None:
    data = ok_json(
        "--model",
        str(tiny_files.model.path),
        "--threads",
        "1",
        "-n",
        "4",
        "-c",
        "2",
        "--max-tokens",
        "3",
        "--prompt-tokens",
        "8",
    )
    run = data["runs"][0]
    assert (run["completed"], run["output_tokens"]) == (4, 12)
    assert data["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:9", "--model", "m.gguf"], "--url and --model"),
        (["--threads", "2"], "--model"),
        (["--prompt-tokens", "8", "--prompts-file", __file__], "use one"),
        (["--url", "not a url"], "--url"),
    ],
)
def test_conflicting_options(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("levels", ["0", "a", "1,,2", "99999"])
def test_bad_concurrency_is_a_usage_error(levels: str) -> None:
    result = invoke("-c", levels)
    assert result.exit_code == 2
    assert "--concurrency" in result.output


def test_run_result_json_is_serializable() -> None:
    result = RunResult(1, True, 4, [], 0.0)
    data = result.to_dict()
    assert data["requests"] == data["completed"] == data["errors"] == 0
    json.dumps(data)


def test_the_plot_has_a_panel_for_each_figure_measured_and_none_empty(
    chat_server: ServerManager,
) -> None:
    """Streamed with the server sampled: every panel. Not streamed, not sampled: only
    what was measured (no empty "not sampled" or "streaming only" panel)."""
    from llamatelemetry.bench._plot import draw

    def titles(stream: bool = True, scrape_interval: float = 0.01) -> list[str]:
        config = BenchConfig(url=chat_server.url, requests=4, max_tokens=32, prompt_tokens=8,
                             seed=1, stream=stream, scrape_interval=scrape_interval)  # fmt: skip
        runs = run_benchmark(config).runs
        assert all(run.server for run in runs) == bool(scrape_interval)
        figure = draw(runs)
        texts = [t.get_text() for ax in figure.axes for t in ax.texts]
        assert not texts, texts  # no panel saying it has nothing
        return [ax.get_title() for ax in figure.axes if ax.get_title()]

    everything = titles()
    assert len(everything) == 9 and "Context in use by the slots" in everything
    whole = titles(stream=False, scrape_interval=0)
    assert whole == ["End-to-end latency (client)", "TTFT by level", "Throughput by level"]
