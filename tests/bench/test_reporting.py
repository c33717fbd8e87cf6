"""``bench`` says what it measured, in the words a reader will compare with other tools:
the server it started, the prompt lengths the server counts, the SLO's target, one clock
for the progress bar and the report, the definitions of TPOT and ITL, and telemetry that
tells measured requests from warm-ups and calibration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.bench import (
    PHASE_ATTRIBUTE,
    Workload,
    open_client,
    run_load,
    synthetic_prompts,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._otlp import OTLPReceiver

from .test_load import invoke, ok_json

QUICK = ["--max-tokens", "2", "--prompt-tokens", "16", "--scrape-interval", "0"]

# -- the server --model starts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "slots"),
    [
        (["-c", "1"], 1),
        (["-c", "1,3"], 3),
        (["--rate", "50"], 4),  # no concurrency asked: llama-server's own default
        (["--rate", "50", "--max-concurrency", "2"], 2),
        (["-c", "1", "--rate", "50"], 4),  # the open-loop run needs the slots too
    ],
)
def test_a_started_server_has_the_slots_the_help_promises(
    tiny_files: TinyModelFiles, args: list[str], slots: int
) -> None:
    data = ok_json("--model", str(tiny_files.model.path), "--threads", "1", "-n", "2",
                   *args, *QUICK)  # fmt: skip
    assert data["started_server"]["total_slots"] == slots  # as the server itself says
    assert data["started_server"]["slot_context"] >= 16 + 2


def test_the_help_says_how_many_slots_a_started_server_has() -> None:
    text = " ".join(invoke("--help").output.split())
    assert "slots = the largest concurrency" not in text
    assert "one slot for each request of the largest -c" in text
    assert "llama-server's default of 4" in text


# -- prompt lengths --------------------------------------------------------------------------


def test_prompt_tokens_are_what_the_server_counts(chat_server: ServerManager) -> None:
    data = ok_json("--url", chat_server.url, "-n", "6", "--max-tokens", "2", "--prompt-tokens",
                   "64", "--seed", "5", "--scrape-interval", "0")  # fmt: skip
    counted = [r["prompt_tokens"] for r in data["runs"][0]["per_request"]]
    assert all(56 <= n <= 72 for n in counted), counted  # chat template included
    prompts = data["prompts"]
    assert prompts["tokens"] == 64 and prompts["template_tokens"] >= 10
    human = invoke("--url", chat_server.url, "-n", "2", "--max-tokens", "2", "--prompt-tokens",
                   "64", "--scrape-interval", "0")  # fmt: skip
    assert human.exit_code == 0, human.output
    template = f"chat template's {prompts['template_tokens']} included"
    assert f"~64 prompt tokens as the server counts them ({template})" in human.stdout


def test_a_prompt_shorter_than_the_chat_template_says_so(chat_server: ServerManager) -> None:
    data = ok_json("--url", chat_server.url, "-n", "2", "--max-tokens", "2", "--prompt-tokens",
                   "4", "--scrape-interval", "0")  # fmt: skip
    template = data["prompts"]["template_tokens"]
    counted = [r["prompt_tokens"] for r in data["runs"][0]["per_request"]]
    assert all(n > template for n in counted)  # the template, and a few words of the prompt
    human = invoke("--url", chat_server.url, "-n", "2", "--max-tokens", "2", "--prompt-tokens",
                   "4", "--scrape-interval", "0")  # fmt: skip
    text = " ".join(human.output.split())
    assert f"--prompt-tokens 4 is less than the chat template's own {template} tokens" in text


# -- the SLO line ------------------------------------------------------------------------------


def test_the_slo_line_names_its_target(chat_server: ServerManager) -> None:
    missed = invoke("--url", chat_server.url, "-n", "2", *QUICK, "--slo", "e2e=1us")
    assert missed.exit_code == 0, missed.output
    assert "0.0% of requests met it (target 90%: missed)" in missed.stdout
    assert "misses 90%" not in missed.stdout
    met = invoke("--url", chat_server.url, "-n", "2", *QUICK, "--slo", "e2e=100s",
                 "--slo-attainment", "0.5")  # fmt: skip
    assert "100.0% of requests met it (target 50%: met)" in met.stdout


# -- one clock -----------------------------------------------------------------------------------


def bar_and_report(stderr: str, stdout: str, bar_label: str, title: str) -> tuple[str, str]:
    """The seconds a level's progress bar ended on, and the duration its report gives."""
    bar = re.search(rf"(?m)^{bar_label} .*?([\d,.]+ s)\s*$", stderr)
    assert bar is not None, stderr
    report = re.search(rf"(?m)^{title}  ·  .*  ·  ([\d,.]+ s)$", stdout)
    assert report is not None, stdout
    return bar.group(1), report.group(1)


