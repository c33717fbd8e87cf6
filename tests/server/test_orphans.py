"""A llama-server never outlives the process that started it, even one killed with
SIGKILL (which runs no clean-up): a ``ServerManager`` script and ``llamatelemetry serve``,
on both backends, are killed, and their server must go, freeing its port. A server started
from a thread that then ends must not go with that thread."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llamatelemetry.testing import TinyModelFiles

from ..cli.test_commands import SCRIPT, read_until, reap
from ..cli.test_serve import children
from ._support import BACKENDS

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

STARTER = """
import json, sys, threading, time
from llamatelemetry.server import ServerManager

model, backend, binary, in_thread = sys.argv[1:5]
manager = ServerManager(port=0, backend=backend, server_path=binary or None)

def start():
    manager.start(model, n_threads=1, n_parallel=1)

if in_thread == "1":  # a short-lived thread, as in a pool: it ends once the server is up
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
else:
    start()
print(json.dumps({"port": manager.port}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether any thread of process ``pid`` still runs. A process whose main thread has
    ended shows as a zombie while its other threads (a server's) go on holding its port,
    so every thread is looked at; a zombie that nobody reaped has ended."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # this thread ended meanwhile
            continue
        if state not in ("Z", "X"):
            return True
    return False


def ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def binary_for(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("llama_server_binary")) if backend == "binary" else ""


def the_server(parent: int) -> int:
    """The one llama-server process under ``parent`` (the embedded backend runs it in a
    Python child of its own)."""
    (server,) = children(parent)
    return server


@contextmanager
def watched(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """``command`` running, and a list to put its server's pid in: whatever the test's
    outcome, both are gone afterwards (no leaked server, no open pipe)."""
    servers: list[int] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            yield process, servers
        finally:
            reap(process)
            for server in servers:
                if alive(server):
                    os.kill(server, signal.SIGKILL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "short-lived-thread"])
def test_a_killed_parent_takes_its_server_with_it(
    backend: str, in_thread: bool, tiny_files: TinyModelFiles, request: pytest.FixtureRequest
) -> None:
    script = [sys.executable, "-c", STARTER, str(tiny_files.model.path), backend,
              binary_for(backend, request), "1" if in_thread else "0"]  # fmt: skip
    with watched(script) as (parent, servers):
        port = json.loads(read_until(parent, "}"))["port"]
        servers.append(server := the_server(parent.pid))
        # The thread that started it has ended (the kernel signals at once when a forking
        # thread ends): the server must still be serving.
        assert alive(server) and not port_free(port)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert ends_within(server, 60), (
            f"llama-server {server} outlived its parent: {process_state(server)}"
        )
        assert port_free(port)


def process_state(pid: int) -> str:
    """What a process that should have ended is doing: its state, its pending, blocked and
    caught signals, what each thread waits in (for a failure's message)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        kept = [line for line in status if line.split(":")[0] in
                ("State", "PPid", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")]  # fmt: skip
        waits = sorted(
            {(task / "wchan").read_text() for task in Path(f"/proc/{pid}/task").iterdir()}
        )
        return "; ".join(kept) + f"; threads wait in {waits}"
    except OSError as exc:
        return f"(its state could not be read: {exc})"


WORKER_OUTLIVES_MAIN = """
import sys, threading, time
import httpx
from llamatelemetry.server import ServerManager

model, binary = sys.argv[1:3]

def work():
    manager = ServerManager(port=0, backend="binary", server_path=binary)
    manager.start(model, n_threads=1, n_parallel=1)
    time.sleep(1.0)  # the main thread has ended by now (it only starts this thread)
    ok = manager.is_running and httpx.get(manager.url + "/health").status_code == 200
    manager.stop()
    again = ServerManager(port=0, backend="binary", server_path=binary)
    again.start(model, n_threads=1, n_parallel=1)  # a start after the main thread's end
    again.stop()
    print("served after the main thread ended:", ok, flush=True)

threading.Thread(target=work).start()
"""


def test_a_server_started_by_a_worker_outlives_the_main_thread(
    tiny_files: TinyModelFiles, llama_server_binary: Path
) -> None:
    """A worker thread's server serves on after the main thread's code has ended (the
    process lives while the worker does), and the worker can start another."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER_OUTLIVES_MAIN, str(tiny_files.model.path),
         str(llama_server_binary)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served after the main thread ended: True"
    assert "had already exited" not in done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_serve_takes_its_server_with_it(
    backend: str, tiny_files: TinyModelFiles, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    command = [str(SCRIPT), "serve", str(tiny_files.model.path), "--port", "0", "--threads",
               "1", "--backend", backend, "--log-dir", str(tmp_path)]  # fmt: skip
    if backend == "binary":
        command += ["--server-path", binary_for(backend, request)]
    with watched(command) as (process, servers):
        read_until(process, "Press Ctrl-C to stop.")
        servers.append(server := the_server(process.pid))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert ends_within(server, 60), f"llama-server {server} outlived serve"
