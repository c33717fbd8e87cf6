"""ServerManager against real llama.cpp servers (tiny model, CPU, ~0.2 s per start)."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamatelemetry.api import NotSupportedError
from llamatelemetry.server import ServerError, ServerManager, ServerOptions, ServerStartError
from llamatelemetry.testing import (
    TinyModelFiles,
    build_tiny_files,
    start_chat_server,
    start_rerank_server,
)

API_KEY = "test-secret-key"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFiles:
    return build_tiny_files(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServerManager]:
    """A manager on a free port whose server is always stopped, whatever the test does."""
    server = ServerManager(port=0, log_dir=tmp_path / "logs")
    yield server
    server.stop()


def get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=10.0, trust_env=False, **kwargs)  # type: ignore[arg-type]


def post(url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url, timeout=30.0, trust_env=False, **kwargs)  # type: ignore[arg-type]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def fake_server(tmp_path: Path, body: str) -> Path:
    """An executable standing in for llama-server, to drive the binary backend's failure paths."""
    script = tmp_path / "llama-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


# -- start, properties, health ------------------------------------------------------------


def test_start_serves_health_and_reports_where(
    manager: ServerManager, tiny: TinyModelFiles
) -> None:
    assert not manager.is_running and manager.pid is None and manager.log_path is None
    manager.start(tiny.model.path)

    assert manager.is_running
    assert manager.port != 0
    assert manager.url == f"http://127.0.0.1:{manager.port}"
    assert isinstance(manager.pid, int) and not process_gone(manager.pid)
    assert manager.backend in ("binary", "embedded")
    response = get(f"{manager.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_log_file_holds_server_output(
    manager: ServerManager, tiny: TinyModelFiles, tmp_path: Path
) -> None:
    manager.start(tiny.model.path)
    log_path = manager.log_path
    assert log_path is not None and log_path.parent == tmp_path / "logs"
    text = log_path.read_text()
    assert "listening on" in text
    assert str(tiny.model.path) in text


def test_port_zero_picks_distinct_free_ports(tmp_path: Path, tiny: TinyModelFiles) -> None:
    with (
        ServerManager(port=0, log_dir=tmp_path / "a") as first,
        ServerManager(port=0, log_dir=tmp_path / "b") as second,
    ):
        first.start(tiny.model.path)
        second.start(tiny.model.path)
        assert first.port != second.port
        assert get(f"{first.url}/health").status_code == 200
        assert get(f"{second.url}/health").status_code == 200


def test_busy_port_is_refused_and_first_server_keeps_serving(
    manager: ServerManager, tiny: TinyModelFiles, tmp_path: Path
) -> None:
    manager.start(tiny.model.path)
    intruder = ServerManager(port=manager.port, log_dir=tmp_path / "intruder")
    with pytest.raises(
        ServerStartError, match=rf"port {manager.port} .*already accepts connections"
    ):
        intruder.start(tiny.model.path)
    assert not intruder.is_running and intruder.pid is None
    assert intruder.log_path is None  # refused before anything was launched
    assert get(f"{manager.url}/health").status_code == 200


def test_starting_twice_is_an_error(manager: ServerManager, tiny: TinyModelFiles) -> None:
    manager.start(tiny.model.path)
    with pytest.raises(ServerError, match="already running"):
        manager.start(tiny.model.path)


# -- bad models ---------------------------------------------------------------------------


def test_missing_model_fails_before_launch(manager: ServerManager, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="model file not found") as info:
        manager.start(missing)
    assert str(missing) in str(info.value)
    assert manager.log_path is None and not manager.is_running


def test_non_gguf_file_fails_before_launch(manager: ServerManager, tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ServerStartError, match="not a GGUF file") as info:
        manager.start(bogus)
    assert str(bogus) in str(info.value)
    assert info.value.returncode is None
    assert manager.log_path is None and not manager.is_running


def test_missing_lora_adapter_fails_before_launch(
    manager: ServerManager, tiny: TinyModelFiles, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="LoRA adapter not found"):
        manager.start(tiny.model.path, lora=[tmp_path / "missing-lora.gguf"])
    assert manager.log_path is None


