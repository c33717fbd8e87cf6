"""Router mode on a real llama-server binary: a folder of models, loaded on demand, at most
``models_max`` at once; loads and unloads as spans; a call that waited for a load marked
as a cold start; the server's figures per model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llamatelemetry.api import (
    AsyncLlamaCppClient,
    BadRequestError,
    LlamaCppClient,
    ModelLoadError,
    NotFoundError,
)
from llamatelemetry.server import ServerManager
from llamatelemetry.server._options import ServerOptions
from llamatelemetry.telemetry import (
    InstrumentedLlamaCppClient,
    LlamaServerMetrics,
    ProcessMetrics,
)
from llamatelemetry.testing import TinyModelFiles

from ..telemetry.test_pipeline import points

MESSAGES = [{"role": "user", "content": "What is GGUF?"}]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_files: TinyModelFiles) -> Path:
    """Two models (the tiny one under two names) and a file that is not a model."""
    folder = tmp_path_factory.mktemp("router-models")
    for name in ("tiny-a", "tiny-b"):
        (folder / f"{name}.gguf").symlink_to(tiny_files.model.path)
    (folder / "broken.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    return folder


@pytest.fixture(scope="module")
def router(
    models_dir: Path, llama_server_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerManager]:
    with ServerManager(
        port=0,
        backend="binary",
        server_path=llama_server_binary,
        log_dir=tmp_path_factory.mktemp("router-log"),
        models_dir=models_dir,
        models_max=1,
    ) as server:
        server.start(n_parallel=2, ctx_size=512, n_threads=1)
        yield server


@pytest.fixture
def client(router: ServerManager) -> Iterator[LlamaCppClient]:
    with router.client() as client:
        for model in ("tiny-a", "tiny-b"):
            client.models.unload(model)
        yield client


def statuses(client: LlamaCppClient) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in client.models.list()}


def test_a_router_loads_routes_and_unloads(router: ServerManager, client: LlamaCppClient) -> None:
    assert router.is_router and router.options is not None
    assert router.options.model_path is None and "/*" in repr(router)
    assert client.props.get()["role"] == "router"
    assert statuses(client) == {"tiny-a": "unloaded", "tiny-b": "unloaded", "broken": "unloaded"}

    assert client.models.load("tiny-a") == "loaded"
    assert client.models.status("tiny-a") == "loaded"
    assert client.models.load("tiny-a") == "loaded"  # loading a loaded model is no error
    reply = client.chat.completions.create(model="tiny-a", messages=MESSAGES, max_tokens=4)
    assert reply.model == "tiny-a" and reply.usage.completion_tokens == 4  # type: ignore[union-attr]

    # Per model: its props, slots and metrics, the router's defaults applied to it.
    assert client.props.get(model="tiny-a")["total_slots"] == 2
    assert [s["state"] for s in client.slots.list(model="tiny-a")] == ["idle", "idle"]
    assert client.metrics.values(model="tiny-a")["llamacpp:tokens_predicted_total"] == 4

    # models_max=1: loading another unloads the least recently used.
    assert client.models.load("tiny-b") == "loaded"
    assert statuses(client) == {"tiny-a": "unloaded", "tiny-b": "loaded", "broken": "unloaded"}

    # Reading an unloaded model's figures never loads it.
    with pytest.raises(BadRequestError, match="not loaded"):
        client.props.get(model="tiny-a")
    with pytest.raises(BadRequestError, match="not loaded"):
        client.metrics.values(model="tiny-a")
    assert client.models.status("tiny-a") == "unloaded"

    # A call naming an unloaded model loads it (the router's autoload).
    client.completions.create("Once", model="tiny-a", max_tokens=2)
    assert client.models.status("tiny-a") == "loaded"
    assert client.models.unload("tiny-a") == "unloaded"
    assert client.models.unload("tiny-a") == "unloaded"  # unloading twice is no error
    assert client.models.status("tiny-a") == "unloaded"


def test_unknown_and_broken_models_are_explained(client: LlamaCppClient) -> None:
    with pytest.raises(NotFoundError, match=r"'nope' is not among .*'tiny-a'"):
        client.models.load("nope")
    with pytest.raises(NotFoundError, match="'nope' is not among"):
        client.models.status("nope")
    with pytest.raises(ModelLoadError, match="could not load 'broken'") as caught:
        client.models.load("broken")
    assert caught.value.exit_code not in (None, 0)
    assert caught.value.status["value"] == "unloaded"
    with pytest.raises(TypeError, match="wait must be True or False"):
        client.models.load("tiny-a", wait="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        client.models.load("tiny-a", timeout=0)


def test_a_load_that_outlasts_its_timeout(client: LlamaCppClient) -> None:
    from llamatelemetry.api import APITimeoutError

    started = time.monotonic()
    with pytest.raises(APITimeoutError, match=r"'tiny-a' was still loading|0\.02s passed"):
        client.models.load("tiny-a", timeout=0.02)
    assert time.monotonic() - started < 1.0
    assert client.models.load("tiny-a", wait=False) in ("loading", "loaded")
    assert client.models.load("tiny-a") == "loaded"


def test_a_single_model_server_says_loading_needs_a_router(chat_server: ServerManager) -> None:
    with chat_server.client() as client:
        model = client.models.list()[0]["id"]
        assert client.models.status(model) == "loaded"
        with pytest.raises(NotFoundError, match="cannot load models: that takes a router"):
            client.models.load(model)


def test_router_options_are_checked_and_rendered(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="router mode .* needs the llama-server binary"):
        ServerManager(backend="embedded", models_dir=tmp_path)
    with pytest.raises(ValueError, match="models_max is a router option"):
        ServerManager(models_max=2)
    options = ServerOptions(None, models_dir=tmp_path, models_max=0, models_autoload=False)
    assert options.to_argv()[:4] == ["--models-dir", str(tmp_path), "--models-max", "0"]
    assert "--no-models-autoload" in options.to_argv() and "-m" not in options.to_argv()
    with pytest.raises(ValueError, match="router mode"):
        options.to_embedded_config()
    with pytest.raises(ValueError, match="not both and not neither"):
        ServerOptions(None)
    with pytest.raises(ValueError, match="not both"):
        ServerOptions(tmp_path / "m.gguf", models_dir=tmp_path)
    with pytest.raises(ValueError, match="drop alias"):
        ServerOptions(None, models_dir=tmp_path, alias="x")
    with pytest.raises(ValueError, match="models_max must be >= 0"):
        ServerOptions(None, models_dir=tmp_path, models_max=-1)
    for option in ({"draft_model": tmp_path / "d.gguf"}, {"lora": (tmp_path / "a.gguf",)}):
        with pytest.raises(ValueError, match="fits one model, and a router gives its options"):
            ServerOptions(None, models_dir=tmp_path, **option)  # type: ignore[arg-type]
    manager = ServerManager(models_dir=tmp_path / "missing", backend="binary")
    with pytest.raises(ValueError, match="takes no model_path"):
        manager.start(tmp_path / "m.gguf")
    with pytest.raises(FileNotFoundError, match="models_dir not found"):
        manager.start()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="models_dir is not a folder"):
        ServerManager(models_dir=tmp_path / "file", backend="binary").start()
    from llamatelemetry.server import InferenceEngine

    with pytest.raises(TypeError, match="models_dir is a router's option"):
        InferenceEngine(tmp_path / "m.gguf", start=False, models_dir=tmp_path)


def test_an_empty_folder_is_a_warned_router(
    llama_server_binary: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level("WARNING", logger="llamatelemetry.server"):
        with ServerManager(
            port=0, backend="binary", server_path=llama_server_binary, models_dir=empty
        ) as server:
            server.start(n_threads=1)
            assert server.client().models.list() == []
    assert "holds no .gguf file" in caplog.text


def test_loads_are_spans_and_cold_starts_are_marked(
    router: ServerManager, client: LlamaCppClient, providers: Any, span_exporter: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        router.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as traced:
        started = time.monotonic()
        traced.models.load("tiny-a")
        load_seconds = time.monotonic() - started
        traced.chat.completions.create(model="tiny-a", messages=MESSAGES, max_tokens=2)
        traced.models.unload("tiny-a")
        cold = traced.chat.completions.create(
            model="tiny-a", messages=MESSAGES, max_tokens=2, stream=True
        )
        list(cold)
        traced.chat.completions.create(model="tiny-a", messages=MESSAGES, max_tokens=2)
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "load_model tiny-a",
        "chat tiny-a",
        "unload_model tiny-a",
        "chat tiny-a",
        "chat tiny-a",
    ]
    load = spans[0]
    # The span lasts until the model is loaded, not until the router said "loading".
    assert (load.end_time - load.start_time) / 1e9 == pytest.approx(load_seconds, rel=0.5)
    assert load.attributes["gen_ai.request.model"] == "tiny-a"
    states = [(s.attributes.get("llama_cpp.model.state"), s.attributes.get("llama_cpp.cold_start"))
              for s in spans if s.name.startswith("chat")]  # fmt: skip
    assert states == [("loaded", None), ("unloaded", True), ("loaded", None)]

    found = points(reader)
    ttft = found["gen_ai.client.operation.time_to_first_chunk"]
    assert [p.attributes.get("llama_cpp.cold_start") for p in ttft] == [True]
    durations = {
        p.attributes.get("llama_cpp.cold_start"): p.count
        for p in found["gen_ai.client.operation.duration"]
        if p.attributes["gen_ai.operation.name"] == "chat"
    }
    assert durations == {None: 2, True: 1}


def test_the_bridge_reports_each_model(
    router: ServerManager, client: LlamaCppClient, providers: Any
) -> None:
    _, meter_provider, reader = providers
    client.models.load("tiny-b")
    client.chat.completions.create(model="tiny-b", messages=MESSAGES, max_tokens=3)
    bridge = LlamaServerMetrics(client, interval=0, meter_provider=meter_provider)
    try:
        found = points(reader)
    finally:
        bridge.close()
    loaded = {p.attributes["gen_ai.request.model"]: p.value
              for p in found["llama_cpp.server.model.loaded"]}  # fmt: skip
    assert loaded == {"tiny-a": 0, "tiny-b": 1, "broken": 0}
    [generated] = found["llama_cpp.server.generated_tokens"]
    assert generated.attributes["gen_ai.request.model"] == "tiny-b" and generated.value == 3
    [total] = found["llama_cpp.server.slots.total"]
    assert total.value == 2 and total.attributes["server.port"] == router.port
    assert client.models.status("tiny-a") == "unloaded"  # scraping loaded nothing


def test_the_async_client_loads_and_unloads(router: ServerManager, client: LlamaCppClient) -> None:
    async def run() -> list[str]:
        async with AsyncLlamaCppClient(router.url) as aclient:
            return [
                await aclient.models.load("tiny-b"),
                await aclient.models.status("tiny-b"),
                await aclient.models.unload("tiny-b"),
            ]

    assert asyncio.run(run()) == ["loaded", "loaded", "unloaded"]


def test_serve_a_folder_runs_a_router(
    models_dir: Path, llama_server_binary: Path, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    from click.testing import CliRunner

    from llamatelemetry.cli import main

    from ..cli.test_commands import INTERRUPTIBLE, free_port, interrupt, read_until, reap

    port = free_port()
    command = [*INTERRUPTIBLE, sys.executable, "-c", "from llamatelemetry.cli import main; main()",
               "serve", str(models_dir),
               "--backend", "binary", "--server-path", str(llama_server_binary),
               "--port", str(port), "--models-max", "1", "--no-models-autoload",
               "--threads", "1", "--log-dir", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = read_until(process, "Press Ctrl-C to stop.")
        assert f"{models_dir}/*.gguf, loaded on demand" in ready
        assert "--model NAME" in ready  # the hints a router needs
        with LlamaCppClient(f"http://127.0.0.1:{port}") as client:
            props = client.props.get()
            assert props["role"] == "router" and props["max_instances"] == 1
            assert props["models_autoload"] is False
            with pytest.raises(BadRequestError):  # no autoload: a call does not load it
                client.completions.create("Once", model="tiny-a", max_tokens=2)
            assert client.models.load("tiny-a") == "loaded"
        url = f"http://127.0.0.1:{port}"
        listed = CliRunner().invoke(main, ["models", "--url", url], env={"COLUMNS": "200"})
        assert listed.exit_code == 0, listed.output
        rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()
                if line.strip().startswith(("tiny-", "broken"))}  # fmt: skip
        assert rows == {"tiny-a": "loaded", "tiny-b": "unloaded", "broken": "unloaded"}
        overview = CliRunner().invoke(main, ["status", "--url", url, "--json"])
        state = json.loads(overview.stdout)
        assert state["slots"] is None and "a router" in state["slots_disabled"]
        one = json.loads(CliRunner().invoke(main, ["status", "--url", url, "--json",
                                                   "--model", "tiny-a"]).stdout)  # fmt: skip
        assert one["model"] == "tiny-a" and len(one["slots"]) == 1
        unloaded = json.loads(CliRunner().invoke(main, ["status", "--url", url, "--json",
                                                        "--model", "tiny-b"]).stdout)  # fmt: skip
        assert unloaded["slots"] is None and "not loaded" in unloaded["slots_disabled"]
        for command in (["chat", "Hi"], ["complete", "Once", "--no-stream"]):
            ran = CliRunner().invoke(
                main, [*command, "--url", url, "--model", "tiny-a", "--max-tokens", "2"]
            )
            assert ran.exit_code == 0, ran.output
        rest, err = interrupt(process)
    finally:
        reap(process)
    assert process.returncode == 0, ready + rest + err
    assert "server stopped" in rest and "Traceback" not in err


def test_a_router_model_falls_asleep_while_scraped(
    models_dir: Path, llama_server_binary: Path, tmp_path: Path
) -> None:
    """Each of a router's models sleeps on its own: scraped every 0.2 s, one still does,
    and is reported in memory, up, with its slots holding nothing."""
    from ..server.test_sleep import collected, scraped_asleep

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with ServerManager(
        port=0, backend="binary", server_path=llama_server_binary, log_dir=tmp_path,
        models_dir=models_dir,
    ) as router:  # fmt: skip
        router.start(n_parallel=2, ctx_size=512, n_threads=1, sleep_idle_seconds=1)
        client = router.client()
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=provider)
        watch = ProcessMetrics(router, meter_provider=provider)
        try:
            client.chat.completions.create(model="tiny-a", messages=MESSAGES, max_tokens=3)
            # the model's instance is the router's child process: watched too
            instances = {
                a["process.pid"]: a.get("process.parent_pid")
                for a, _ in collected(reader)["process.memory.usage"]
            }
            assert instances[router.pid] is None
            assert list(instances.values()).count(router.pid) == 1
            asleep = scraped_asleep(
                lambda: collected(reader), lambda: statuses(client)["tiny-a"] == "sleeping"
            )

            def of(name: str) -> dict[Any, float]:
                return {
                    (a.get("gen_ai.request.model"), a.get("llama_cpp.slot.id")): v
                    for a, v in asleep[name]
                }

            assert of("llama_cpp.server.model.loaded")[("tiny-a", None)] == 1
            assert of("llama_cpp.server.up")[("tiny-a", None)] == 1
            assert of("llama_cpp.server.context.tokens") == {("tiny-a", None): 0}
            assert of("llama_cpp.server.slot.context.size") == {
                ("tiny-a", 0): 256,
                ("tiny-a", 1): 256,
            }
        finally:
            bridge.close()
            watch.close()
            client.close()
            provider.shutdown()
