"""ServerManager under faults, with live clients: a server killed mid-stream and restarted on
the same port, a binary that crashes at start or later, a port someone else holds. Errors
quote the server's last log lines; no process outlives the manager; the same client
object works again once the server is back.

(tests/server/test_manager.py covers missing/corrupt models, busy ports, failing and
non-executable binaries, start timeouts and a parent killed under its server.)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from llamatelemetry.api import APIConnectionError, StreamInterruptedError
from llamatelemetry.server import ServerManager, ServerStartError
from llamatelemetry.testing import TinyModelFiles, start_chat_server

from ._support import Driver, tally

pytestmark = pytest.mark.usefixtures("fast_backoff")


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def fake_server(tmp_path: Path, body: str, *, python: bool = False) -> Path:
    """An executable standing in for llama-server (shell, or Python with ``python=True``)."""
    script = tmp_path / "llama-server"
    interpreter = sys.executable if python else "/bin/sh"
    script.write_text(f"#!{interpreter}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerManager]:
    """A real server of this test's own (it gets killed): two slots of 2048 tokens."""
    with start_chat_server(tmp_path / "server", n_parallel=2, ctx_size=4096) as server:
        yield server


# --- a real server killed and restarted under a live client -----------------------------


def test_server_killed_mid_stream_then_restarted_same_client_recovers(
    own_server: ServerManager, drivers: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    tally(scenarios=1)
    driver = drivers(own_server.url, max_retries=2)
    seen, error, stream = driver.stream(limit=3, max_tokens=1500)
    assert error is None and len(seen) == 3
    assert driver.chat(max_tokens=1).choices  # a second connection, left idle in the pool
    old_pid = own_server.pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)  # the server dies mid-stream
    rest, error = driver.finish(stream)
    assert type(error) is StreamInterruptedError
    assert isinstance(error, requests.ConnectionError)
    assert "the output is incomplete" in str(error)
    assert len(seen) + len(rest) < 1500
    assert stream.closed
    assert wait_gone(old_pid)
    # The thread-group leader turns zombie before llama.cpp's other threads are torn down,
    # and only then can it be reaped: under load that takes a moment.
    deadline = time.monotonic() + 5
    while own_server.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not own_server.is_running

    started = time.monotonic()
    with pytest.raises(APIConnectionError) as info:  # the next call fails fast and clearly
        driver.chat(max_tokens=1)
    assert type(info.value) is APIConnectionError
    assert "could not connect to llama-server" in str(info.value)
    assert time.monotonic() - started < 1.0

    with caplog.at_level(logging.WARNING, logger="llamatelemetry.server"):
        own_server.restart()  # same options, same port
    assert "had already exited (killed by SIGKILL); last lines of" in caplog.text
    assert "listening on" in caplog.text  # the dead server's own last log lines
    new_pid = own_server.pid
    assert new_pid is not None and new_pid != old_pid

    reply = driver.chat(max_tokens=2)  # the SAME client object works again
    assert reply.usage.completion_tokens == 2
    seen, error, _ = driver.stream(max_tokens=3)
    assert error is None and seen[-1].usage.completion_tokens == 3
    own_server.stop()
    assert wait_gone(new_pid)
    tally(faults_survived=1)


def test_graceful_restart_under_idle_keepalive_connections_costs_no_retry(
    own_server: ServerManager, drivers: Callable[..., Driver]
) -> None:
    """Pooled connections to the old server are dead after a restart; the next call must
    not fail even with no retry budget."""
    tally(scenarios=1)
    driver = drivers(own_server.url, max_retries=0)
    for _ in range(3):
        assert driver.chat(max_tokens=1).usage.completion_tokens == 1
    own_server.restart()
    for _ in range(3):
        assert driver.chat(max_tokens=1).usage.completion_tokens == 1
    tally(faults_survived=1)


# --- binaries that crash -----------------------------------------------------------------