def test_corrupt_gguf_raises_with_log_tail(
    manager: ServerManager, tiny: TinyModelFiles, tmp_path: Path
) -> None:
    data = tiny.model.path.read_bytes()
    corrupt = tmp_path / "truncated.gguf"
    corrupt.write_bytes(data[: len(data) // 2])  # valid magic and header, tensor data cut off

    with pytest.raises(ServerStartError) as info:
        manager.start(corrupt, timeout=30)
    error = info.value
    assert error.returncode is not None and error.returncode != 0
    assert "failed to load model" in error.log_tail  # llama.cpp's own words
    assert error.log_tail in str(error)
    assert "exited with status" in str(error)
    assert not manager.is_running
    assert manager.log_path is not None and manager.log_path.exists()


# -- stop, context manager, restart -------------------------------------------------------


def test_stop_leaves_no_process_and_is_idempotent(
    manager: ServerManager, tiny: TinyModelFiles
) -> None:
    manager.start(tiny.model.path)
    pid = manager.pid
    assert pid is not None
    url = manager.url

    manager.stop()
    assert process_gone(pid)
    assert not manager.is_running and manager.pid is None
    with pytest.raises(httpx.ConnectError):
        get(f"{url}/health")
    manager.stop()  # again: nothing to do, no error
    manager.stop()


def test_context_manager_stops(tmp_path: Path, tiny: TinyModelFiles) -> None:
    with ServerManager(port=0, log_dir=tmp_path) as server:
        server.start(tiny.model.path)
        pid = server.pid
        assert pid is not None
    assert process_gone(pid)
    assert not server.is_running


def test_context_manager_stops_on_error(tmp_path: Path, tiny: TinyModelFiles) -> None:
    pids: list[int] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        ServerManager(port=0, log_dir=tmp_path) as server,
    ):
        server.start(tiny.model.path)
        assert server.pid is not None
        pids.append(server.pid)
        raise RuntimeError("boom")
    assert process_gone(pids[0])


def test_restart_comes_back_on_the_same_port(manager: ServerManager, tiny: TinyModelFiles) -> None:
    manager.start(tiny.model.path, n_parallel=2)
    port, pid = manager.port, manager.pid
    assert pid is not None

    manager.restart()
    assert manager.port == port
    assert manager.pid is not None and manager.pid != pid
    assert process_gone(pid)
    assert get(f"{manager.url}/health").status_code == 200
    slots = get(f"{manager.url}/slots").json()
    assert len(slots) == 2  # same options as the first start


def test_restart_without_start_is_an_error(manager: ServerManager) -> None:
    with pytest.raises(ServerError, match="previous start"):
        manager.restart()


# -- auth and repr ------------------------------------------------------------------------


def test_api_key_is_enforced_but_health_stays_public(
    manager: ServerManager, tiny: TinyModelFiles
) -> None:
    manager.start(tiny.model.path, api_key=API_KEY)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    assert get(f"{manager.url}/health").status_code == 200
    denied = post(f"{manager.url}/v1/chat/completions", json=body)
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    allowed = post(
        f"{manager.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert allowed.status_code == 200
    assert allowed.json()["choices"][0]["message"]["role"] == "assistant"


def test_repr_hides_the_api_key(manager: ServerManager, tiny: TinyModelFiles) -> None:
    manager.start(tiny.model.path, api_key=API_KEY)
    text = repr(manager)
    assert API_KEY not in text
    assert "api_key=***" in text and str(manager.port) in text and "running" in text
    assert API_KEY not in repr(manager.options)
    assert manager.log_path is not None and API_KEY not in manager.log_path.read_text()
    manager.stop()
    assert API_KEY not in repr(manager) and "stopped" in repr(manager)


def test_client_carries_the_api_key(manager: ServerManager, tiny: TinyModelFiles) -> None:
    manager.start(tiny.model.path, api_key=API_KEY)
    with manager.client() as client:
        assert client.base_url.rstrip("/") == manager.url
        assert client.health.check() == {"status": "ok"}
        assert len(client.tokenize("hello world")) > 0  # /tokenize needs the key


def test_inherited_api_key_variable_does_not_leak_into_the_server(
    manager: ServerManager, tiny: TinyModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_API_KEY", "from-the-environment")
    manager.start(tiny.model.path)
    response = post(f"{manager.url}/tokenize", json={"content": "hello"})
    assert response.status_code == 200  # no auth the manager does not know about


# -- a server started without an option -----------------------------------------------------


def test_refusals_name_the_start_keyword(manager: ServerManager, tiny: TinyModelFiles) -> None:
    manager.start(tiny.model.path, n_threads=1, metrics=False, slots=False)
    with manager.client() as client:
        refused = {
            "embedding=True": lambda: client.embed("x"),
            "reranking=True": lambda: client.rerank("q", ["a"]),
            "metrics=True": client.metrics.values,
            "slots=True": client.slots.list,
        }
        for keyword, call in refused.items():
            with pytest.raises(NotSupportedError) as info:
                call()
            error = info.value
            assert error.message.startswith("This server does not support")  # the server's
            assert (
                error.hint
                == f"start the server with {keyword} (ServerManager.start or InferenceEngine)"
            )
            assert str(error).endswith(f"(hint: {error.hint})")


# -- the test-support helpers ---------------------------------------------------------------


def test_chat_server_helper_enables_every_endpoint(tmp_path: Path) -> None:
    with start_chat_server(tmp_path, api_key=API_KEY, backend="auto") as server:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert len(get(f"{server.url}/slots", headers=auth).json()) == 4
        assert "llamacpp:prompt_tokens_total" in get(f"{server.url}/metrics", headers=auth).text
        adapters = get(f"{server.url}/lora-adapters", headers=auth).json()
        assert [(Path(a["path"]).name, a["scale"]) for a in adapters] == [("tiny-lora.gguf", 1.0)]
        embedded = post(f"{server.url}/v1/embeddings", json={"input": "hello"}, headers=auth).json()
        assert len(embedded["data"][0]["embedding"]) == 64
        saved = post(f"{server.url}/slots/0?action=save", json={"filename": "s0.bin"}, headers=auth)
        assert saved.status_code == 200
        assert (tmp_path / "slots" / "s0.bin").exists()


def test_rerank_server_helper_ranks(tmp_path: Path) -> None:
    with start_rerank_server(tmp_path) as server:
        response = post(
            f"{server.url}/v1/rerank",
            json={"query": "llama", "documents": ["a llama", "the GPU", "hello"]},
        )
        assert response.status_code == 200
        results = response.json()["results"]
        assert sorted(r["index"] for r in results) == [0, 1, 2]


def test_build_tiny_files_is_repeatable(tmp_path: Path) -> None:
    first = build_tiny_files(tmp_path)
    second = build_tiny_files(tmp_path)
    assert first == second
    assert first.model.path.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-lora.gguf", "tiny-model.gguf"]


# -- options and backends --------------------------------------------------------------------


def test_options_render_llama_server_flags(tmp_path: Path) -> None:
    options = ServerOptions(
        model_path=tmp_path / "m.gguf",
        port=9000,
        n_parallel=4,
        n_threads=2,
        reranking=True,
        lora=(tmp_path / "l.gguf",),
        api_key=API_KEY,
        slot_save_path=tmp_path / "slots",
        alias="tiny",
        extra_args=("--temp", "0"),
    )
    argv = options.to_argv()
    assert argv[:2] == ["-m", str(tmp_path / "m.gguf")]
    for flag, value in [("--port", "9000"), ("-np", "4"), ("-t", "2"), ("--pooling", "rank"),
                        ("--lora", str(tmp_path / "l.gguf")), ("--alias", "tiny"), ("-ngl", "0"),
                        ("--slot-save-path", str(tmp_path / "slots")), ("-c", "2048")]:  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    assert {"--embedding", "--metrics", "--slots"} <= set(argv)
    assert argv[-2:] == ["--temp", "0"]
    assert API_KEY not in argv  # the key travels in the environment
    assert options.child_env({})["LLAMA_API_KEY"] == API_KEY
    assert options.embedding and options.pooling == "rank"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port"),
        ({"n_parallel": 0}, "n_parallel"),
        ({"pooling": "max"}, "pooling"),
        ({"reranking": True, "pooling": "mean"}, "rank"),
        ({"api_key": ""}, "api_key"),
    ],
)
def test_options_reject_bad_values(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerOptions(model_path=tmp_path / "m.gguf", **kwargs)  # type: ignore[arg-type]


def test_manager_rejects_bad_port_and_backend() -> None:
    with pytest.raises(ValueError, match="port"):
        ServerManager(port=-1)
    with pytest.raises(ValueError, match="backend"):
        ServerManager(backend="gpu")  # type: ignore[arg-type]


def test_embedded_backend_rejects_extra_args(tmp_path: Path, tiny: TinyModelFiles) -> None:
    server = ServerManager(port=0, backend="embedded", log_dir=tmp_path)
    with pytest.raises(ValueError, match="need the binary backend"):
        server.start(tiny.model.path, extra_args=["--temp", "0"])
    assert server.log_path is None and not server.is_running


def test_binary_backend_reports_a_failing_executable(tmp_path: Path, tiny: TinyModelFiles) -> None:
    binary = fake_server(tmp_path, 'echo "error: invalid argument: $*" >&2; exit 3')
    server = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "logs")
    with pytest.raises(ServerStartError) as info:
        server.start(tiny.model.path, extra_args=["--flag-from-the-future"])
    assert info.value.returncode == 3
    assert "invalid argument" in info.value.log_tail
    assert "--flag-from-the-future" in info.value.log_tail
    assert f"-m {tiny.model.path}" in info.value.log_tail


def test_start_timeout_kills_the_child(tmp_path: Path, tiny: TinyModelFiles) -> None:
    binary = fake_server(tmp_path, 'echo "loading forever, pid $$"; exec sleep 60')
    server = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "logs")
    with pytest.raises(ServerStartError, match="not ready within 0.5s") as info:
        server.start(tiny.model.path, timeout=0.5)
    assert info.value.returncode is None
    assert "loading forever" in info.value.log_tail
    pid = int(info.value.log_tail.rsplit("pid ", 1)[1].split()[0])
    assert process_gone(pid)
    assert not server.is_running


