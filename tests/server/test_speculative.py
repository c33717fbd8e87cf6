"""Speculative decoding on both backends: a draft model or draft-less n-grams, the server's
draft counts typed, the acceptance rate on spans, as a metric and from the server's own
counters, and never a different answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatelemetry.api import LlamaCppClient, Timings
from llamatelemetry.server import InferenceEngine, ServerManager
from llamatelemetry.server._options import SPECULATIVE_TYPES, ServerOptions
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, LlamaServerMetrics
from llamatelemetry.testing import TinyModelFiles

from ..telemetry.test_pipeline import points
from ._support import BACKENDS, MESSAGES, manager, server_path


@pytest.fixture(scope="module", params=BACKENDS)
def drafted(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_files: TinyModelFiles,
) -> Iterator[ServerManager]:
    """The tiny model drafting for itself: at temperature 0 every draft is accepted."""
    backend = request.param
    with manager(backend, request, tmp_path_factory.mktemp(f"draft-{backend}")) as server:
        server.start(
            tiny_files.model.path, draft_model=tiny_files.model.path, draft_max=4, n_threads=1
        )
        yield server


def test_a_draft_model_drafts_and_changes_nothing(
    drafted: ServerManager, chat_server: ServerManager
) -> None:
    with drafted.client() as client, chat_server.client() as plain:
        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=40, temperature=0)
        same = plain.chat.completions.create(messages=MESSAGES, max_tokens=40, temperature=0)
        timings = reply.timings
        assert timings is not None and timings.draft_n is not None
        assert timings.draft_n > 0 and timings.draft_n_accepted == timings.draft_n
        assert timings.draft_acceptance == 1.0
        # Speculation is an optimisation: the answer is the one without it.
        assert reply.choices[0].message.content == same.choices[0].message.content
        assert same.timings is not None and same.timings.draft_n is None
        assert same.timings.draft_acceptance is None
        assert all(slot["speculative"] for slot in client.slots.list())


def test_acceptance_on_spans_metrics_and_the_bridge(
    drafted: ServerManager, providers: Any, span_exporter: Any
) -> None:
    tracer_provider, meter_provider, reader = providers
    with InstrumentedLlamaCppClient(
        drafted.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        before = client.metrics.values()["llamacpp:spec_decode_num_draft_tokens_total"]
        reply = client.chat.completions.create(messages=MESSAGES, max_tokens=30, temperature=0)
        stream = client.chat.completions.create(
            messages=MESSAGES, max_tokens=30, temperature=0, stream=True
        )
        last = [chunk for chunk in stream][-1]
        bridge = LlamaServerMetrics(client, interval=0, meter_provider=meter_provider)
        try:
            found = points(reader)
        finally:
            bridge.close()
    assert reply.timings is not None and last.timings is not None
    drafted_n = [t.draft_n for t in (reply.timings, last.timings)]
    chats = [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat")]
    assert [s.attributes["llama_cpp.timings.draft_n"] for s in chats] == drafted_n
    assert [s.attributes["llama_cpp.speculative.acceptance_rate"] for s in chats] == [1.0, 1.0]
    [acceptance] = found["llama_cpp.speculative.acceptance_rate"]
    assert acceptance.count == 2 and acceptance.sum == 2.0
    [server_drafts] = found["llama_cpp.server.speculative.draft_tokens"]
    [server_accepted] = found["llama_cpp.server.speculative.accepted_tokens"]
    assert server_drafts.value - before == sum(drafted_n)  # type: ignore[operator]
    assert server_accepted.value == server_drafts.value


def test_bench_reports_the_acceptance(drafted: ServerManager) -> None:
    from ..bench.test_load import invoke, ok_json

    args = ["--url", drafted.url, "-n", "3", "-c", "1", "--max-tokens", "12", "--temperature", "0"]
    [run] = ok_json(*args)["runs"]
    assert run["draft_acceptance"] == 1.0
    drafted_n = [r["draft_tokens"] for r in run["per_request"]]
    assert all(n > 0 for n in drafted_n)
    assert [r["draft_accepted"] for r in run["per_request"]] == drafted_n
    human = invoke(*args)
    assert human.exit_code == 0 and "draft acceptance" in human.stdout
    assert "100.0% (speculative decoding)" in human.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_draft_less_ngram_speculation(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_files: TinyModelFiles, backend: str
) -> None:
    with InferenceEngine(
        tiny_files.model.path,
        backend=backend,  # type: ignore[arg-type]
        server_path=server_path(backend, request),
        log_dir=tmp_path,
        speculative="ngram-mod",
        n_threads=1,
    ) as engine:
        result = engine.infer("Once upon a time", max_tokens=60, temperature=0)
        assert result.completion_tokens == 60
        # The tiny model repeats itself: the n-grams of its own output draft the rest.
        assert result.timings is not None and (result.timings.draft_n or 0) > 0
        with LlamaCppClient(engine.url) as client:
            assert all(slot["speculative"] for slot in client.slots.list())


def test_speculative_options_are_checked_and_rendered(tmp_path: Path) -> None:
    model, draft = tmp_path / "m.gguf", tmp_path / "d.gguf"
    options = ServerOptions(model, draft_model=draft, draft_max=8, draft_min=2)
    argv = options.to_argv()
    assert argv[argv.index("--spec-draft-model") + 1] == str(draft)
    # A draft model alone drafts nothing on today's llama-server: its type goes with it.
    assert argv[argv.index("--spec-type") + 1] == "draft-simple"
    assert argv[argv.index("--spec-draft-n-max") + 1] == "8"
    assert argv[argv.index("--spec-draft-n-min") + 1] == "2"
    config = options.to_embedded_config()
    assert config["speculative.types"] == ["draft-simple"]
    assert config["speculative.draft.mparams.path"] == str(draft)
    both = ServerOptions(model, speculative=("ngram-simple", "ngram-mod")).to_argv()
    assert both[both.index("--spec-type") + 1] == "ngram-simple,ngram-mod"
    assert "--spec-type" not in ServerOptions(model).to_argv()
    assert set(SPECULATIVE_TYPES) >= {"ngram-mod", "draft-simple", "ngram-cache"}
    with pytest.raises(ValueError, match="needs a draft model"):
        ServerOptions(model, speculative="draft-simple")
    with pytest.raises(ValueError, match="'ngram' is not one of"):
        ServerOptions(model, speculative="ngram")
    with pytest.raises(TypeError, match="speculative must be a type name"):
        ServerOptions(model, speculative=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="draft_min 5 is above draft_max 2"):
        ServerOptions(model, draft_model=draft, draft_max=2, draft_min=5)
    # Unchecked, the server would draft nothing at all (its default draft_max is 3).
    with pytest.raises(ValueError, match="draft_min 5 is above the server's default draft_max 3"):
        ServerOptions(model, draft_model=draft, draft_min=5)
    with pytest.raises(ValueError, match="draft_max must be >= 1"):  # 0 crashes the server
        ServerOptions(model, draft_model=draft, draft_max=0)
    with pytest.raises(ValueError, match="draft_max bounds a draft model's drafts"):
        ServerOptions(model, speculative="ngram-mod", draft_max=8)
    # A draft model beside n-gram types is used too, not loaded for nothing.
    mixed = ServerOptions(model, draft_model=draft, speculative="ngram-mod").to_argv()
    assert mixed[mixed.index("--spec-type") + 1] == "ngram-mod,draft-simple"
    with pytest.raises(FileNotFoundError):
        ServerManager(port=0).start(model, draft_model=draft)


def test_acceptance_is_none_without_drafts() -> None:
    assert Timings(draft_n=0, draft_n_accepted=0).draft_acceptance is None
    assert Timings(draft_n=8, draft_n_accepted=6).draft_acceptance == 0.75
    assert Timings().draft_acceptance is None
