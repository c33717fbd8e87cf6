"""The same behaviour from both backends: a real ``llama-server`` binary built from
llama.cpp's source, and the server embedded in xllamacpp. Each test runs on both, so the
two cannot drift apart."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.api import (
    APIConnectionError,
    AuthenticationError,
    LlamaCppClient,
    NotSupportedError,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles, start_chat_server

from ._support import BACKENDS, MESSAGES, server_path

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "tools-chatml.jinja"


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_files: Any
) -> Iterator[ServerManager]:
    backend = request.param
    directory = tmp_path_factory.mktemp(f"backend-{backend}")
    with start_chat_server(
        directory, backend=backend, server_path=server_path(backend, request), n_parallel=2
    ) as server:
        yield server


def test_every_endpoint_answers(served: ServerManager) -> None:
    with LlamaCppClient(served.url) as client:
        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=4, temperature=0)
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        final = client.chat.completions.create(
            messages=MESSAGES, max_tokens=4, temperature=0, stream=True
        ).get_final_completion()
        assert final.choices[0].message.content == reply.choices[0].message.content
        assert client.completions.create("Once", max_tokens=3).usage.completion_tokens == 3  # type: ignore[union-attr]
        assert client.complete("Once", max_tokens=3).tokens_predicted == 3
        assert client.infill("def f():", "\n", max_tokens=2).tokens_predicted == 2
        assert len(client.embed("x")) == 64
        ids = client.tokenize("Hello world", add_special=False)
        assert client.detokenize(ids).strip() == "Hello world"  # SPM: a leading space
        assert "What is GGUF?" in client.apply_template(MESSAGES)
        assert client.chat.completions.count_tokens(MESSAGES) == reply.usage.prompt_tokens
        assert client.responses.create("Once", max_output_tokens=2).usage.output_tokens == 2  # type: ignore[union-attr]
        assert client.messages.create(MESSAGES, 2).usage.output_tokens == 2  # type: ignore[union-attr]
        assert len(client.models.list()) == 1
        assert client.props.get()["total_slots"] == 2
        assert len(client.slots.list()) == 2
        assert client.slots.save(0, "backend.bin")["n_saved"] >= 0
        assert client.slots.restore(0, "backend.bin")["n_restored"] >= 0
        client.slots.erase(0)
        [adapter] = client.lora.list()
        assert client.lora.apply(adapter["path"], 0.5)[0]["scale"] == pytest.approx(0.5)
        assert client.health.check() == {"status": "ok"}
        assert "llamacpp:prompt_tokens_total" in client.metrics.values()


@pytest.mark.parametrize("backend", BACKENDS)
def test_options_reach_the_server(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_files: TinyModelFiles, backend: str
) -> None:
    with ServerManager(
        port=0,
        backend=backend,
        server_path=server_path(backend, request),
        log_dir=tmp_path,  # type: ignore[arg-type]
    ) as server:
        server.start(
            tiny_files.model.path,
            n_parallel=3,
            ctx_size=768,
            n_threads=1,
            alias="tiny-alias",
            api_key="backend-key",
            metrics=False,
            slots=False,
            chat_template=TEMPLATE,
        )
        with LlamaCppClient(server.url, "backend-key") as client:
            props = client.props.get()
            assert props["total_slots"] == 3, backend
            assert props["default_generation_settings"]["n_ctx"] == 256, backend
            assert props["chat_template_caps"]["supports_tools"] is True, backend
            assert [m["id"] for m in client.models.list()] == ["tiny-alias"], backend
            with pytest.raises(NotSupportedError):
                client.metrics.get()
            with pytest.raises(NotSupportedError):
                client.slots.list()
        with LlamaCppClient(server.url, max_retries=0) as keyless:
            with pytest.raises(AuthenticationError):
                keyless.tokenize("x")
        log = server.log_path
        assert log is not None and log.stat().st_size > 0, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_server_breaks_the_stream_and_is_seen_stopped(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_files: TinyModelFiles, backend: str
) -> None:
    server = start_chat_server(
        tmp_path / backend,
        backend=backend,
        server_path=server_path(backend, request),  # type: ignore[arg-type]
    )
    port = server.port
    with server, LlamaCppClient(server.url, max_retries=0) as client:
        stream = client.chat.completions.create(messages=MESSAGES, max_tokens=2000, stream=True)
        next(stream)
        process = server._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(APIConnectionError):
            for _ in stream:
                pass
        process.wait(timeout=10)
        assert not server.is_running, backend
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_frees_the_port(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_files: TinyModelFiles, backend: str
) -> None:
    server = start_chat_server(
        tmp_path / backend,
        backend=backend,
        server_path=server_path(backend, request),  # type: ignore[arg-type]
    )
    port = server.port
    server.stop()
    server.stop()  # idempotent
    assert not server.is_running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_port_taken_between_check_and_bind(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tiny_files: TinyModelFiles,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket bound but not listening passes the manager's connect check, as a port
    taken a moment after the check would: the server's own bind is what fails."""
    from llamatelemetry.server import ServerStartError, _manager

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    try:
        fixed = ServerManager(
            port=taken, backend=backend, server_path=server_path(backend, request),
            log_dir=tmp_path / "fixed",  # type: ignore[arg-type]
        )  # fmt: skip
        with pytest.raises(ServerStartError, match=f"port {taken} .*taken") as caught:
            fixed.start(tiny_files.model.path, n_threads=1)
        assert not fixed.is_running and caught.value.returncode not in (None, 0)

        # port=0: the picked port is taken before the server binds it; another is tried.
        picks = iter([taken])
        real_pick = _manager._free_port
        monkeypatch.setattr(
            _manager, "_free_port", lambda host: next(picks, None) or real_pick(host)
        )
        with ServerManager(
            port=0, backend=backend, server_path=server_path(backend, request),
            log_dir=tmp_path / "auto",  # type: ignore[arg-type]
        ) as auto:  # fmt: skip
            auto.start(tiny_files.model.path, n_threads=1)
            assert auto.port != taken
            assert auto.client().health.check() == {"status": "ok"}
        assert len(list((tmp_path / "auto").glob("llama-server-*.log"))) == 2
    finally:
        squatter.close()