def test_stop_from_another_thread_cancels_a_start(tmp_path: Path, tiny: TinyModelFiles) -> None:
    """stop() does not wait out a start() in progress (40 s here): it cancels it, and the
    start raises, saying so."""
    marker = tmp_path / "launched"
    binary = fake_server(tmp_path, f'echo "pid $$" > {marker}; exec sleep 60')
    server = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "logs")
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            server.start(tiny.model.path, timeout=40)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:  # the child is running
        time.sleep(0.01)
    pid = int(marker.read_text().split()[1])
    stopped = time.monotonic()
    server.stop()
    starter.join(timeout=30)
    assert not starter.is_alive() and time.monotonic() - stopped < 20  # not the 40 s timeout
    [error] = outcome
    assert isinstance(error, ServerStartError) and "cancelled by stop()" in str(error)
    assert process_gone(pid) and not server.is_running


def test_binary_backend_without_an_executable(tmp_path: Path, tiny: TinyModelFiles) -> None:
    server = ServerManager(port=0, backend="binary", server_path=tmp_path / "no-such-llama-server")
    with pytest.raises(ServerStartError, match="missing or not executable"):
        server.start(tiny.model.path)


def test_binary_that_cannot_be_executed(tmp_path: Path, tiny: TinyModelFiles) -> None:
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"\x00\x01 not a program")
    binary.chmod(0o755)
    server = ServerManager(port=0, backend="binary", server_path=binary, log_dir=tmp_path / "logs")
    with pytest.raises(ServerStartError, match="could not launch"):
        server.start(tiny.model.path)
    assert not server.is_running


