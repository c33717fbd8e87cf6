"""`InferenceEngine` against a real llama.cpp server running the tiny model.

The tiny model never emits end-of-sequence, so a generation always runs to ``max_tokens``
(finish reason "length"), and temperature 0 makes it deterministic.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import llamatelemetry
from llamatelemetry.api import (
    BadRequestError,
    LlamaCppClient,
    StreamInterruptedError,
)
from llamatelemetry.server import (
    BatchInferenceError,
    EngineStats,
    InferenceEngine,
    InferenceResult,
    ServerError,
    StreamingInference,
)
from llamatelemetry.server._engine._engine_stats import _StatsRecorder
from llamatelemetry.testing import TinyModelFiles, build_tiny_files
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

N_EMBD = 64
PROMPT = "The quick brown fox"
GREEDY: dict[str, Any] = {"temperature": 0.0, "seed": 42}
OPTIONS: dict[str, Any] = {
    "n_parallel": 4,
    "n_threads": 1,
    "embedding": True,
    "pooling": "mean",
    "ctx_size": 8192,  # 2048 tokens per slot
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFiles:
    return build_tiny_files(tmp_path_factory.mktemp("engine-model"))


@pytest.fixture(scope="module")
def engine(
    files: TinyModelFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InferenceEngine]:
    with InferenceEngine(
        files.model.path, log_dir=tmp_path_factory.mktemp("engine-logs"), **OPTIONS
    ) as engine:
        yield engine


@pytest.fixture
def lazy_engine(files: TinyModelFiles, tmp_path: Path) -> Iterator[InferenceEngine]:
    """A fresh engine whose server has not started (stats from zero)."""
    with InferenceEngine(files.model.path, start=False, log_dir=tmp_path, **OPTIONS) as engine:
        yield engine


def _wait_all_idle(client: LlamaCppClient, timeout: float = 10.0) -> float:
    """Seconds until every slot is idle; fails after ``timeout``."""
    started = time.monotonic()
    while True:
        if all(slot["state"] == "idle" for slot in client.slots.list()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"slots still busy after {timeout}s: {client.slots.list()}")
        time.sleep(0.01)


# -- infer -----------------------------------------------------------------------------


def test_package_reexports_engine() -> None:
    assert llamatelemetry.InferenceEngine is InferenceEngine
    assert "InferenceEngine" in llamatelemetry.__all__


def test_engine_exposes_server_and_client(engine: InferenceEngine) -> None:
    assert engine.server.is_running
    assert engine.url == engine.server.url
    assert engine.client.base_url.rstrip("/").endswith(str(engine.server.port))
    assert engine.n_parallel == 4
    assert "running" in repr(engine)


def test_infer_counts_tokens(engine: InferenceEngine) -> None:
    result = engine.infer(PROMPT, max_tokens=12, **GREEDY)
    assert isinstance(result, InferenceResult)
    assert result.text
    assert result.completion_tokens == 12
    assert result.prompt_tokens == len(engine.client.tokenize(PROMPT))
    assert result.total_tokens == result.prompt_tokens + 12
    assert result.finish_reason == "length"
    assert result.streamed is False
    assert result.raw.content == result.text


def test_prompt_tokens_include_cached_ones(engine: InferenceEngine) -> None:
    first = engine.infer(PROMPT, max_tokens=2, **GREEDY)
    again = engine.infer(PROMPT, max_tokens=2, **GREEDY)  # the slot's cache now holds it
    assert again.timings is not None and again.timings.cache_n
    assert again.prompt_tokens == first.prompt_tokens


def test_stop_sequences_cut_the_text(engine: InferenceEngine) -> None:
    full = engine.infer(PROMPT, max_tokens=16, **GREEDY)
    word = full.text.split()[1] if len(full.text.split()) > 1 else full.text[2:5]
    cut = engine.infer(PROMPT, max_tokens=16, stop_sequences=[word], **GREEDY)
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < 16
    assert word not in cut.text
    assert full.text.startswith(cut.text)
    assert engine.infer(PROMPT, max_tokens=16, stop_sequences=word, **GREEDY).text == cut.text
    # the client's own name for it, as SamplingParams spells it, works the same
    assert engine.infer(PROMPT, max_tokens=16, stop=[word], **GREEDY).text == cut.text


def test_metrics_agree_with_server_timings(engine: InferenceEngine) -> None:
    n = 20
    result = engine.infer(PROMPT, max_tokens=n, **GREEDY)
    timings = result.timings
    assert timings is not None and timings.predicted_n == n
    assert result.server_prompt_ms == timings.prompt_ms
    assert result.server_predicted_ms == timings.predicted_ms
    assert timings.prompt_ms is not None and timings.predicted_ms is not None
    assert result.ttft_s == pytest.approx(timings.prompt_ms / 1000)
    assert result.tpot_s is not None
    assert result.tpot_s * (n - 1) == pytest.approx(timings.predicted_ms / 1000)
    assert result.tokens_per_second == timings.predicted_per_second
    assert result.latency_s >= (timings.prompt_ms + timings.predicted_ms) / 1000
    assert result.latency_s > result.ttft_s


def test_tpot_is_none_for_a_single_token(engine: InferenceEngine) -> None:
    result = engine.infer(PROMPT, max_tokens=1, **GREEDY)
    assert result.completion_tokens == 1
    assert result.tpot_s is None


def test_extra_llama_cpp_parameters_pass_through(engine: InferenceEngine) -> None:
    result = engine.infer(PROMPT, max_tokens=4, min_p=0.1, repeat_penalty=1.1, **GREEDY)
    assert result.completion_tokens == 4
    settings = result.raw.generation_settings or {}
    assert settings.get("min_p") == pytest.approx(0.1)


# -- infer_stream ------------------------------------------------------------------------


def test_stream_yields_the_same_text_token_by_token(engine: InferenceEngine) -> None:
    n = 10
    expected = engine.infer(PROMPT, max_tokens=n, **GREEDY)
    with engine.infer_stream(PROMPT, max_tokens=n, **GREEDY) as stream:
        assert isinstance(stream, StreamingInference)
        assert not stream.done
        pieces = list(stream)
    assert all(isinstance(p, str) and p for p in pieces)
    assert len(pieces) == n  # one chunk per token
    assert "".join(pieces) == expected.text
    result = stream.result
    assert stream.done and stream.closed
    assert result.text == expected.text == stream.text
    assert result.streamed is True
    assert result.completion_tokens == n
    assert result.prompt_tokens == expected.prompt_tokens
    assert result.finish_reason == "length"
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.latency_s
    assert result.raw.stop is True and result.timings is not None
    assert result.tpot_s is not None and result.server_predicted_ms is not None
    assert result.tpot_s * (n - 1) == pytest.approx(result.server_predicted_ms / 1000)


def test_stream_result_needs_the_end(engine: InferenceEngine) -> None:
    stream = engine.infer_stream(PROMPT, max_tokens=5, **GREEDY)
    with pytest.raises(ServerError, match="not finished"):
        _ = stream.result
    first = next(stream)
    result = stream.finish()
    assert result.text.startswith(first)
    assert result.completion_tokens == 5
    assert stream.finish() is result  # idempotent
    stream.close()
    assert stream.result is result


def test_stream_with_stop_sequence(engine: InferenceEngine) -> None:
    full = engine.infer(PROMPT, max_tokens=16, **GREEDY)
    word = full.text.split()[1] if len(full.text.split()) > 1 else full.text[2:5]
    with engine.infer_stream(PROMPT, max_tokens=16, stop_sequences=[word], **GREEDY) as stream:
        text = "".join(stream)
    assert stream.result.finish_reason == "stop"
    assert (
        text
        == stream.result.text
        == engine.infer(PROMPT, max_tokens=16, stop_sequences=[word], **GREEDY).text
    )


def test_closing_a_stream_midway_frees_the_slot(engine: InferenceEngine) -> None:
    client = engine.client
    _wait_all_idle(client)
    before = engine.stats()
    stream = engine.infer_stream(PROMPT, max_tokens=1500, **GREEDY)
    for _, _piece in zip(range(3), stream, strict=False):
        pass
    assert any(slot["state"] == "processing" for slot in client.slots.list())
    stream.close()
    stream.close()  # idempotent
    assert stream.closed and not stream.done
    assert list(stream) == []
    with pytest.raises(ServerError, match="closed before"):
        _ = stream.result
    _wait_all_idle(client)
    after = engine.stats()
    assert after.cancelled == before.cancelled + 1
    assert after.requests == before.requests + 1
    assert after.failures == before.failures


def test_dropping_a_stream_frees_the_slot(engine: InferenceEngine) -> None:
    before = engine.stats()
    stream = engine.infer_stream(PROMPT, max_tokens=1500, **GREEDY)
    next(stream)
    del stream  # no reference cycle: closed at once
    _wait_all_idle(engine.client)
    assert engine.stats().cancelled == before.cancelled + 1


def test_stream_http_error_raises_at_once(engine: InferenceEngine) -> None:
    before = engine.stats()
    with pytest.raises(BadRequestError, match="context size"):
        engine.infer_stream("word " * 3000, max_tokens=4)
    after = engine.stats()
    assert (after.requests, after.failures) == (before.requests + 1, before.failures + 1)


# -- batch_infer -------------------------------------------------------------------------


def test_batch_infer_runs_in_parallel_and_keeps_order(engine: InferenceEngine) -> None:
    # Distinct prompt lengths make the order visible (greedy text is alike for all prompts).
    prompts = [" ".join(["word"] * (i + 1)) for i in range(8)]
    sequential = [engine.infer(p, max_tokens=32, **GREEDY) for p in prompts]
    batch = engine.batch_infer(prompts, concurrency=4, max_tokens=32, **GREEDY)
    assert len(batch) == len(prompts)
    assert [r.text for r in batch] == [r.text for r in sequential]
    assert [r.prompt_tokens for r in batch] == [r.prompt_tokens for r in sequential]
    assert all(r.completion_tokens == 32 for r in batch)
    assert [r.prompt_tokens for r in batch] == sorted({r.prompt_tokens for r in batch})
    slots_used = {r.raw.id_slot for r in batch}
    assert len(slots_used) >= 2, f"all prompts ran on slots {slots_used}"


def test_batch_infer_defaults_to_the_server_slots(engine: InferenceEngine) -> None:
    results = engine.batch_infer(["a", "b", "c"], max_tokens=3, **GREEDY)
    assert [r.completion_tokens for r in results] == [3, 3, 3]
    assert engine.batch_infer([]) == []


def test_batch_infer_keeps_the_successes_of_a_partial_failure(engine: InferenceEngine) -> None:
    too_long = "word " * 3000  # beyond the 2048-token slot context: a 400 from the server
    prompts = ["first", too_long, "third"]
    before = engine.stats()
    with pytest.raises(
        BatchInferenceError, match=r"1 of 3 prompts failed: \[1\] BadRequest"
    ) as info:
        engine.batch_infer(prompts, concurrency=2, max_tokens=4, **GREEDY)
    error = info.value
    assert set(error.errors) == {1}
    assert isinstance(error.errors[1], BadRequestError)
    assert isinstance(error.__cause__, BadRequestError)
    assert sorted(error.successes) == [0, 2]
    assert error.successes[0].text == engine.infer("first", max_tokens=4, **GREEDY).text
    assert error.results[1] is error.errors[1]

    mixed = engine.batch_infer(prompts, max_tokens=4, return_exceptions=True, **GREEDY)
    assert isinstance(mixed[0], InferenceResult) and isinstance(mixed[2], InferenceResult)
    assert isinstance(mixed[1], BadRequestError)
    after = engine.stats()
    assert after.requests == before.requests + 7
    assert after.failures == before.failures + 2


def test_batch_infer_logs_returned_failures_at_debug_only(
    engine: InferenceEngine, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = ["first", "word " * 3000, "third"]  # the second fails (a 400)
    caplog.set_level(logging.DEBUG, logger="llamatelemetry")
    mixed = engine.batch_infer(prompts, max_tokens=2, return_exceptions=True, **GREEDY)
    assert isinstance(mixed[1], BadRequestError)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    assert "batch_infer: 1 of 3 prompts failed" in [r.getMessage() for r in caplog.records]
    caplog.clear()
    with pytest.raises(BatchInferenceError):  # raised: the warning stays
        engine.batch_infer(prompts, max_tokens=2, **GREEDY)
    assert [
        (r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING
    ] == [("WARNING", "batch_infer: 1 of 3 prompts failed")]


# -- chat and embed ----------------------------------------------------------------------


def test_embeddings_without_pooling_name_the_keyword(files: TinyModelFiles, tmp_path: Path) -> None:
    with InferenceEngine(
        files.model.path, log_dir=tmp_path, n_parallel=1, n_threads=1, embedding=True
    ) as engine:
        with pytest.raises(BadRequestError) as info:
            engine.embed("What is CUDA?")
    error = info.value
    assert "Pooling type 'none' is not OAI compatible" in error.message  # the server's words
    assert 'pooling="mean"' in error.hint and "InferenceEngine" in error.hint
    assert error.hint in str(error) and "--pooling" not in str(error)


def test_chat(engine: InferenceEngine) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    result = engine.chat(messages, max_tokens=6, **GREEDY)
    assert result.text and result.completion_tokens == 6
    assert result.finish_reason == "length"
    assert result.prompt_tokens > 0
    assert result.raw.usage.prompt_tokens == result.prompt_tokens
    assert result.timings is not None and result.tokens_per_second is not None
    assert result.ttft_s == pytest.approx((result.server_prompt_ms or 0) / 1000)
    assert engine.chat(messages, max_tokens=6, **GREEDY).text == result.text


def test_embed(engine: InferenceEngine) -> None:
    vectors = engine.embed(["hello world", "goodbye"])
    assert len(vectors) == 2
    assert all(len(v) == N_EMBD and all(math.isfinite(x) for x in v) for v in vectors)
    single = engine.embed("hello world")
    assert len(single) == N_EMBD
    assert single == pytest.approx(vectors[0])


# -- stats -------------------------------------------------------------------------------


def test_stats_add_up(lazy_engine: InferenceEngine) -> None:
    engine = lazy_engine
    empty = engine.stats()
    assert isinstance(empty, EngineStats)
    assert (empty.requests, empty.generations, empty.uptime_s) == (0, 0, 0.0)
    assert empty.mean_latency_s is None and empty.mean_ttft_s is None
    assert not engine.server.is_running  # start=False: nothing started yet

    one = engine.infer(PROMPT, max_tokens=5, **GREEDY)  # starts the server lazily
    assert engine.server.is_running
    with engine.infer_stream(PROMPT, max_tokens=7, **GREEDY) as stream:
        list(stream)
    two = stream.result
    batch = engine.batch_infer(["x", "y", "z"], max_tokens=3, **GREEDY)
    chat = engine.chat([{"role": "user", "content": "hi"}], max_tokens=2, **GREEDY)
    engine.embed(["a", "b"])
    results = [one, two, *batch, chat]

    stats = engine.stats()
    assert stats.requests == 7
    assert stats.generations == 6
    assert stats.embed_requests == 1
    assert (stats.failures, stats.cancelled) == (0, 0)
    assert stats.completion_tokens == 5 + 7 + 3 * 3 + 2 == sum(r.completion_tokens for r in results)
    assert stats.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert stats.total_latency_s == pytest.approx(sum(r.latency_s for r in results))
    assert stats.mean_latency_s == pytest.approx(stats.total_latency_s / 6)
    ttfts = [r.ttft_s for r in results if r.ttft_s is not None]
    assert stats.mean_ttft_s == pytest.approx(sum(ttfts) / len(ttfts))
    speeds = [r.tokens_per_second for r in results if r.tokens_per_second is not None]
    assert stats.mean_tokens_per_second == pytest.approx(sum(speeds) / len(speeds))
    assert stats.uptime_s > 0
    assert engine.stats().uptime_s >= stats.uptime_s


# -- lifecycle ---------------------------------------------------------------------------


def test_context_manager_stops_the_server(files: TinyModelFiles, tmp_path: Path) -> None:
    with InferenceEngine(files.model.path, n_parallel=1, n_threads=1, log_dir=tmp_path) as engine:
        pid = engine.server.pid
        assert pid is not None
        assert engine.infer("hi", max_tokens=2, **GREEDY).completion_tokens == 2
        client = engine.client
    assert engine.closed and not engine.server.is_running
    assert client.is_closed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    uptime = engine.stats().uptime_s
    assert engine.stats().uptime_s == uptime  # frozen once closed
    with pytest.raises(ServerError, match="closed"):
        engine.infer("hi", max_tokens=2)
    engine.close()  # idempotent


def test_lazy_engine_starts_on_first_use(lazy_engine: InferenceEngine) -> None:
    assert "not started" in repr(lazy_engine)
    assert lazy_engine.url.startswith("http://127.0.0.1:")
    assert lazy_engine.server.is_running
    lazy_engine.start()  # already running: nothing happens


# -- bad input: refused before anything is sent --------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda e: e.infer(123), TypeError),
        (lambda e: e.infer(None), TypeError),
        (lambda e: e.infer(""), ValueError),
        (lambda e: e.infer(["tokens"]), TypeError),
        (lambda e: e.infer("x", temperature=-1.0), ValueError),
        (lambda e: e.infer("x", top_p=2.0), ValueError),
        (lambda e: e.infer("x", max_tokens="5"), TypeError),
        (lambda e: e.infer("x", stop_sequences=[1]), TypeError),
        (lambda e: e.infer("x", stream=True), TypeError),
        (lambda e: e.infer("x", stop=["a"], stop_sequences=["a"]), TypeError),
        (lambda e: e.infer("x", temprature=0.0), TypeError),
        (lambda e: e.infer("x", min_p=float("nan")), ValueError),
        (lambda e: e.infer_stream(b"x"), TypeError),
        (lambda e: e.infer_stream("x", top_k=-1), ValueError),
        (lambda e: e.batch_infer("one prompt"), TypeError),
        (lambda e: e.batch_infer(["a", ""]), ValueError),
        (lambda e: e.batch_infer(["a", 3]), TypeError),
        (lambda e: e.batch_infer(["a"], concurrency=0), ValueError),
        (lambda e: e.batch_infer(["a"], concurrency=1.5), TypeError),
        (lambda e: e.batch_infer(["a"], concurrency=True), TypeError),
        (lambda e: e.batch_infer(["a"], temperature=float("inf")), ValueError),
        (lambda e: e.batch_infer(["a"], return_exceptions=1), TypeError),
        (lambda e: e.chat([]), ValueError),
        (lambda e: e.chat("hello"), TypeError),
        (lambda e: e.chat([{"role": "robot", "content": "x"}]), ValueError),
        (lambda e: e.chat([{"role": "user", "content": "x"}], seed=-5), ValueError),
        (lambda e: e.embed([]), ValueError),
        (lambda e: e.embed(42), TypeError),
    ],
)
def test_bad_input_is_refused_before_any_request(
    lazy_engine: InferenceEngine, call: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(lazy_engine)
    # Nothing was sent: the lazy server was not even started, and nothing was counted.
    assert not lazy_engine.server.is_running
    assert lazy_engine.stats().requests == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n_paralel": 2}, TypeError),
        ({"n_parallel": 0}, ValueError),
        ({"pooling": "median"}, ValueError),
        ({"timeout": 5}, TypeError),
        ({"startup_timeout": 0}, ValueError),
        ({"startup_timeout": "5"}, TypeError),
        ({"client_options": ["x"]}, TypeError),
        ({"port": 70000}, ValueError),
        ({"backend": "gpu"}, ValueError),
    ],
)
def test_bad_engine_options_are_refused_before_start(
    files: TinyModelFiles, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        InferenceEngine(files.model.path, **kwargs)


def test_missing_model_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        InferenceEngine(tmp_path / "missing.gguf", log_dir=tmp_path)
    engine = InferenceEngine(tmp_path / "missing.gguf", start=False, log_dir=tmp_path)
    with engine, pytest.raises(FileNotFoundError):
        engine.infer("hi")


def test_a_stream_that_breaks_counts_as_a_failure() -> None:
    """A mid-stream drop reaches the caller after the pieces before it, and is counted.

    A real server cannot be made to drop a stream on demand, so the engine's streaming
    wrapper reads a native stream from the local fault server that cuts the connection.
    """
    chunks = sse(
        {"content": "one", "stop": False},
        {"content": "two", "stop": False},
        {"content": "three", "stop": True},
        done=False,
    )
    recorder = _StatsRecorder()
    with FaultServer(Reply(chunks=chunks, drop_after=2)) as fault:
        with LlamaCppClient(fault.url) as client:
            recorder.request()
            native = client.complete(PROMPT, max_tokens=5, stream=True)
            stream = StreamingInference(native, time.perf_counter(), recorder)
            assert next(stream) == "one"
            assert next(stream) == "two"
            with pytest.raises(StreamInterruptedError):
                next(stream)
            assert native.closed and stream.closed
            assert list(stream) == []
            with pytest.raises(ServerError, match="the stream failed") as info:
                _ = stream.result
    assert isinstance(info.value.__cause__, StreamInterruptedError)
    after = recorder.snapshot(0.0)
    assert (after.requests, after.failures, after.cancelled) == (1, 1, 0)


def test_engine_takes_the_template_and_reasoning_options(tmp_path: Path) -> None:
    """Checked at construction, before any server starts (start=False)."""
    template = Path(__file__).resolve().parents[1] / "data" / "tools-chatml.jinja"
    engine = InferenceEngine(
        tmp_path / "m.gguf", start=False, chat_template=template, reasoning_format="none"
    )
    engine.close()
    with pytest.raises(ValueError, match="reasoning_format must be one of"):
        InferenceEngine(tmp_path / "m.gguf", start=False, reasoning_format="loud")
    with pytest.raises(TypeError, match="did you mean 'chat_template'"):
        InferenceEngine(tmp_path / "m.gguf", start=False, chat_templat="chatml")
