"""``llamatelemetry exporter``: many servers as one Prometheus target, through a server
going away and coming back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from llamatelemetry.cli import main
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles

from .test_commands import INTERRUPTIBLE, free_port, interrupt, read_until, reap

Samples = dict[tuple[str, str], float]  # (metric, server port) -> value


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10, trust_env=False).text
    return {
        (sample.name, sample.labels.get("server_port", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("llama_cpp_server_")
    }


@contextmanager
def exporting(*urls: str) -> Iterator[int]:
    """``llamatelemetry exporter`` for ``urls`` (collecting at every scrape, 2 s limit),
    running until the block ends (then a Ctrl-C); the port it serves on."""
    port = free_port()
    servers = [arg for url in urls for arg in ("--server", url)]
    command = [*INTERRUPTIBLE, sys.executable, "-c",
               "from llamatelemetry.cli import main; main()", "exporter", *servers,
               "--port", str(port), "--interval", "0", "--timeout", "2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(process, "Press Ctrl-C to stop.")
        yield port
        interrupt(process)
    finally:
        reap(process)


def test_one_target_for_many_servers_through_one_going_away_and_back(
    chat_server: ServerManager, tiny_files: TinyModelFiles, tmp_path: Path
) -> None:
    second = ServerManager(port=free_port(), log_dir=tmp_path)
    options = {"n_parallel": 2, "n_threads": 1, "metrics": True, "slots": True}
    second.start(tiny_files.model.path, **options)
    one, two = str(chat_server.port), str(second.port)
    target = f"http://127.0.0.1:{free_port()}/metrics"
    command = [*INTERRUPTIBLE, sys.executable, "-c", "from llamatelemetry.cli import main; main()",
               "exporter", "--server", chat_server.url, "--server", second.url,
               "--port", target.split(":")[2].split("/")[0], "--interval", "0",
               "--timeout", "1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = read_until(process, "Press Ctrl-C to stop.")
        assert target in ready and chat_server.url in ready and second.url in ready
        with chat_server.client() as client:  # a figure that moves: tokens generated
            client.chat.completions.create(messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=3)  # fmt: skip
        both = scrape(target)
        assert both[("llama_cpp_server_up", one)] == both[("llama_cpp_server_up", two)] == 1
        assert both[("llama_cpp_server_slots_total", two)] == 2
        assert both[("llama_cpp_server_slots_total", one)] == 4
        assert both[("llama_cpp_server_generated_tokens_total", one)] >= 3

        second.stop()
        down = scrape(target)  # the exporter is still there, the server marked down
        assert down[("llama_cpp_server_up", two)] == 0
        assert down[("llama_cpp_server_up", one)] == 1
        assert ("llama_cpp_server_slots_total", two) not in down
        assert down[("llama_cpp_server_slots_total", one)] == 4

        second.start(tiny_files.model.path, **options)  # back, on the same port
        back = scrape(target)
        assert back[("llama_cpp_server_up", two)] == 1
        assert back[("llama_cpp_server_slots_total", two)] == 2

        out, err = interrupt(process)
    finally:
        reap(process)
        second.stop()
    assert process.returncode == 0, err
    assert "exporter stopped" in out and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://a:1", "--server", "http://a:1"], "given twice"),
        (["--server", "ftp://a:1"], "http"),
        ([], "Missing option '--server'"),
    ],
)
def test_bad_servers_are_refused_before_anything_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["exporter", *args, "--port", "0"])
    assert result.exit_code != 0
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://a:1", "--server", "http://a:1/v1"], "share a:1"),
        (["--server", "http://a", "--server", "http://a:80/x"], "share a:80"),
        (["--server", "http://a:1", "--interval", "nan"], "nan is not a finite number"),
        (["--server", "http://a:1", "--interval", "inf"], "inf is not a finite number"),
        (["--server", "http://a:1", "--timeout", "10"], "0.001<=x<=8.0"),
    ],
)
def test_servers_and_limits_that_would_mix_or_lose_series_are_refused(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, ["exporter", *args, "--port", "0"])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_a_huge_metrics_body_holds_no_other_server(chat_server: ServerManager) -> None:
    """One 'server' answers 30 MB of /metrics: refused unread past 2 MiB, so every scrape
    of the exporter stays within its --timeout and the real server keeps its figures."""
    from llamatelemetry.testing._fault_server import FaultServer, Reply, SeenRequest

    huge = b"llamacpp:prompt_tokens_total 1\n" * 1_000_000

    def answer(request: SeenRequest) -> Reply:
        if request.path.startswith("/props"):
            return Reply(200, {"role": "model"})
        return Reply(200, huge if request.path.startswith("/metrics") else [])

    with FaultServer(answer) as bomb, exporting(bomb.url, chat_server.url) as port:
        for _ in range(3):
            began = time.monotonic()
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
            assert time.monotonic() - began < 4
            assert samples[("llama_cpp_server_slots_total", str(chat_server.port))] == 4
            assert ("llama_cpp_server_prompt_tokens_total", str(bomb.port)) not in samples


def test_bodies_costly_to_read_cost_no_other_server_its_figures() -> None:
    """Ten 'servers' each answer /metrics with just under the 2 MiB cap of labelled
    series (46,000 lines, a second of CPU each to parse in full): the exporter reads what
    it reports within the collection's time bound, so every scrape answers, the honest
    server's series are there, and the others are reported down."""
    from llamatelemetry.testing._fault_server import FaultServer

    line = 'llamacpp:prompt_tokens_total{{slot="{}"}} 1\n'
    lines = [line.format(i) for i in range(46_000)]
    heavy = "".join(lines)
    assert len(heavy) < 2 * 1024 * 1024

    from ..telemetry.test_server_metrics_faults import single_server as answer

    honest_body = "llamacpp:prompt_tokens_total 42\nllamacpp:tokens_predicted_total 7\n"
    hostile = [FaultServer(answer(heavy)) for _ in range(10)]
    try:
        with (
            FaultServer(answer(honest_body)) as honest,
            exporting(*[s.url for s in [*hostile, honest]]) as port,
        ):
            for _ in range(2):
                began = time.monotonic()
                reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30, trust_env=False)
                took = time.monotonic() - began
                assert reply.status_code == 200, reply.text[-2000:]
                samples = {
                    (s.name, s.labels.get("server_port", "")): s.value
                    for family in text_string_to_metric_families(reply.text)
                    for s in family.samples
                }
                mine = str(honest.port)
                assert samples[("llama_cpp_server_up", mine)] == 1
                assert samples[("llama_cpp_server_prompt_tokens_total", mine)] == 42
                assert samples[("llama_cpp_server_slots_total", mine)] == 1
                for server in hostile:
                    assert samples[("llama_cpp_server_up", str(server.port))] == 0
                    assert ("llama_cpp_server_slots_total", str(server.port)) not in samples
                # Generous: the bound is --timeout (2 s) plus a little; reading every body
                # in full took 8 s and more (10.8 s and a 500 with ten of them).
                assert took < 6, took
    finally:
        for server in hostile:
            server.close()