def test_a_crashed_server_is_noticed_and_cleaned_up(
    manager: ServerManager, tiny: TinyModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    manager.start(tiny.model.path)
    pid = manager.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while manager.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not manager.is_running and manager.pid is None
    with caplog.at_level(logging.WARNING, logger="llamatelemetry.server"):
        manager.stop()
    assert "had already exited" in caplog.text
    manager.start(tiny.model.path)  # and the manager can start again
    assert get(f"{manager.url}/health").status_code == 200


def test_auto_port_retries_when_the_port_is_taken_meanwhile(
    tmp_path: Path, tiny: TinyModelFiles
) -> None:
    binary = fake_server(
        tmp_path, 'echo "start: couldn\'t bind HTTP server socket, port: $*" >&2; exit 1'
    )
    logs = tmp_path / "logs"
    server = ServerManager(port=0, backend="binary", server_path=binary, log_dir=logs)
    with pytest.raises(ServerStartError, match="exited with status 1"):
        server.start(tiny.model.path)
    assert len(list(logs.glob("llama-server-*.log"))) == 3  # three fresh ports were tried


def test_embedded_server_exits_when_its_parent_is_killed(
    tmp_path: Path, tiny: TinyModelFiles
) -> None:
    """A parent killed with SIGKILL runs no clean-up; the server must notice and go."""
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from llamatelemetry.server import ServerManager\n"
        "m = ServerManager(port=0, backend='embedded')\n"
        f"m.start({str(tiny.model.path)!r}, n_threads=1)\n"
        "print(m.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(server_pid, signal.SIGKILL)
            raise AssertionError("the embedded server outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
