"""The fleet of the deployment page, with real parts, run as the page says: three
llama-servers behind nginx configured from ``deploy/``, a router, ``llamatelemetry
exporter`` bridging them, Prometheus configured from ``deploy/``, then ``bench`` through
nginx and the page's questions to Prometheus's HTTP API. The page's blocks run as bash
scripts; only ports, model files and the scrape interval change.

nginx and Prometheus come from Debian's packages (``.ci/run`` installs them); without them
the tests skip, unless ``LLAMATELEMETRY_REQUIRE_FLEET=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamatelemetry.api import APIStatusError
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._otlp import OTLPReceiver

from .. import debian
from ..cli.test_commands import free_ports
from ..gpu import build_fake_nvml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "deployment.md"
SECTION = "## Without Docker: what the test suite runs"
REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_FLEET"
BALANCED = (8081, 8082, 8083)  # the page's servers behind nginx
ROUTER = 8084
PORTS = (8080, *BALANCED, ROUTER, 9090, 9464, 9465)  # every port the page listens on
START_SECONDS = 90  # four servers loading on two cores, nginx, Prometheus
REQUESTS, TOKENS = 96, 16  # the page's bench


def _programs() -> None:
    """nginx, Prometheus and curl are there (the page adds Debian's /usr/sbin to PATH)."""
    if debian.missing():
        why = f"{', '.join(debian.missing())} not installed: run python -m tests (as root)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(why)
        pytest.skip(why)


def page_blocks() -> list[str]:
    """The bash blocks of the page's fleet section: start, load, ask."""
    text = PAGE.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"(?ms)^```bash\n(.*?)^```", section)
    assert len(blocks) == 3, "the fleet section should hold three bash blocks"
    return blocks


def localized(blocks: list[str], ports: dict[int, int], model: Path, models: Path) -> list[str]:
    """The page's commands with this run's ports, tiny model files and a 1 s scrape:
    nothing else changes. Every substitution must find what it replaces."""

    def port(text: str) -> str:
        return str(ports[int(text)])  # a port the page uses that PORTS lacks: KeyError

    changes: dict[str, Callable[[str], str]] = {
        r"(?<=127\.0\.0\.1:)\d+\b": port,
        r"(?<=--port )\d+\b": port,
        r"(?<=--prometheus-port )\d+\b": port,
        r"\bdraft\.gguf\b": lambda _: str(model),
        r"\bmodel\.gguf\b": lambda _: str(model),
        r"(?<=serve )models/": lambda _: f"{models}/",
        r"scrape_interval: 5s/": lambda _: "scrape_interval: 1s/",
    }
    for pattern in changes:
        assert any(re.search(pattern, b) for b in blocks), f"the page no longer has {pattern}"
    # one pass over each block: no change sees another's output
    anyone = re.compile("|".join(f"(?P<c{i}>{p})" for i, p in enumerate(changes)))
    made = list(changes.values())
    return [anyone.sub(lambda m: made[int(str(m.lastgroup)[1:])](m[0]), b) for b in blocks]


@dataclass
class Fleet:
    root: Path  # the page's fleet/ folder: nginx's access log, bench.json
    ports: dict[int, int]  # the page's port: this run's
    env: dict[str, str]
    blocks: list[str]  # localized

    @property
    def balancer(self) -> str:
        return f"http://127.0.0.1:{self.ports[8080]}"

    def run(self, block: int, seconds: float) -> str:
        """Run one of the page's blocks in fleet/, as a reader would; its output."""
        done = subprocess.run(
            ["bash", "-e", "-c", self.blocks[block]], cwd=self.root, env=self.env,
            capture_output=True, text=True, timeout=seconds,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def ask(self) -> list[list[dict[str, Any]]]:
        """The page's queries (block 3), each's result."""
        answers = [json.loads(line) for line in self.run(2, 60).splitlines() if line.strip()]
        assert all(a["status"] == "success" for a in answers), answers
        return [a["data"]["result"] for a in answers]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.ports[9090]}/api/v1/query"
        answer = httpx.get(url, params={"query": promql}, timeout=10, trust_env=False).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]