CRASHES_LATER = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index("--port") + 1])
host = sys.argv[sys.argv.index("--host") + 1]

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        sys.stderr.write("slot update_slots: id  0 | task 0 | new prompt\n")
        sys.stderr.write("/src/ggml/ggml.c:1542: GGML_ASSERT(ne % 4 == 0) failed\n")
        sys.stderr.flush()
        os.abort()

    def log_message(self, *args):
        pass

print(f"main: server is listening on http://{host}:{port}", flush=True)
HTTPServer((host, port), Handler).serve_forever()
"""


def test_binary_crashing_later_gives_a_clear_error_and_its_last_log_lines(
    tmp_path: Path, tiny_files: TinyModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    tally(scenarios=1)
    binary = fake_server(tmp_path, CRASHES_LATER, python=True)
    manager = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "l")
    try:
        manager.start(tiny_files.model.path)
        pid = manager.pid
        assert pid is not None
        with manager.client(max_retries=0) as client:
            assert client.health.check() == {"status": "ok"}
            with pytest.raises(APIConnectionError, match="connection to llama-server failed"):
                client.chat.completions.create(messages=[{"role": "user", "content": "x"}])
        assert wait_gone(pid)
        assert not manager.is_running and manager.pid is None
        assert "GGML_ASSERT(ne % 4 == 0) failed" in manager.log_tail()
        with caplog.at_level(logging.WARNING, logger="llamatelemetry.server"):
            manager.stop()
        [record] = [r for r in caplog.records if r.name == "llamatelemetry.server"]
        assert f"pid {pid} had already exited (killed by SIGABRT)" in record.getMessage()
        assert "GGML_ASSERT(ne % 4 == 0) failed" in record.getMessage()
    finally:
        manager.stop()


def test_binary_crashing_at_start_leaves_no_orphans(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    """A wrapper script that starts a helper and then fails: the helper must not survive."""
    tally(scenarios=1)
    binary = fake_server(
        tmp_path,
        'sleep 60 &\necho "helper pid $!"\n'
        'echo "llama_model_load: error loading model: tensor data is not '
        'within the file bounds" >&2\nexit 1',
    )
    manager = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "l")
    with pytest.raises(ServerStartError) as info:
        manager.start(tiny_files.model.path)
    assert info.value.returncode == 1
    assert "exited with status 1 before becoming ready" in str(info.value)
    assert "tensor data is not within the file bounds" in info.value.log_tail
    helper = int(info.value.log_tail.split("helper pid ", 1)[1].split()[0])
    assert wait_gone(helper), "the wrapper's helper outlived the failed start"
    assert not manager.is_running


def test_wrapper_children_are_stopped_with_the_server(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    """stop() ends the whole process group: a wrapper that runs llama-server as a child
    (not with exec) leaves nothing behind."""
    tally(scenarios=1)
    inner = fake_server(tmp_path, CRASHES_LATER, python=True).rename(tmp_path / "inner-server")
    wrapper = fake_server(tmp_path, f'"{inner}" "$@" &\necho "child pid $!"\nwait')
    manager = ServerManager(port=0, backend="binary", server_path=wrapper, log_dir=tmp_path / "l")
    manager.start(tiny_files.model.path)
    wrapper_pid = manager.pid
    assert wrapper_pid is not None
    child = int(manager.log_tail().split("child pid ", 1)[1].split()[0])
    manager.stop()
    assert wait_gone(wrapper_pid) and wait_gone(child)


# --- ports -------------------------------------------------------------------------------


def test_port_bound_by_another_process_fails_with_the_servers_words(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    """Bound but not listening (so not seen by the pre-launch probe): the server itself
    fails to bind, and the error quotes it."""
    tally(scenarios=1)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        manager = ServerManager(port=port, log_dir=tmp_path / "logs")
        started = time.monotonic()
        with pytest.raises(ServerStartError) as info:
            manager.start(tiny_files.model.path, n_threads=1)
        assert time.monotonic() - started < 10
        assert "couldn't bind" in info.value.log_tail
        assert info.value.log_tail in str(info.value)
        assert info.value.returncode not in (None, 0)
        assert not manager.is_running and manager.pid is None
    finally:
        holder.close()
