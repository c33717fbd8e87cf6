"""The llama-server processes' CPU time, memory and threads, checked against what ``ps``
says of the same real processes; a server restarted, stopped, or a process gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llamatelemetry.cli import main
from llamatelemetry.telemetry import ProcessMetrics, setup_telemetry
from llamatelemetry.telemetry._process_metrics import read_process
from llamatelemetry.testing import TinyModelFiles

from ..server._support import BACKENDS, manager
from ..server.test_sleep import collected

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="/proc: Linux only")


def ps(pid: int) -> tuple[int, int, float]:
    """``ps``'s resident memory (bytes), threads and CPU seconds of ``pid``."""
    out = subprocess.run(
        ["ps", "-o", "rss=,nlwp=,times=", "-p", str(pid)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return int(out[0]) * 1024, int(out[1]), float(out[2])


def by_pid(found: dict[str, list[tuple[dict[str, Any], float]]], name: str) -> dict[Any, float]:
    return {(a["process.pid"], a.get("cpu.mode")): v for a, v in found.get(name, [])}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_started_server_s_process_is_reported_as_ps_sees_it(
    backend: str, request: pytest.FixtureRequest, tiny_files: TinyModelFiles, tmp_path: Path
) -> None:
    reader = InMemoryMetricReader()
    handle = setup_telemetry(
        "processes", set_global=False, metric_readers=[reader], server_processes=True
    )
    try:
        with manager(backend, request, tmp_path) as server:
            server.start(tiny_files.model.path, n_threads=1)
            pid = server.pid
            assert pid is not None
            with server.client() as client:
                client.completions.create("Once", max_tokens=4)  # some CPU time
            before = ps(pid)
            found = collected(reader)
            after = ps(pid)
            memory = by_pid(found, "process.memory.usage")[(pid, None)]
            assert min(before[0], after[0]) * 0.9 <= memory <= max(before[0], after[0]) * 1.1
            assert by_pid(found, "process.thread.count")[(pid, None)] in (before[1], after[1])
            cpu = by_pid(found, "process.cpu.time")
            assert before[2] - 1 <= cpu[(pid, "user")] + cpu[(pid, "system")] <= after[2] + 1
            assert by_pid(found, "process.memory.virtual")[(pid, None)] >= memory
            [point] = [a for a, _ in found["process.memory.usage"] if a["process.pid"] == pid]
            assert point["server.port"] == server.port
            assert point["process.executable.name"]

            server.restart()  # a new process: followed, the old one no longer reported
            assert server.pid not in (None, pid)
            pids = {a["process.pid"] for a, _ in collected(reader)["process.memory.usage"]}
            assert server.pid in pids and pid not in pids
        gone = {a["process.pid"] for a, _ in collected(reader).get("process.memory.usage", [])}
        assert pid not in gone and server.pid is None  # stopped: nothing of it
    finally:
        handle.shutdown()


def test_a_process_gone_is_left_out_and_bad_targets_are_refused() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    reader = InMemoryMetricReader()
    handle = setup_telemetry("processes", set_global=False, metric_readers=[reader])
    try:
        watch = ProcessMetrics(child.pid, os.getpid(), meter_provider=handle.meter_provider)
        found = by_pid(collected(reader), "process.thread.count")
        assert (os.getpid(), None) in found and (child.pid, None) not in found
        watch.close()
        assert (
            "process.thread.count" not in collected(reader)
            or not collected(reader)["process.thread.count"]
        )
        for bad in (0, -1, True, "123", 1.5):
            with pytest.raises(TypeError, match="process id"):
                ProcessMetrics(bad, meter_provider=handle.meter_provider)
    finally:
        handle.shutdown()
    assert read_process(child.pid) is None


def test_a_name_with_spaces_and_parentheses_is_read_whole(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    fields = ["S", "7"] + ["0"] * 9 + ["250", "50"] + ["0"] * 4 + ["3", "0", "0", "8192", "16"]
    (proc / "42" / "stat").write_text("42 (llama (srv) x) " + " ".join(fields) + " 0 0\n")
    figures = read_process(42, proc)
    assert figures is not None
    assert figures.name == "llama (srv) x" and figures.parent == 7 and figures.threads == 3
    assert (figures.virtual_bytes, figures.resident_bytes) == (
        8192,
        16 * os.sysconf("SC_PAGE_SIZE"),
    )
    assert figures.user_s == 250 / os.sysconf("SC_CLK_TCK")
    (proc / "42" / "stat").write_text("42 (x) S\n")  # cut short: no figures, no error
    assert read_process(42, proc) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "whole number"), ("0", "above 0"), ("999999999", "no such process")],
)
def test_the_exporter_refuses_a_pid_that_is_not_a_process(value: str, message: str) -> None:
    result = CliRunner().invoke(
        main, ["exporter", "--server", "http://a:1", "--pid", value, "--port", "0"]
    )
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
