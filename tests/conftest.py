"""Real llama.cpp servers for the whole session: a tiny GGUF model served by the embedded
llama.cpp server (or a ``llama-server`` binary from ``LLAMA_SERVER_PATH``/PATH)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry._fastpath import forget_checks
from llamatelemetry.api import LlamaCppClient, _attempts
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import (
    TinyModelFiles,
    build_tiny_files,
    start_chat_server,
    start_rerank_server,
)

# Property tests: in CI (``CI`` set, as .ci/run sets it) the same examples every run, so a
# run can never fail on luck; locally, new random examples every run, to keep exploring.
# ``HYPOTHESIS_PROFILE=ci|dev`` picks one by name. A failure found locally prints the
# example to add with ``@example`` so that CI runs it from then on.
# No deadline in either: a busy machine must not fail an example by its speed.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
# Hypothesis loads its own "ci" profile when it sees CI; "dev" starts from its defaults.
settings.register_profile("dev", settings.get_profile("default"), deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

API_KEY = "test-key-5f1c"

# What llama-server answers, for the fault server to send back.
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "tiny",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def wait_until_idle(server: ServerManager, timeout: float = 30.0) -> None:
    """Wait until none of ``server``'s slots is busy: a stream an earlier test closed early
    may still hold its slot for a moment (the server notices at its next write), and a
    test of slot states or token counts must start from a server at rest."""
    import time

    deadline = time.monotonic() + timeout
    with server.client() as client:
        while any(slot["state"] != "idle" for slot in client.slots.list()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.url} still busy after {timeout} s")
            time.sleep(0.02)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep retry waits short; the policy (counts, Retry-After) is what is under test."""
    monkeypatch.setattr(_attempts, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(_attempts, "MAX_RETRY_DELAY", 0.05)


@pytest.fixture
def fresh_checks() -> Iterator[None]:
    """The fast paths' self-checks forgotten before and after the test: the versions the
    test fakes are checked afresh, and the next test's real ones again."""
    forget_checks()
    yield
    forget_checks()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def providers(
    span_exporter: InMemorySpanExporter,
) -> Iterator[tuple[TracerProvider, MeterProvider, InMemoryMetricReader]]:
    """A real SDK pipeline kept in memory: spans to ``span_exporter``, metrics to the reader."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, meter_provider, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def instrumented(
    providers: tuple[TracerProvider, MeterProvider, InMemoryMetricReader],
) -> Iterator[InMemoryMetricReader]:
    """``LlamaCppInstrumentor`` on ``providers`` (our clients and the openai SDK's) for the
    test; its metric reader."""
    from llamatelemetry.telemetry import LlamaCppInstrumentor

    tracer_provider, meter_provider, reader = providers
    LlamaCppInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    try:
        yield reader
    finally:
        LlamaCppInstrumentor().uninstrument()


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def tiny_files(server_dir: Path) -> TinyModelFiles:
    return build_tiny_files(server_dir / "model")


@pytest.fixture(scope="session")
def chat_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    """Chat, completions, embeddings (mean pooling), metrics, slots, a LoRA adapter; 4 slots."""
    with start_chat_server(server_dir / "chat") as server:
        yield server


@pytest.fixture(scope="session")
def rerank_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    with start_rerank_server(server_dir / "rerank") as server:
        yield server


@pytest.fixture(scope="session")
def key_server(server_dir: Path, tiny_files: TinyModelFiles) -> Iterator[ServerManager]:
    with start_chat_server(server_dir / "key", api_key=API_KEY, n_parallel=1) as server:
        yield server


@pytest.fixture
def client(chat_server: ServerManager) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(base_url=chat_server.url) as client:
        yield client


@pytest.fixture
def rerank_client(rerank_server: ServerManager) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(base_url=rerank_server.url) as client:
        yield client


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real model's file (see tests/models.py): skipped when absent, unless required."""
    import os

    from .models import REQUIRE_ENV, smollm2_path

    path = smollm2_path()
    if not path.is_file():
        message = f"the real model is not at {path}: run python -m tests.models"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_server(smollm2: Path, server_dir: Path) -> Iterator[ServerManager]:
    """SmolLM2-135M-Instruct on the embedded llama.cpp server: where real text matters."""
    server = ServerManager(port=0, log_dir=server_dir / "real" / "logs")
    server.start(smollm2, n_parallel=2, n_threads=2, metrics=True, slots=True)
    with server:
        yield server


@pytest.fixture
def real_client(real_server: ServerManager) -> Iterator[LlamaCppClient]:
    with LlamaCppClient(base_url=real_server.url) as client:
        yield client


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """A real llama-server executable (see tests/llama_server.py): skipped when none is
    built, unless required."""
    import os

    from .llama_server import REQUIRE_ENV, binary_path

    path = binary_path()
    if not path.is_file():
        message = f"no llama-server binary at {path}: run python -m tests.llama_server"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
