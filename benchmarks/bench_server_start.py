"""Server start-to-ready: ``ServerManager.start`` against launching the same backend
directly (``subprocess.Popen`` of the same command, then ``GET /health`` every
``HEALTH_POLL_INTERVAL`` seconds until 200, as the manager polls), on the tiny model,
alternating.

    python benchmarks/bench_server_start.py [--rounds 10]

What the manager adds: GGUF checks, a free port, a log file, SIGINT held while forking,
its bookkeeping. Target: ServerManager / direct <= 1.10 (the issue sets none; the
manager should cost no more than noise). Stopping is timed too, for information.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import machine

from llamatelemetry.server import ServerManager
from llamatelemetry.server._manager import HEALTH_POLL_INTERVAL
from llamatelemetry.server._options import ServerOptions
from llamatelemetry.testing import build_tiny_files

START_OPTIONS = {"n_threads": 1}  # everything else: ServerManager.start's defaults


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(options: ServerOptions, backend: str, binary: str | None) -> list[str]:
    if backend == "binary":
        assert binary is not None
        return [binary, *options.to_argv()]
    return [
        sys.executable,
        "-m",
        "llamatelemetry.server._embedded",
        json.dumps(options.to_embedded_config()),
    ]


def direct(model: Path, log_dir: Path, backend: str, binary: str | None) -> tuple[float, float]:
    """Seconds to ready and to stopped, launching the backend by hand."""
    options = ServerOptions(model_path=model, port=free_port(), **START_OPTIONS)  # type: ignore[arg-type]
    health = f"http://127.0.0.1:{options.port}/health"
    with (
        (log_dir / f"direct-{options.port}.log").open("ab") as log,
        httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5), trust_env=False) as http,
    ):
        started = time.perf_counter()
        process = subprocess.Popen(
            command(options, backend, binary),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}")
                try:
                    if http.get(health).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(HEALTH_POLL_INTERVAL)
            ready = time.perf_counter() - started
        finally:
            stopping = time.perf_counter()
            process.terminate()
            process.wait(10)
    return ready, time.perf_counter() - stopping


def managed(model: Path, log_dir: Path) -> tuple[float, float, str]:
    manager = ServerManager(port=0, log_dir=log_dir)
    started = time.perf_counter()
    manager.start(model, **START_OPTIONS)  # type: ignore[arg-type]
    ready = time.perf_counter() - started
    stopping = time.perf_counter()
    manager.stop()
    return ready, time.perf_counter() - stopping, manager.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_files(tmp).model.path
        log_dir = Path(tmp) / "logs"
        log_dir.mkdir()
        _, _, backend = managed(model, log_dir)  # warm-up; which backend "auto" picks
        binary = None
        if backend == "binary":
            from llamatelemetry.server._manager import _find_binary

            found = _find_binary(None)
            binary = os.fspath(found) if found else None
        direct(model, log_dir, backend, binary)
        times: dict[str, list[float]] = {"ServerManager": [], "direct": []}
        stops: dict[str, list[float]] = {"ServerManager": [], "direct": []}
        for i in range(args.rounds):
            for name in ("ServerManager", "direct") if i % 2 == 0 else ("direct", "ServerManager"):
                if name == "direct":
                    ready, stop = direct(model, log_dir, backend, binary)
                else:
                    ready, stop, _ = managed(model, log_dir)
                times[name].append(ready)
                stops[name].append(stop)

    print(
        f"llamatelemetry server start-to-ready — {machine()}, {backend} backend, tiny model, "
        f"health polled every {HEALTH_POLL_INTERVAL * 1000:.0f} ms, {args.rounds} starts each"
    )
    for name in times:
        print(
            f"  {name:<14} ready in {statistics.median(times[name]) * 1e3:8.1f} ms (median; "
            f"min {min(times[name]) * 1e3:.1f}, max {max(times[name]) * 1e3:.1f}), "
            f"stopped in {statistics.median(stops[name]) * 1e3:7.1f} ms"
        )
    ratio = statistics.median(times["ServerManager"]) / statistics.median(times["direct"])
    print("\nverdict")
    print(
        f"  {'start-to-ready, ServerManager / direct':<44} {ratio:7.3f}   target <= 1.10   "
        f"{'OK' if ratio <= 1.10 else 'MISS'}"
    )


if __name__ == "__main__":
    main()
