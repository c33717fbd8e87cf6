"""``llamatelemetry exporter``: many llama-servers' ``/metrics`` and ``/slots`` as one
Prometheus scrape target, each server's series told apart by ``server_address`` and
``server_port``, and ``llama_cpp_server_up`` saying which servers answered."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import click
from rich.text import Text

from ..api import LlamaCppClient, redact_url
from ..api._internal import host_and_port
from ._output import out_console, signals_held, stop_signals_interrupt
from ._user_errors import CliError, finite

__all__ = ["exporter"]

POLL_SECONDS = 0.2
# A server's /metrics is a few KB and its /slots some KB a slot: a body past this is not a
# llama-server's, and parsing it would hold every other server's figures.
MAX_BODY_BYTES = 2 * 1024 * 1024
# The OpenTelemetry SDK gives one collection 10 s: a scrape must end well before, or the
# collection fails and every server's figures with it.
MAX_TIMEOUT_S = 8.0


@click.command()
@click.option(
    "--server",
    "servers",
    multiple=True,
    required=True,
    metavar="URL",
    help="A llama-server to scrape (repeat for each; a router reports each of its models).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    help="Port of the /metrics endpoint (0: a free one).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    callback=finite,
    help="Scrape each server at most this often, in seconds (0: at every collection).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.001, max=MAX_TIMEOUT_S),
    default=2.0,
    show_default=True,
    help="Give up on a server's scrape after this many seconds, reading its answers "
    f"included: it is reported down (at most {MAX_TIMEOUT_S:g}: the servers share one "
    "collection's 10 s).",
)
@click.option(
    "--pid",
    "pids",
    multiple=True,
    metavar="PID[=URL]",
    help="Also report this local process's CPU time, memory and threads (a llama-server "
    "and its model instances; =URL labels them as that server's). Repeat for each.",
)
@click.option(
    "--gpu",
    is_flag=True,
    help="Also report this machine's NVIDIA GPUs (utilisation, memory, power, energy, "
    "temperature, SM clock; needs the gpu extra and a driver).",
)
@click.option(
    "--api-key",
    envvar="LLAMA_API_KEY",
    default=None,
    help="The servers' API key [default: $LLAMA_API_KEY].",
)
def exporter(
    servers: tuple[str, ...],
    host: str,
    port: int,
    interval: float,
    timeout: float,
    pids: tuple[str, ...],
    gpu: bool,
    api_key: str | None,
) -> None:
    """Serve many llama-servers' metrics as one Prometheus endpoint, until Ctrl-C.

    Each server is scraped at most every --interval seconds, inside Prometheus's own
    scrape; a server that goes away is reported with llama_cpp_server_up 0 (its other
    series absent) and picked up again when it comes back. A router's models in memory
    are asked at once, each with its own llama_cpp_server_up (with gen_ai_request_model);
    a server redeployed as a router, or back, is read in its new role at the next scrape.
    """
    from ..telemetry import GpuMetrics, LlamaServerMetrics, ProcessMetrics, setup_telemetry

    if len(set(servers)) < len(servers):
        raise CliError("a --server is given twice: each server once")
    processes = [_process(value) for value in pids]
    try:
        clients = [
            LlamaCppClient(url, api_key=api_key, max_retries=0, timeout=timeout,
                           max_response_bytes=MAX_BODY_BYTES)
            for url in servers
        ]  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    seen: dict[tuple[str, int], str] = {}
    for client in clients:  # series are told apart by address and port: two must differ
        where = host_and_port(client.base_url)
        if where in seen:
            for each in clients:
                each.close()
            raise CliError(f"--server {redact_url(client.base_url)} and "
                           f"{redact_url(seen[where])} share {where[0]}:{where[1]}: their "
                           "series could not be told apart")  # fmt: skip
        seen[where] = client.base_url
    try:
        handle = setup_telemetry(
            "llamatelemetry-exporter", prometheus_port=port, prometheus_host=host, set_global=False
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bridges: list[LlamaServerMetrics | ProcessMetrics | GpuMetrics] = []
    console = out_console()
    try:  # from here, a Ctrl-C at any moment (even just after the line saying so) stops it
        with stop_signals_interrupt():
            bridges += [
                LlamaServerMetrics(
                    client, interval, meter_provider=handle.meter_provider, timeout=timeout
                )
                for client in clients
            ]
            if processes:
                bridges.append(ProcessMetrics(*processes, meter_provider=handle.meter_provider))
            gpus = GpuMetrics(meter_provider=handle.meter_provider) if gpu else None
            if gpus is not None:
                bridges.append(gpus)
            with signals_held():
                console.print(
                    f"Exporting the metrics of {len(servers)} server(s) at {handle.prometheus_url}",
                    soft_wrap=True,
                )
                for client in clients:
                    console.print(f"  {client.base_url}", soft_wrap=True)
                for process in processes:
                    console.print(f"  process {process.pid}", soft_wrap=True)
                if gpus is not None:
                    console.print(f"  GPUs: {gpus.why or 'NVIDIA, through NVML'}", soft_wrap=True)
                console.print(Text("Press Ctrl-C to stop.", style="dim"))
                console.file.flush()
            while True:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        for bridge in bridges:
            bridge.close()
        for client in clients:
            client.close()
        handle.shutdown()
    console.print(Text("\n✓ exporter stopped", style="green"))


@dataclass(frozen=True)
class _Process:
    """A process the exporter watches, and the server whose it is (if said)."""

    pid: int
    url: str | None = None


def _process(value: str) -> _Process:
    """``--pid PID[=URL]``: a local process that exists, and perhaps its server's URL."""
    number, _, url = value.partition("=")
    try:
        pid = int(number)
    except ValueError:
        raise CliError(f"--pid {value!r}: PID is a process id, a whole number") from None
    if pid <= 0:
        raise CliError(f"--pid {value!r}: PID is a process id, a whole number above 0")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CliError(f"--pid {pid}: no such process") from None
    except PermissionError:
        pass  # another user's: /proc may still say its figures
    return _Process(pid, url or None)
