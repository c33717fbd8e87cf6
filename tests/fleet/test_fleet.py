"""A fleet with real parts: three llama-servers behind nginx configured from ``deploy/``,
``llamatelemetry exporter`` bridging them, and Prometheus from ``deploy/`` scraping the
exporter and an instrumented client's own endpoint; then Prometheus's HTTP API is asked.

nginx and Prometheus come from Debian's packages (``.ci/run`` installs them); without them
the tests skip, unless ``LLAMATELEMETRY_REQUIRE_FLEET=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llamatelemetry.api import APIStatusError
from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import start_chat_server
from llamatelemetry.testing._otlp import OTLPReceiver

from .. import debian
from ..cli.test_commands import INTERRUPTIBLE, free_port, read_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_FLEET"
SLOTS = 2  # per server
SERVERS = 3


def _programs() -> tuple[str, str]:
    path = f"{os.environ.get('PATH', '')}:{debian.SBIN}"
    nginx, prometheus = shutil.which("nginx", path=path), shutil.which("prometheus", path=path)
    if nginx is None or prometheus is None:
        why = f"{', '.join(debian.missing())} not installed: run python -m tests (as root)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(why)
        pytest.skip(why)
    return nginx, prometheus


def nginx_config(root: Path, listen: int, upstreams: list[str]) -> Path:
    """deploy/nginx.conf with this fleet's servers and port, inside a main config of its
    own (the deploy file is a conf.d snippet) that keeps every path under ``root``."""
    snippet = (DEPLOY / "nginx.conf").read_text()
    lines = "".join(f"    server {u} max_fails=3 fail_timeout=10s;\n" for u in upstreams)
    snippet, found = re.subn(r"(?m)^\s*server llama-\d+:8080[^;]*;\n", "", snippet)
    assert found >= 1, "deploy/nginx.conf no longer names its upstream servers as expected"
    snippet = snippet.replace("    least_conn;\n", "    least_conn;\n" + lines, 1)
    snippet = snippet.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    (root / "fleet.conf").write_text(snippet)
    main = f"""
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    # what a trace needs to cross the hop: the header nginx passed on, and to which server
    log_format hop '$request_method $uri "$http_traceparent" $upstream_addr';
    access_log {root}/access.log hop;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/fleet.conf;
}}
"""
    path = root / "nginx.conf"
    path.write_text(main)
    return path


def prometheus_config(root: Path, exporter: str, client: str) -> Path:
    """deploy/prometheus.yml, its targets this fleet's, scraped every second."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["llamatelemetry-exporter"]["static_configs"] = [{"targets": [exporter]}]
    jobs["otel-collector"]["static_configs"] = [{"targets": [client]}]  # the client's endpoint
    jobs.pop("llama-server", None)  # llamacpp:* straight from the servers: not asked here
    config["scrape_configs"] = list(jobs.values())
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Fleet:
    root: Path  # nginx's logs among them
    servers: list[ServerManager]
    balancer: str  # nginx's URL
    prometheus: str
    client_metrics: Any  # the instrumented client's telemetry handle

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql},
                           timeout=10, trust_env=False).json()  # fmt: skip
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def settled(self, promql: str, expected: Any, seconds: float = 20) -> list[dict[str, Any]]:
        """The query's result once ``expected(result)`` holds (scrapes take a second)."""
        end = time.monotonic() + seconds
        while True:
            result = self.query(promql)
            if expected(result) or time.monotonic() > end:
                return result
            time.sleep(0.5)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    nginx, prometheus = _programs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers: list[ServerManager] = []
        processes: list[subprocess.Popen[str]] = []
        handle = None
        try:
            for i in range(SERVERS):
                servers.append(start_chat_server(root / f"s{i}", n_parallel=SLOTS))
            exporter_port, balancer_port, prometheus_port = free_port(), free_port(), free_port()
            cli = [
                *INTERRUPTIBLE,
                sys.executable,
                "-c",
                "from llamatelemetry.cli import main; main()",
            ]
            exporter = subprocess.Popen(
                [*cli, "exporter", *(a for s in servers for a in ("--server", s.url)),
                 "--port", str(exporter_port), "--interval", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            processes.append(exporter)
            read_until(exporter, "Press Ctrl-C to stop.")
            handle = setup_telemetry("fleet-client", prometheus_port=0, set_global=False)
            client_target = handle.prometheus_url.split("//")[1].split("/")[0]  # type: ignore[union-attr]
            conf = nginx_config(root, balancer_port, [s.url.split("//")[1] for s in servers])
            processes.append(subprocess.Popen(
                [nginx, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
            prom = prometheus_config(root, f"127.0.0.1:{exporter_port}", client_target)
            processes.append(subprocess.Popen(
                [prometheus, f"--config.file={prom}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
            balancer = f"http://127.0.0.1:{balancer_port}"
            url = f"http://127.0.0.1:{prometheus_port}"
            for target in (f"{balancer}/health", f"{url}/-/ready"):
                _wait_for(target, processes)
            yield Fleet(root, servers, balancer, url, handle)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                for pipe in (process.stdout, process.stderr):
                    if pipe is not None:
                        pipe.close()
            if handle is not None:
                handle.shutdown()
            for server in servers:
                server.stop()


def _wait_for(url: str, processes: list[subprocess.Popen[str]], seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        for process in processes:
            if process.poll() is not None:
                out = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"{process.args[:3]} exited: {out[-2000:]}")
        assert time.monotonic() < end, f"{url} never answered"
        time.sleep(0.2)


def test_the_fleet_as_prometheus_sees_it_after_calls_through_nginx(fleet: Fleet) -> None:
    calls, tokens = 24, 8
    with InstrumentedLlamaCppClient(
        fleet.balancer, meter_provider=fleet.client_metrics.meter_provider
    ) as client:
        for i in range(calls):
            if i % 2:
                list(client.chat.completions.create(
                    messages=[{"role": "user", "content": f"Hi {i}"}], max_tokens=tokens,
                    ignore_eos=True, stream=True,
                ))  # fmt: skip
            else:
                client.chat.completions.create(
                    messages=[{"role": "user", "content": f"Hi {i}"}],
                    max_tokens=tokens,
                    ignore_eos=True,
                )
    # the client's own count, scraped from its endpoint
    counted = fleet.settled(
        "sum(gen_ai_client_operation_duration_seconds_count)",
        lambda r: bool(r) and float(r[0]["value"][1]) >= calls,
    )
    assert float(counted[0]["value"][1]) == calls
    up = fleet.settled("llama_cpp_server_up", lambda r: len(r) == SERVERS)
    assert sorted(r["metric"]["server_port"] for r in up) == sorted(
        str(s.port) for s in fleet.servers
    )
    assert all(r["value"][1] == "1" for r in up)
    slots = fleet.query("llama_cpp_server_slots_total")
    assert {r["metric"]["server_port"]: r["value"][1] for r in slots} == {
        str(s.port): str(SLOTS) for s in fleet.servers
    }
    generated = fleet.settled(
        "llama_cpp_server_generated_tokens_total",
        lambda r: sum(float(x["value"][1]) for x in r) >= calls * tokens,
    )
    per_server = {r["metric"]["server_port"]: float(r["value"][1]) for r in generated}
    assert sum(per_server.values()) == calls * tokens  # every token, once
    assert len(per_server) == SERVERS
    print("generated tokens per server:", json.dumps(per_server))


def test_no_request_is_lost_between_nginx_and_llama_server(fleet: Fleet) -> None:
    """llama-server closes a connection just after a streamed answer: an upstream keepalive
    in nginx sent requests on such connections and lost 2 to 3 in 96 as 502s."""
    from click.testing import CliRunner

    from llamatelemetry.cli import main

    result = CliRunner().invoke(main, ["bench", "--url", fleet.balancer, "-n", "96",
                                       "--concurrency", "6", "--max-tokens", "16",
                                       "--warmup", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.stdout)["runs"]
    assert (run["completed"], run["errors"]) == (96, 0), run.get("error_samples")
    assert run["output_tokens"] == 96 * 16


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
                        list(reply)  # type: ignore[call-overload]
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
    servers = {s.url.split("//")[1] for s in fleet.servers}
    for (_method, _uri, header, upstream), call in zip(hops, calls, strict=True):
        version, trace_id, span_id, flags = header.strip('"').split("-")
        assert (version, trace_id, span_id) == ("00", call["trace_id"], call["span_id"])
        assert int(flags, 16) & 1  # sampled: the server records its part
        assert upstream in servers


def test_dashboard_queries_on_the_fleet(fleet: Fleet) -> None:
    """Every query of deploy/grafana-dashboard.json, as Grafana would send it, on the
    fleet's Prometheus after traffic: answered, and with data unless it shows a feature
    this fleet does not run."""
    from ..test_docs import dashboard_queries

    with InstrumentedLlamaCppClient(
        fleet.balancer, meter_provider=fleet.client_metrics.meter_provider
    ) as client:
        for stream in (False, True) * 4:
            reply = client.chat.completions.create(
                messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=stream
            )
            if stream:
                list(reply)  # type: ignore[call-overload]
        with pytest.raises(APIStatusError):  # a failure, for the errors panel
            client.chat.completions.create(
                messages=[{"role": "user", "content": "word " * 4000}], max_tokens=4
            )
    fleet.settled("sum(gen_ai_client_operation_duration_seconds_count)", bool)
    time.sleep(4)  # a few scrapes, so that rate() has two points for every series
    empty = []
    for query in dashboard_queries():
        promql = re.sub(r"\$__(rate_)?interval", "1m", query)
        promql = re.sub(r"\$[a-z_]+", ".*", promql)  # every variable: all its values
        if promql.startswith("label_values("):
            continue  # a variable's definition, not PromQL
        if not fleet.query(promql):
            empty.append(query)
    print("queries without data:", json.dumps(empty, indent=1))
    # speculative decoding and a router's models: not run by this fleet
    assert [q for q in empty if "speculative" not in q and "model_loaded" not in q] == []
    assert len(empty) <= 2