def test_the_progress_bar_shows_the_levels_own_duration(chat_server: ServerManager) -> None:
    """Its clock starts after the level's warm-up, and ends on the duration reported."""
    result = invoke("--url", chat_server.url, "-n", "3", "-c", "1,2", "--warmup", "4", *QUICK)
    assert result.exit_code == 0, result.output
    for level in ("1", "2"):
        bar, report = bar_and_report(
            result.stderr, result.stdout, f"concurrency   {level}", f"Concurrency {level}"
        )
        assert bar == report
    timed = invoke("--url", chat_server.url, "--rate", "40", "--duration", "0.2", *QUICK)
    assert timed.exit_code == 0, timed.output
    bar, report = bar_and_report(timed.stderr, timed.stdout, "     40 req/s", "40 req/s")
    assert bar == report


# -- what TPOT and ITL mean ------------------------------------------------------------------------


def test_tpot_and_itl_carry_their_definitions(chat_server: ServerManager, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    data = ok_json("--url", chat_server.url, "-n", "2", *QUICK, "--html", str(page))
    definitions = data["metric_definitions"]
    assert set(definitions) == set(data["runs"][0]["metrics"])
    assert "guidellm's ITL" in definitions["tpot_ms"] and "vLLM's TPOT" in definitions["tpot_ms"]
    assert "vLLM's ITL" in definitions["itl_ms"] and "pooled" in definitions["itl_ms"]
    html = page.read_text()
    assert "guidellm&#x27;s ITL" in html and "vLLM&#x27;s ITL" in html
    human = invoke("--url", chat_server.url, "-n", "2", "-c", "1,2", *QUICK)
    text = " ".join(human.stdout.split())
    assert "Time per output token (TPOT)" in text and "Inter-token latency (ITL)" in text
    assert "TPOT: each request's (end-to-end − TTFT) / (output tokens − 1)" in text
    assert "= guidellm's ITL" in text and "= vLLM's ITL" in text
    assert text.count("guidellm's ITL") >= 3  # under each level's table and the sweep's


# -- telemetry: measured requests, marked --------------------------------------------------------


def chat_durations(metrics: dict[str, list[dict[str, Any]]], operation: str) -> int:
    points = [
        p for p in metrics.get("gen_ai.client.operation.duration", [])
        if p["attributes"].get("gen_ai.operation.name") == operation
    ]  # fmt: skip
    return max((p["count"] for p in points), default=0)  # cumulative: the last export


def test_otlp_marks_warmup_and_calibration_and_counts_only_measured_requests(
    chat_server: ServerManager,
) -> None:
    with OTLPReceiver() as receiver:
        data = ok_json("--url", chat_server.url, "-n", "3", "--warmup", "1", *QUICK,
                       "--otlp-endpoint", receiver.url)  # fmt: skip
        assert data["runs"][0]["completed"] == 3
        spans, metrics = receiver.spans(), receiver.metrics()
    phase = "llamatelemetry.bench.phase"
    assert all(phase in s["attributes"] for s in spans), [s["name"] for s in spans]
    chats = [s["attributes"][phase] for s in spans if s["name"].startswith("chat")]
    assert sorted(chats) == ["measured"] * 3 + ["warmup"]
    others = {s["name"].split()[0]: s["attributes"][phase] for s in spans}
    assert others["tokenize"] == others["apply_template"] == "calibration"
    assert chat_durations(metrics, "chat") == 3  # the warm-up is not a measurement
    assert chat_durations(metrics, "tokenize") == chat_durations(metrics, "apply_template") == 0
    assert json.dumps(data)  # the report is whole


async def test_the_library_keeps_warmups_out_of_the_metrics(
    chat_server: ServerManager,
    providers: tuple[TracerProvider, MeterProvider, InMemoryMetricReader],
    span_exporter: InMemorySpanExporter,
) -> None:
    tracer_provider, meter_provider, reader = providers
    client = open_client(
        chat_server.url, concurrency=2, tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )  # fmt: skip
    async with client:
        workload = Workload(await synthetic_prompts(client, 5, tokens=24), requests=3, warmup=2,
                            max_tokens=2)  # fmt: skip
        result = await run_load(client, workload, 2)
    assert result.completed == 3
    phases = [str((s.attributes or {}).get(PHASE_ATTRIBUTE))
              for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]  # fmt: skip
    assert sorted(phases) == ["measured"] * 3 + ["warmup"] * 2
    data = reader.get_metrics_data()
    assert data is not None
    counts = [
        getattr(point, "count", None)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.operation.duration"
        for point in metric.data.data_points
    ]
    assert counts == [3]  # the measured chats: no warm-up, no tokenize


# -- the GPUs, sampled -----------------------------------------------------------------------


def bench_with_driver(driver: Path | None, *args: str) -> tuple[Any, str]:
    """``llamatelemetry bench`` in a fresh interpreter whose NVML finds ``driver`` (None:
    this machine's own, which has none); its JSON (or text) and its stderr."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if driver is not None:
        env.update(LD_LIBRARY_PATH=str(driver), FAKE_NVML_DEVICES="2")
    done = subprocess.run(
        [sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return (json.loads(done.stdout) if "--json" in args else done.stdout), done.stderr


def test_gpu_figures_per_level_are_the_driver_s(chat_server: ServerManager, tmp_path: Path) -> None:
    from ..gpu import build_fake_nvml

    driver = build_fake_nvml(tmp_path / "nvidia")
    page = tmp_path / "report.html"
    args = ["--url", chat_server.url, "-n", "4", "-c", "1,2", "--max-tokens", "4",
            "--prompt-tokens", "16", "--gpu", "--scrape-interval", "0.02"]  # fmt: skip
    data, _ = bench_with_driver(driver, *args, "--json", "--html", str(page))
    assert data["gpu_unavailable"] is None and data["config"]["gpu"] is True
    for run in data["runs"]:
        gpu = run["gpu"]
        assert gpu["devices"] == ["Fake GPU 0", "Fake GPU 1"]
        assert gpu["samples"] >= 2  # the run's first and last readings at least
        assert gpu["utilization_mean"] == 0.405  # 40 % and 41 %
        assert gpu["memory_peak_bytes"] == 5 * 2**30  # 2 GiB and 3 GiB together
        assert gpu["power_mean_w"] == 300.001
        # each reading moves each device's counter 1 J: first to last, samples - 1 each
        assert gpu["energy_j"] == 2 * (gpu["samples"] - 1)
        assert gpu["energy_per_output_token_j"] == round(gpu["energy_j"] / run["output_tokens"], 6)
    html = page.read_text()
    assert "J per output token" in html and "GPU util" in html


def test_the_gpu_line_of_a_level() -> None:
    import io

    from rich.console import Console

    from llamatelemetry.bench._gpu_watch import GpuSummary
    from llamatelemetry.bench._records import RequestRecord, RunResult
    from llamatelemetry.cli._render import _print_run

    gpu = GpuSummary(("Fake GPU 0", "Fake GPU 1"), 3, 0.405, 5 * 2**30, 300.0, 4.0)
    record = RequestRecord(0, latency=0.1, output_tokens=4)
    console = Console(file=io.StringIO(), width=200)
    _print_run(console, RunResult(1, True, 4, [record], 0.1, gpu=gpu))
    text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert "GPU (sampled) 2 × Fake GPU 0 · utilisation 40% mean · memory 5.00 GiB peak · " in text
    assert "1.000 J per output token" in text  # 4 J over 4 tokens


def test_gpu_asked_without_a_driver_says_so_and_measures_the_rest(
    chat_server: ServerManager, tmp_path: Path
) -> None:
    """This machine's own missing driver (in this process: there is none to find)."""
    page = tmp_path / "report.html"
    args = ["--url", chat_server.url, "-n", "2", *QUICK, "--gpu"]
    data = ok_json(*args, "--html", str(page))
    assert data["gpu_unavailable"] == "no NVIDIA driver (NVML Shared Library Not Found)"
    assert [run["gpu"] for run in data["runs"]] == [None]
    assert data["runs"][0]["completed"] == 2
    assert "GPU util" not in page.read_text()  # nothing sampled: no empty columns
    text = invoke(*args).stdout
    assert "GPUs not sampled: no NVIDIA driver (NVML Shared Library Not Found)" in " ".join(
        text.split()
    )


# -- CSV -------------------------------------------------------------------------------------


def test_the_csv_tables_say_what_the_json_says(chat_server: ServerManager, tmp_path: Path) -> None:
    import csv

    table = tmp_path / "bench.csv"
    data = ok_json("--url", chat_server.url, "-n", "3", "-c", "1,2", "--repeat", "2", *QUICK,
                   "--csv", str(table))  # fmt: skip
    with table.open(newline="") as file:
        requests = list(csv.DictReader(file))
    with (tmp_path / "bench.levels.csv").open(newline="") as file:
        levels = list(csv.DictReader(file))
    runs = data["runs"]
    assert [(row["level"], row["repeat"]) for row in levels] == [
        ("concurrency 1", "0"), ("concurrency 1", "1"), ("concurrency 2", "0"),
        ("concurrency 2", "1"),
    ]  # fmt: skip
    assert len(requests) == sum(len(run["per_request"]) for run in runs) == 12
    for row, run in zip(levels, runs, strict=True):
        assert int(row["completed"]) == run["completed"] == 3
        assert float(row["request_throughput"]) == run["request_throughput"]
        assert float(row["ttft_client_median_ms"]) == run["metrics"]["ttft_ms"]["client"]["median"]
        assert row["itl_server_p99_ms"] == ""  # ITL is the client's only: an empty cell
        assert row["gpu_utilization_mean"] == ""  # not sampled
    first = runs[0]["per_request"][0]
    [row] = [
        r for r in requests if (r["level"], r["repeat"], r["index"]) == ("concurrency 1", "0", "0")
    ]
    assert row["ok"] == "true" and float(row["ttft_ms"]) == first["ttft_ms"]
    assert int(row["output_tokens"]) == first["output_tokens"] == 2
    assert row["error"] == ""
    result = invoke("--url", chat_server.url, "-n", "2", *QUICK, "--csv", "/no/such/folder/b.csv")
    assert result.exit_code != 0 and "--csv: no folder /no/such/folder" in result.output


def test_the_percentiles_asked_for_are_in_every_report(
    chat_server: ServerManager, tmp_path: Path
) -> None:
    import csv

    from llamatelemetry.bench import percentile

    table = tmp_path / "bench.csv"
    data = ok_json("--url", chat_server.url, "-n", "8", "-c", "2", *QUICK,
                   "--percentiles", "50,95,99.9", "--csv", str(table))  # fmt: skip
    assert data["config"]["percentiles"] == [50.0, 95.0, 99.9]
    [run] = data["runs"]
    ttft = run["metrics"]["ttft_ms"]["client"]
    assert set(ttft["percentiles"]) == {"p50", "p95", "p99.9"}
    ordered = sorted(r["ttft_ms"] for r in run["per_request"])
    assert ttft["percentiles"]["p95"] == pytest.approx(percentile(ordered, 95), abs=2e-3)
    assert ttft["percentiles"]["p50"] == ttft["median"]  # the fixed fields stay
    with (tmp_path / "bench.levels.csv").open(newline="") as file:
        [row] = list(csv.DictReader(file))
    assert float(row["ttft_client_p99.9_ms"]) == ttft["percentiles"]["p99.9"]
    assert "ttft_client_p90_ms" not in row  # only what was asked
    human = invoke("--url", chat_server.url, "-n", "4", *QUICK, "--percentiles", "75,99.9")
    assert human.exit_code == 0, human.output
    header = next(line for line in human.stdout.splitlines() if "measured by" in line)
    assert header.split()[-3:] == ["mean", "p75", "p99.9"]


@pytest.mark.parametrize(
    ("value", "says"),
    [("101", "101.0 is not a percentile within 0..100"), ("90,90", "given twice"),
     ("p99", "'p99' is not a percentile")],
)  # fmt: skip
def test_percentiles_that_mean_nothing_are_refused(value: str, says: str) -> None:
    result = invoke("--url", "http://127.0.0.1:9", "--percentiles", value)
    assert result.exit_code == 2 and says in result.output