def _end_group(group: int, seconds: float = 20) -> None:
    """SIGTERM to everything the page started (serve stops its server on it), then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def fleet(tiny_files: TinyModelFiles, llama_server_binary: Path) -> Iterator[Fleet]:
    _programs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "deploy").symlink_to(ROOT / "deploy")
        models = root / "models"
        models.mkdir()
        (models / "tiny.gguf").symlink_to(tiny_files.model.path)
        ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        blocks = localized(page_blocks(), ports, tiny_files.model.path, models)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_", "OTEL_"))}
        path = os.environ.get("PATH", "").split(":")
        # this environment's llamatelemetry, and PATH as a user has it: no /usr/sbin
        path = [Path(sys.executable).parent.as_posix()] + [p for p in path if "sbin" not in p]
        env["PATH"] = ":".join(path)
        env["LLAMA_SERVER_PATH"] = str(llama_server_binary)
        # the exporter's --gpu reads the stand-in NVIDIA driver: the GPU panels have data
        env["LD_LIBRARY_PATH"] = str(build_fake_nvml(root / "nvidia"))
        log = (root / "start.log").open("w")
        start = subprocess.Popen(
            ["bash", "-e", "-c", blocks[0]], cwd=root, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            try:
                assert start.wait(START_SECONDS) == 0
            except (AssertionError, subprocess.TimeoutExpired):
                raise AssertionError(
                    f"the page's fleet did not start: {(root / 'start.log').read_text()[-4000:]}"
                ) from None
            yield Fleet(root / "fleet", ports, env, blocks)
        finally:
            _end_group(start.pid)
            log.close()


def test_the_page_s_fleet_as_prometheus_sees_it_after_bench(fleet: Fleet) -> None:
    """Blocks 2 and 3 of the page as they are: bench through nginx, then the page's
    queries, whose answers are what the page says."""
    fleet.run(1, 300)
    [run] = json.loads((fleet.root / "bench.json").read_text())["runs"]
    assert (run["completed"], run["errors"]) == (REQUESTS, 0), run.get("error_samples")
    assert run["output_tokens"] == REQUESTS * TOKENS  # nothing lost between nginx and a server

    balanced = {str(fleet.ports[p]) for p in BALANCED}
    router = str(fleet.ports[ROUTER])
    end = time.monotonic() + 30  # the exporter's own 5 s interval, then a scrape
    while True:
        counted, up, slots, generated, accepted, loaded = fleet.ask()
        per_server = {r["metric"]["server_port"]: float(r["value"][1]) for r in generated}
        if sum(per_server.values()) >= REQUESTS * TOKENS or time.monotonic() > end:
            break
        time.sleep(1)
    answers = (counted, up, slots, generated, accepted, loaded)
    for answer in answers:  # the figures, by server port
        print([(r["metric"].get("server_port"), r["value"][1]) for r in answer])
    assert float(counted[0]["value"][1]) == run["requests"] == REQUESTS  # the client's count
    assert {r["metric"]["server_port"]: r["value"][1] for r in up} == dict.fromkeys(
        [*balanced, router], "1"
    )
    assert {r["metric"]["server_port"]: r["value"][1] for r in slots} == dict.fromkeys(
        balanced, "2"
    )
    assert set(per_server) == balanced  # the router generated nothing
    assert sum(per_server.values()) == REQUESTS * TOKENS  # every token, once
    assert all(tokens > 0 for tokens in per_server.values())  # least_conn spread them
    assert float(accepted[0]["value"][1]) > 0  # the servers drafted, and kept drafts
    assert [(r["metric"]["server_port"], r["metric"]["gen_ai_request_model"], r["value"][1])
            for r in loaded] == [(router, "tiny", "0")]  # fmt: skip


def test_a_trace_continues_across_nginx(fleet: Fleet) -> None:
    """The client's span is the parent nginx passes on: llama-server's own spans (when it
    exports them) hang under it."""
    with OTLPReceiver() as receiver:
        telemetry = setup_telemetry(
            "fleet-trace", otlp_endpoint=receiver.url, set_global=False, export_interval_s=3600
        )
        tracer = telemetry.tracer_provider.get_tracer("app")
        with InstrumentedLlamaCppClient(
            fleet.balancer, tracer_provider=telemetry.tracer_provider
        ) as client:
            with tracer.start_as_current_span("handle request"):
                for stream in (False, True):
                    reply = client.chat.completions.create(
                        messages=[{"role": "user", "content": "Hi"}], max_tokens=2, stream=stream
                    )
                    if stream:
                        list(reply)
        assert telemetry.force_flush()
        spans = receiver.spans()
        telemetry.shutdown()
    [app] = [s for s in spans if s["name"] == "handle request"]
    calls = [s for s in spans if s["name"].startswith("chat")]
    assert len(calls) == 2
    assert all((s["trace_id"], s["parent_span_id"]) == (app["trace_id"], app["span_id"])
               for s in calls)  # fmt: skip
    hops = [line.split(" ") for line in (fleet.root / "access.log").read_text().splitlines()
            if line.startswith("POST /v1/chat/completions")][-2:]  # fmt: skip
    servers = {f"127.0.0.1:{fleet.ports[p]}" for p in BALANCED}
    for (_method, _uri, header, upstream), call in zip(hops, calls, strict=True):
        version, trace_id, span_id, flags = header.strip('"').split("-")
        assert (version, trace_id, span_id) == ("00", call["trace_id"], call["span_id"])
        assert int(flags, 16) & 1  # sampled: the server records its part
        assert upstream in servers


def test_dashboard_queries_on_the_fleet(fleet: Fleet) -> None:
    """Every query of deploy/grafana-dashboard.json, as Grafana would send it, on the
    page's Prometheus, after traffic from an application serving its own metrics on the
    page's applications port: answered, and every one with data."""
    from ..test_docs import dashboard_queries

    app = setup_telemetry("fleet-app", prometheus_port=fleet.ports[9465], set_global=False)
    try:
        with InstrumentedLlamaCppClient(
            fleet.balancer, meter_provider=app.meter_provider
        ) as client:
            for stream in (False, True) * 4:
                reply = client.chat.completions.create(
                    messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=stream
                )
                if stream:
                    list(reply)
            with pytest.raises(APIStatusError):  # a failure, for the errors panel
                client.chat.completions.create(
                    messages=[{"role": "user", "content": "word " * 4000}], max_tokens=4
                )
        for _ in range(3):  # rate() wants two points of every series
            assert app.wait_for_scrape(20)
        empty = []
        for query in dashboard_queries():
            promql = re.sub(r"\$__(rate_)?interval", "1m", query)
            promql = re.sub(r"\$[a-z_]+", ".*", promql)  # every variable: all its values
            if promql.startswith("label_values("):
                continue  # a variable's definition, not PromQL
            if not fleet.query(promql):
                empty.append(query)
    finally:
        app.shutdown()
    assert empty == []
