"""The documentation is executed: every ```python block of every page in docs/ runs, in page
order in one namespace (the way a reader pastes them into one session), against real
llama.cpp servers. A page whose example breaks, or whose output stops saying what the page
claims, fails here. Also: the CLI page's shown output still has the shape the commands
print, the telemetry reference tables list exactly what the code emits, the deploy/
dashboard queries only metrics we emit, and ``mkdocs build --strict`` passes.

Only the placeholders documented on docs/index.md are substituted:

- ``http://127.0.0.1:8080`` (and ``$LLAMA_BASE_URL``) → the session's chat server
- ``http://127.0.0.1:8081`` → the session's rerank server
- ``http://127.0.0.1:4318`` → a local OTLP receiver standing in for the collector
- ``/path/to/model.gguf`` → the tiny model, ``/path/to/adapter.gguf`` → the chat server's LoRA
- ``/path/to/models`` → a folder of two tiny models, ``/path/to/llama-server`` → the binary
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from llamatelemetry.server import InferenceEngine, ServerManager
from llamatelemetry.testing import TinyModelFiles
from llamatelemetry.testing._otlp import OTLPReceiver

from .cli.test_commands import INTERRUPTIBLE
from .frameworks import forget_leftovers

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHAT_URL = "http://127.0.0.1:8080"
RERANK_URL = "http://127.0.0.1:8081"
REAL_URL = "http://127.0.0.1:8082"  # a server with a real model (SmolLM2), for real text
OTLP_URL = "http://127.0.0.1:4318"
MODEL = "/path/to/model.gguf"
ADAPTER = "/path/to/adapter.gguf"
MODELS = "/path/to/models"  # a folder: model-a.gguf, model-b.gguf
LLAMA_SERVER = "/path/to/llama-server"
GENAI_METRICS = (
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai.client.operation.time_per_output_chunk",
    "gen_ai.server.time_to_first_token",
    "gen_ai.server.time_per_output_token",
    "llama_cpp.speculative.acceptance_rate",
    "llama_cpp.client.cached_prompt_tokens",
    "llama_cpp.client.evaluated_prompt_tokens",
)
SERVER_METRICS = (
    "llama_cpp.server.prompt_tokens",
    "llama_cpp.server.cached_prompt_tokens",
    "llama_cpp.server.generated_tokens",
    "llama_cpp.server.prompt_time",
    "llama_cpp.server.generation_time",
    "llama_cpp.server.decode_calls",
    "llama_cpp.server.prompt_throughput",
    "llama_cpp.server.generation_throughput",
    "llama_cpp.server.requests_processing",
    "llama_cpp.server.requests_deferred",
    "llama_cpp.server.slots.busy",
    "llama_cpp.server.slots.total",
    "llama_cpp.server.context.tokens",
    "llama_cpp.server.context.size",
    "llama_cpp.server.context.peak_tokens",
    "llama_cpp.server.slot.context.tokens",
    "llama_cpp.server.slot.context.size",
    "llama_cpp.server.speculative.draft_tokens",
    "llama_cpp.server.speculative.accepted_tokens",
    "llama_cpp.server.speculative.drafts",
    "llama_cpp.server.model.loaded",
    "llama_cpp.server.up",
)
PROCESS_METRICS = (
    "process.cpu.time",
    "process.memory.usage",
    "process.memory.virtual",
    "process.thread.count",
)
GPU_METRICS = (
    "hw.gpu.utilization",
    "hw.gpu.memory.usage",
    "hw.gpu.memory.limit",
    "hw.power",
    "hw.energy",
    "hw.temperature",
    "hw.gpu.clock.sm",
)
ALL_METRICS = {*GENAI_METRICS, *SERVER_METRICS, *PROCESS_METRICS, *GPU_METRICS}
# The GPU instruments, through setup_telemetry(gpu=True) with the stand-in NVIDIA driver (a
# fresh interpreter that finds it): each one's kind and unit, and the Prometheus exposition.
GPU_SCRIPT = """
import json
import httpx
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
from llamatelemetry.telemetry import setup_telemetry

reader = InMemoryMetricReader()
handle = setup_telemetry(
    "gpus", set_global=False, metric_readers=[reader], gpu=True, prometheus_port=0
)
def kind(data):
    if isinstance(data, Sum) and not data.is_monotonic:
        return "updowncounter"
    return {Histogram: "histogram", Sum: "counter", Gauge: "gauge"}[type(data)]
metrics = {
    metric.name: [kind(metric.data), metric.unit]
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
    if metric.name.startswith("hw.")
}
exposition = httpx.get(handle.prometheus_url, trust_env=False).text
handle.shutdown()
print(json.dumps([metrics, exposition]))
"""

# Fence languages a page may use. ```python blocks run; the others are shell sessions,
# configuration or output. Anything else (```py, ```pycon, ...) would escape execution.
FENCES = {"python", "bash", "console", "text", "yaml", "json", "mermaid", "nginx", "toml"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n"
    r"(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.S | re.M,
)
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')


@dataclass
class Block:
    lang: str
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]
        found.append(Block(match["lang"], body, text.count("\n", 0, match.start()) + 1))
    return found


def page_text(name: str) -> str:
    return (DOCS / name).read_text()


def python_blocks(text: str) -> list[Block]:
    """Runnable blocks: ``python`` fences that are not a snippet include of a tested file."""
    return [b for b in blocks(text) if b.lang == "python" and not SNIPPET.match(b.code.strip())]


PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
RUNNABLE = [p for p in PAGES if python_blocks(page_text(p))]


# --- the running context of a page -------------------------------------------------------


@dataclass
class Page:
    name: str
    out: str
    scope: dict[str, Any]
    receiver: OTLPReceiver
    chat: ServerManager
    rerank: ServerManager


@contextlib.contextmanager
def fresh_otel_globals() -> Iterator[None]:
    """Pages call ``setup_telemetry()``, which sets the global providers (once per process,
    in OpenTelemetry): give each page a fresh slate and put the previous state back."""
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    )
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE = None, Once()
    try:
        yield
    finally:
        (
            trace._TRACER_PROVIDER,
            trace._TRACER_PROVIDER_SET_ONCE,
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE,
        ) = saved


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of writing."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@contextlib.contextmanager
def console_exporters_follow_stdout() -> Iterator[None]:
    """The SDK's console exporters default to the ``sys.stdout`` of the moment the SDK was
    imported; in a terminal that is stdout all the same, here it must be the page's."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    saved = []
    for cls in (ConsoleSpanExporter, ConsoleMetricExporter):
        init = cls.__init__
        names = init.__code__.co_varnames[1 : init.__code__.co_argcount]
        defaults = list(init.__defaults__ or ())
        defaults[names[len(names) - len(defaults) :].index("out")] = _CurrentStdout()
        saved.append((init, init.__defaults__))
        init.__defaults__ = tuple(defaults)
    try:
        yield
    finally:
        for init, defaults in saved:
            init.__defaults__ = defaults


@contextlib.contextmanager
def isolated_process_state() -> Iterator[None]:
    """Environment variables, logger levels/handlers and the instrumentor as they were."""
    from llamatelemetry.telemetry import LlamaCppInstrumentor

    environ = dict(os.environ)
    ours = logging.getLogger("llamatelemetry")
    handlers, level = list(ours.handlers), ours.level
    try:
        with fresh_otel_globals(), console_exporters_follow_stdout():
            yield
        left_instrumented = LlamaCppInstrumentor().is_instrumented_by_opentelemetry
    finally:
        os.environ.clear()
        os.environ.update(environ)
        ours.handlers[:] = handlers
        ours.setLevel(level)
        if LlamaCppInstrumentor().is_instrumented_by_opentelemetry:
            LlamaCppInstrumentor().uninstrument()
    assert not left_instrumented, "the page left every LlamaCppClient instrumented"


def substitute(
    code: str,
    chat: ServerManager,
    rerank: ServerManager,
    receiver: OTLPReceiver,
    tiny_files: TinyModelFiles,
    real: ServerManager | None = None,
    places: dict[str, str] | None = None,
) -> str:
    assert chat.options is not None
    if real is not None:
        code = code.replace(REAL_URL, real.url)
    for placeholder, value in (places or {}).items():
        code = code.replace(placeholder, value)
    code = (
        code.replace(CHAT_URL, chat.url)
        .replace(RERANK_URL, rerank.url)
        .replace(OTLP_URL, receiver.url)
        .replace(MODEL, str(tiny_files.model.path))
        .replace(ADAPTER, str(chat.options.lora[0]))
    )
    for line in code.splitlines():
        code_part = line.split("#", 1)[0]
        assert not re.search(r"\b(8080|8081|8082|4318)\b", code_part), (
            f"a port outside the documented placeholder URLs: {line!r}"
        )
    return code


def run_page(
    name: str,
    chat: ServerManager,
    rerank: ServerManager,
    tiny_files: TinyModelFiles,
    real: ServerManager | None = None,
    places: dict[str, str] | None = None,
) -> Page:
    scope: dict[str, Any] = {"__name__": f"docs_{Path(name).stem.replace('-', '_')}"}
    out = io.StringIO()
    receiver = OTLPReceiver()
    try:
        with isolated_process_state():
            os.environ["LLAMA_BASE_URL"] = chat.url
            for var in [v for v in os.environ if v.startswith("OTEL_") or v == "LLAMA_API_KEY"]:
                del os.environ[var]
            with contextlib.redirect_stdout(out):
                for block in python_blocks(page_text(name)):
                    code = substitute(block.code, chat, rerank, receiver, tiny_files, real, places)
                    # Line numbers in tracebacks are the page's own.
                    code = "\n" * block.line + code
                    exec(compile(code, str(DOCS / name), "exec"), scope)
    except BaseException:
        print(out.getvalue())  # shown by pytest on failure
        raise
    finally:
        for value in list(scope.values()):  # never leave a page's server running
            if isinstance(value, (ServerManager, InferenceEngine)):
                value.stop() if isinstance(value, ServerManager) else value.close()
        receiver.close()
    return Page(name, out.getvalue(), scope, receiver, chat, rerank)


# --- what each page must show ---------------------------------------------------------------


def lines_of(page: Page) -> list[str]:
    return page.out.splitlines()


def check_index(page: Page) -> None:
    lines = lines_of(page)
    assert re.fullmatch(r"\d+ prompt tokens, 32 generated", lines[-1])


def check_getting_started(page: Page) -> None:
    out = page.out
    assert re.search(
        r"llama-server ready at http://127\.0\.0\.1:\d+ "
        r"\((embedded|binary) backend\)",
        out,
    )
    assert "finish_reason=length, usage:" in out
    assert "embedding dimensions: 64" in out
    assert "{'status': 'ok'}" in out
    # the console exporter printed the span as JSON
    assert '"name": "chat"' in out and '"gen_ai.usage.output_tokens": 8' in out
    assert "gen_ai.client.operation.duration" in out


def check_api_client(page: Page) -> None:
    out, lines = page.out, lines_of(page)
    assert f"LlamaCppClient(base_url='{page.chat.url}')" in lines
    assert f"{page.chat.url} 2 5.0" in lines
    assert "Tokens used: 128" in lines  # the tiny model always runs to max_tokens
    assert "finish_reason: length" in lines
    assert re.search(r"^prompt: \d+ tokens, \d+ of them from the cache$", out, re.M)
    assert re.search(r"^generation: 128 tokens at \d+ tokens/s$", out, re.M)
    assert (
        "['choices', 'created', 'id', 'model', 'object', 'system_fingerprint', 'timings', 'usage']"
    ) in lines
    assert re.search(r"^last chunk: choices=\[\], usage=64 tokens, \d+ tokens/s$", out, re.M)
    assert "stream closed: True" in lines
    assert "first chunk role: assistant, closed early: True" in lines
    assert re.search(r"^constrained answer: (yes|no)$", out, re.M)
    assert "TypeError: unexpected keyword argument 'max_token': did you mean 'max_tokens'?" in lines
    assert "ValueError: temperature must be >= 0.0, got -1" in lines
    assert "deterministic: True" in lines
    assert re.search(r"^usage: \d+ prompt \+ 16 generated$", out, re.M)
    assert "tokens_predicted=16, finish_reason=length" in lines
    assert re.search(r"^streamed \d+ characters$", out, re.M)
    assert "infill: 16 tokens, finish_reason=length" in lines
    assert "Embedding dimension: 64" in lines
    assert [f"Index {i}: 64 dimensions" for i in range(3)] == [
        line for line in lines if line.startswith("Index ")
    ]
    assert "2 vectors of 64 dimensions" in lines
    assert "Token count: 8" in lines
    assert "Token IDs: [1, 292, 326, 389, 884, 356, 273, 357]" in lines
    assert "     1  '<s>'" in lines and "[292, 326, 389, 884]" in lines
    assert lines[lines.index("<|im_start|>system") + 1] == "You are concise.<|im_end|>"
    scores = [line for line in lines if line.startswith("Score: ")]
    assert len(scores) == 4
    values = [float(s.split()[1]) for s in scores]
    assert values == sorted(values, reverse=True)
    assert (
        "[['document', 'index', 'relevance_score', 'score'], "
        "['document', 'index', 'relevance_score', 'score']]" in lines
    )
    model_path = str(page.chat.options.model_path)  # type: ignore[union-attr]
    assert f"Model: {model_path}" in lines and f"Loaded model: {model_path}" in lines
    assert "Embedding size: 64, trained context: 2048" in lines
    assert "Slots: 4, context per slot: 512" in lines
    assert [f"Slot {i}: state=idle" for i in range(4)] == [
        line for line in lines if line.startswith("Slot ") and "state=" in line
    ]
    assert re.search(r"^saved (\d+) tokens\nrestored \1 tokens\nerased \1 tokens$", out, re.M)
    assert "Active adapters: [(0, 1.0)]" in lines
    assert "After apply: [(0, 0.5)]" in lines
    assert "After set_scales: [(0, 1.0)]" in lines
    assert lines.count("Status: ok") == 1 and "Ready: {'status': 'ok'}" in lines
    assert any(line.startswith("# HELP llamacpp:") for line in lines)
    assert re.search(r"^prompt tokens processed: \d+$", out, re.M)
    assert re.search(r"^\d+ samples, e\.g\. llamacpp:", out, re.M)
    for question in ("What is a slot?", "What is a KV cache?", "What is GGUF?"):
        assert f"{question} -> 16 tokens" in lines
    chunks = re.search(r"^async stream: (\d+) chunks$", out, re.M)
    assert chunks and 3 < int(chunks[1]) <= 19  # role chunk, up to 16 tokens, finish, usage
    assert "async embedding: 64 dimensions" in lines
    assert "async tokens: [1, 292, 326, 389, 884]" in lines
    assert "instrumented: 64 tokens" in lines and "instrumented tokenize: 11 tokens" in lines
    assert "NotSupportedError: status=501 type=not_supported_error" in lines
    assert "  message: This server does not support reranking. Start it with `--reranking`" in lines
    assert "BadRequestError: 400" in lines
    assert "APIConnectionError: is a requests.ConnectionError: True" in lines
    assert re.search(
        r"^DEBUG llamatelemetry: retrying POST /tokenize in [\d.]+s \(1 left\) after: ", out, re.M
    )
    assert "gave up after 1 retry" in lines
    assert "connect 2.0s, read 120.0s" in lines
    assert "APITimeoutError: is a requests.Timeout: True" in lines
    assert "Server status: ok" in lines and "Embedding dims: 64" in lines
    assert lines[-1] == "Active slots: 4"
    assert "Unexpected error" not in out and "Server not running" not in out


def check_telemetry(page: Page) -> None:
    lines = lines_of(page)
    for line in (
        "chat: 32 tokens",
        "rerank failed: 501",
        "instrumented plain client: 2 vectors",
        "gen_ai_client_token_usage_count by gen_ai_token_type=input",
        "gen_ai_client_token_usage_count by gen_ai_token_type=output",
        "2 requests sent traceparent, all in the trace of 'answer-question': True",
        "async: 3 replies",
        "server scraped 1 time(s)",
        "event gen_ai.client.inference.operation.details: user message, 4 output tokens",
        "woke a sleeping server: 2 tokens",
    ):
        assert line in lines, line
    spans = page.receiver.spans()
    assert {s["resource"]["service.name"] for s in spans} == {"my-app"}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert sorted(by_name) == [
        "answer-question",
        "chat",
        "chat tiny",  # the openai SDK's call, instrumented
        "embeddings tiny",
        "fan-out",
        "props",
        "rerank",
        "text_completion",
        "tokenize",
    ]
    # The cold starts section: the call that woke the server says so.
    woken = [
        (s["attributes"].get("llama_cpp.model.state"), s["attributes"].get("llama_cpp.cold_start"))
        for s in by_name["text_completion"]
    ]
    assert woken == [("loaded", None), ("sleeping", True)]
    chats = by_name["chat"]
    assert (
        len(chats) == 1 + 2 + 1 + 1 + 3 + 1 + 1
    )  # setup, two streams, instrument(), traced, fan-out, content, event
    assert all(s["kind"] == 3 for s in spans if s["scope"] == "llamatelemetry")  # CLIENT
    first = chats[0]["attributes"]
    assert first["gen_ai.request.temperature"] == 0.2 and first["gen_ai.usage.output_tokens"] == 32
    closed_early = [s["attributes"].get("llama_cpp.stream.closed_early") for s in chats[1:3]]
    assert closed_early == [None, True]
    assert "gen_ai.response.time_to_first_chunk" in chats[1]["attributes"]
    (rerank,) = by_name["rerank"]
    assert rerank["status"] == 2 and rerank["attributes"]["error.type"] == "NotSupportedError"
    (parent,) = by_name["answer-question"]
    children = [s for s in spans if s["parent_span_id"] == parent["span_id"]]
    assert sorted(s["name"] for s in children) == ["chat", "tokenize"]
    assert {s["trace_id"] for s in children} == {parent["trace_id"]}
    (fan_out,) = by_name["fan-out"]
    assert len([s for s in chats if s["parent_span_id"] == fan_out["span_id"]]) == 3
    captured = [s for s in chats if "gen_ai.input.messages" in s["attributes"]]
    assert len(captured) == 1
    assert json.loads(captured[0]["attributes"]["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Remember this prompt."}]}
    ]
    assert json.loads(captured[0]["attributes"]["gen_ai.output.messages"])[0]["role"] == "assistant"
    metrics = page.receiver.metrics()
    # No drafting server and no router on the page: the rest is all there.
    beyond_the_page = {"llama_cpp.speculative.acceptance_rate", "llama_cpp.server.model.loaded"}
    assert set(GENAI_METRICS) | set(SERVER_METRICS) <= set(metrics) | beyond_the_page
    slots = metrics["llama_cpp.server.slots.total"][0]
    assert slots["value"] == 4 and slots["attributes"]["server.port"] == page.chat.port


def check_server(page: Page) -> None:
    out, lines = page.out, lines_of(page)
    assert re.fullmatch(r"running=True backend=(embedded|binary) pid is set: True", lines[0])
    assert re.fullmatch(r"log file: llama-server-\d+\.log", lines[1])
    for line in (
        "health: {'status': 'ok'}",
        "restarted on the same port: True, running=True",
        "after stop: running=False",
        "rerank served, best document index: True",
        "stopped on exit: True",
        "without the key: 401",
        "with the key: 5 tokens",
        "repr hides the key: True",
        "ServerStartError: model file 'notes.gguf' is not a GGUF file (starts with "
        "b'thes', expected b'GGUF')",
        "FileNotFoundError: model file not found: /no/such/model.gguf",
        "ServerStartError: port PORT on 127.0.0.1 already accepts connections; refusing "
        "to start a second server there (stop the other one, or pass port=0 for a free "
        "port)",
        "before start: embedded",
        "llama-server -m MODEL --host 127.0.0.1 --port 8090 -c 2048 -np 4 -ngl 0 "
        "--embedding --pooling mean --metrics --slots --alias my-model",
        "batch: [8, 8, 8, 8]",
        "chat: 8 tokens, raw is a ChatCompletion",
        "embed: 64 dimensions",
        "stats: 8 requests, 7 generations, 1 embed, 72 tokens generated",
        "['InferenceResult', 'BadRequestError']",
        "BatchInferenceError: [0] succeeded, [1] failed",
        "closed: True",
        "model: tiny-model.gguf, adapter: tiny-lora.gguf",
        "same seed, same text: True",
        "drafted True, accepted 100%",
        "{'llama_cpp.server.backend': 'embedded', 'llama_cpp.server.gpu_layers': 0, "
        "'llama_cpp.server.flash_attn': 'off'}",
        "{'model-a': 'unloaded', 'model-b': 'unloaded'}",
        "load: loaded",
        "answered by model-a, slots: 2",
        "model-a: unloaded, model-b: loaded",
        "unload: unloaded",
    ):
        assert line in lines, line
    assert "16 tokens, finish_reason=length, streamed=False" in lines
    assert re.search(
        r"^latency [\d.]+ ms, ttft [\d.]+ ms, tpot [\d.]+ ms, \d+ tokens/s$", out, re.M
    )
    assert re.search(
        r"^stream: 16 pieces, streamed=True, client-measured ttft [\d.]+ ms$", out, re.M
    )
    # the pytest fixtures of the last block were defined (pytest runs them, not the page)
    assert callable(page.scope["test_my_summarizer"])


def check_deployment(page: Page) -> None:
    lines = lines_of(page)
    assert lines[0] == f"8 tokens from {page.chat.url}"
    match = re.fullmatch(r"2 servers watched, (\d+) scrapes, 0 failed", lines[1])
    assert match, lines[1]
    points = page.receiver.metrics()["llama_cpp.server.slots.total"]
    reported = {p["attributes"]["server.port"]: p["value"] for p in points}
    assert reported == {page.chat.port: 4, page.rerank.port: 1} and match[1] == "2"


def check_beyond_chat(page: Page) -> None:
    lines = lines_of(page)
    assert "parsed: City(city='Paris', country='FRANCE')" in lines
    cut = [line for line in lines if line.startswith("cut: ")]
    assert cut and cut[0].startswith("cut: finish_reason=length, kept '{")
    assert any(line.startswith("final: stop, ") for line in lines)
    [counted] = [line for line in lines if line.startswith("counted ")]
    first, second = re.findall(r"\d+", counted)
    assert first == second
    assert any(line.startswith("responses: The capital of France is Paris.") for line in lines)
    assert "events: response.created ... response.completed" in lines
    assert "messages: The capital of France is Paris. (stop_reason=end_turn)" in lines
    [prompt] = [line for line in lines if line.startswith("prompt tokens: ")]
    first, second = re.findall(r"\d+", prompt)
    assert first == second


def check_benchmarks(page: Page) -> None:
    lines = lines_of(page)
    assert "measured: 4 tokens" in lines
    runs = [line for line in lines if line.startswith("concurrency ")]
    assert len(runs) == 2  # every request of each level completed, well within the SLO
    for level, line in zip((1, 2), runs, strict=True):
        assert re.fullmatch(
            rf"concurrency {level}: 4/4 completed, TTFT median \d+\.\d ms, 100% met the SLO",
            line,
        )
    assert "8 of 8 requests completed" in lines
    assert "refused: duration is for open-loop runs: add rates" in lines


def check_openai_sdk_and_frameworks(page: Page) -> None:
    lines = lines_of(page)
    for line in (
        "openai SDK: 8 tokens",
        "LangChain: True and True",
        "LiteLLM: 8 tokens",
        "llama-index: True",
        "done",
    ):
        assert line in lines, line
    assert re.search(r"^openai SDK stream: \d+ chunks$", page.out, re.M)
    spans = [s for s in page.receiver.spans() if s["name"] == "chat tiny"]
    # the SDK's call and stream, LangChain's invoke and stream, LiteLLM's, llama-index's
    assert len(spans) == 6
    for span in spans:
        attributes = span["attributes"]
        assert attributes["gen_ai.provider.name"] == "llama.cpp"
        assert attributes["llama_cpp.timings.predicted_n"] > 0
        assert "llama_cpp.timings.prompt_ms" in attributes
    assert {s["resource"]["service.name"] for s in page.receiver.spans()} == {"my-app"}


#: Pages whose examples use LangChain, LiteLLM and llama-index.
FRAMEWORK_PAGES = {"openai-sdk-and-frameworks.md"}

PAGE_CHECKS: dict[str, Callable[[Page], None]] = {
    "openai-sdk-and-frameworks.md": check_openai_sdk_and_frameworks,
    "benchmarks.md": check_benchmarks,
    "beyond-chat.md": check_beyond_chat,
    "deployment.md": check_deployment,
    "telemetry.md": check_telemetry,
    "server.md": check_server,
    "index.md": check_index,
    "getting-started.md": check_getting_started,
    "api-client.md": check_api_client,
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.filterwarnings("ignore::ResourceWarning"))
        if name in FRAMEWORK_PAGES  # see forget_page
        else name
        for name in RUNNABLE
    ],
)
def test_page_examples_run(
    name: str,
    chat_server: ServerManager,
    rerank_server: ServerManager,
    tiny_files: TinyModelFiles,
    request: pytest.FixtureRequest,
) -> None:
    assert name in PAGE_CHECKS, f"{name} has Python examples but no check of what they print"
    text = page_text(name)
    real = request.getfixturevalue("real_server") if REAL_URL in text else None
    places = {}
    if LLAMA_SERVER in text:
        places[LLAMA_SERVER] = str(request.getfixturevalue("llama_server_binary"))
    if MODELS in text:
        folder = request.getfixturevalue("tmp_path") / "models"
        folder.mkdir()
        for name_ in ("model-a", "model-b"):
            (folder / f"{name_}.gguf").symlink_to(tiny_files.model.path)
        places[MODELS] = str(folder)
    page = run_page(name, chat_server, rerank_server, tiny_files, real, places)
    try:
        assert page.out.strip(), f"{name}: the examples printed nothing"
        PAGE_CHECKS[name](page)
    finally:
        forget_page(page)


def forget_page(page: Page) -> None:
    """Drop what a page's examples made, here and now: a framework page's clients are
    collected here (see tests.frameworks), their ResourceWarnings silenced there and while
    the page runs (FRAMEWORK_PAGES)."""
    page.scope.clear()
    forget_leftovers()


def test_api_client_table_shows_the_arguments_the_calls_take() -> None:
    from tests.test_readme import call_table_mismatches

    assert call_table_mismatches(page_text("api-client.md")) == []


# --- the telemetry reference tables are what the code emits --------------------------------


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells (header first, the separator row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table(text: str, *header: str) -> list[list[str]]:
    """The body of the one table whose header starts with ``header``, backticks removed."""
    matches = [
        t for t in tables(text) if tuple(c.replace("`", "") for c in t[0][: len(header)]) == header
    ]
    assert len(matches) == 1, f"expected one table headed {header}, found {len(matches)}"
    return [[cell.replace("`", "") for cell in row] for row in matches[0][1:]]


@dataclass
class Emitted:
    spans: list[Any]
    metrics: dict[str, tuple[str, str]]  # name -> (kind, unit)
    exposition: str


@pytest.fixture(scope="module")
def emitted(
    chat_server: ServerManager,
    rerank_server: ServerManager,
    tiny_files: TinyModelFiles,
    llama_server_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Emitted]:
    """Every operation and every kind of outcome, through one SDK pipeline: an in-memory
    span exporter and metric reader, and a Prometheus scrape endpoint. Besides the session's
    servers: one drafting tokens for itself, one that sleeps when idle, and a router."""
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llamatelemetry.api import NotSupportedError, ToolsIgnoredWarning
    from llamatelemetry.telemetry import (
        InstrumentedLlamaCppClient,
        LlamaServerMetrics,
        setup_telemetry,
    )

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    handle = setup_telemetry(
        "reference",
        prometheus_port=0,
        set_global=False,
        server_processes=True,
        span_exporters=[spans],
        metric_readers=[reader],
    )
    providers = {"tracer_provider": handle.tracer_provider, "meter_provider": handle.meter_provider}
    assert chat_server.options is not None
    adapter = str(chat_server.options.lora[0])
    servers = contextlib.ExitStack()
    extra = reference_servers(servers, tiny_files, llama_server_binary, tmp_path_factory)
    with (
        InstrumentedLlamaCppClient(chat_server.url, capture_content=True, **providers) as client,
        InstrumentedLlamaCppClient(rerank_server.url, **providers) as reranker,
    ):
        messages = [{"role": "user", "content": "Hi"}]
        client.chat.completions.create(messages=messages, max_tokens=4, model="tiny", stop=["\n"])
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        # instructions apart from the history: a field of the Responses and Messages APIs
        with pytest.warns(ToolsIgnoredWarning):  # the tiny model's template has no tools
            client.chat_completion(
                messages=messages,
                max_tokens=2,
                tools=[tool],
                extra_body={"instructions": "Be brief."},
            )
        client.chat_completion(messages=messages, max_tokens=4, stream=True).until_done()
        early = client.chat.completions.create(messages=messages, max_tokens=8, stream=True)
        next(early)
        early.close()
        client.completions.create(prompt="Once", max_tokens=4)
        client.chat.completions.count_tokens(messages)
        client.responses.create("Once", max_output_tokens=2)
        client.messages.create(messages, 2, stream=True).get_final_completion()
        client.complete("Once", max_tokens=4)
        client.complete("Once", max_tokens=4, stream=True).until_done()
        client.infill("def f():", "\n", max_tokens=4)
        client.embed("text")
        client.embeddings.create(input=["a", "b"])
        reranker.rerank("query", ["a", "b"])
        client.detokenize(client.tokenize("Hello"))
        client.apply_template(messages)
        client.models.list()
        client.props.get()
        client.slots.list()
        client.slots.save(1, "reference.bin")
        client.slots.restore(1, "reference.bin")
        client.slots.erase(1)
        client.lora.apply(adapter, 1.0)
        client.health.check()
        client.metrics.get()
        with pytest.raises(NotSupportedError):
            client.rerank("query", ["a"])
        bridges = [
            LlamaServerMetrics(c, meter_provider=handle.meter_provider) for c in (client, reranker)
        ]
        bridges += exercise_reference_servers(extra, providers)
        exposition = httpx.get(handle.prometheus_url).text  # type: ignore[arg-type]
        data = reader.get_metrics_data()
    handle.force_flush()

    def kind(data: Any) -> str:
        if isinstance(data, Sum) and not data.is_monotonic:
            return "updowncounter"
        return {Histogram: "histogram", Sum: "counter", Gauge: "gauge"}[type(data)]

    metrics = {
        metric.name: (kind(metric.data), metric.unit)
        for resource in data.resource_metrics  # type: ignore[union-attr]
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    # the GPU instruments, from the stand-in driver (no GPU here): its series merged in
    from .gpu import build_fake_nvml, run_python

    driver = build_fake_nvml(tmp_path_factory.mktemp("nvidia"))
    (gpu_metrics, gpu_exposition), _ = run_python(GPU_SCRIPT, driver, FAKE_NVML_DEVICES="2")
    metrics.update({name: (kind, unit) for name, (kind, unit) in gpu_metrics.items()})
    gpu_series = [line for line in gpu_exposition.splitlines() if line.startswith("hw_")]
    exposition += "\n".join(gpu_series) + "\n"
    yield Emitted(list(spans.get_finished_spans()), metrics, exposition)
    for bridge in bridges:
        bridge.close()
    servers.close()
    handle.shutdown()


def reference_servers(
    stack: contextlib.ExitStack,
    tiny_files: TinyModelFiles,
    binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, ServerManager]:
    model = tiny_files.model.path
    folder = tmp_path_factory.mktemp("reference-models")
    (folder / "tiny.gguf").symlink_to(model)
    drafted = stack.enter_context(ServerManager(port=0, backend="embedded"))
    drafted.start(model, draft_model=model, n_threads=1)
    sleepy = stack.enter_context(ServerManager(port=0, backend="embedded"))
    sleepy.start(model, sleep_idle_seconds=1, n_threads=1)
    router = stack.enter_context(
        ServerManager(port=0, backend="binary", server_path=binary, models_dir=folder)
    )
    router.start(n_threads=1)
    return {"drafted": drafted, "sleepy": sleepy, "router": router}


def exercise_reference_servers(
    servers: dict[str, ServerManager], providers: dict[str, Any]
) -> list[Any]:
    """Speculative decoding, a wake from idle sleep, a router's load and unload; the
    bridges of the drafting server and of the router."""
    from llamatelemetry.telemetry import InstrumentedLlamaCppClient, LlamaServerMetrics

    clients = {
        name: InstrumentedLlamaCppClient(server.url, **providers)
        for name, server in servers.items()
    }
    messages = [{"role": "user", "content": "Hi"}]
    clients["drafted"].chat.completions.create(messages=messages, max_tokens=8, temperature=0)
    sleepy = clients["sleepy"]
    sleepy.completions.create("Once", max_tokens=2)
    deadline = time.monotonic() + 10
    while not sleepy.props.is_sleeping() and time.monotonic() < deadline:
        time.sleep(0.1)
    sleepy.completions.create("Once", max_tokens=2)
    router = clients["router"]
    router.models.load("tiny")
    router.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    bridges = [
        LlamaServerMetrics(clients[name], meter_provider=providers["meter_provider"])
        for name in ("drafted", "router")
    ]
    providers["meter_provider"].force_flush()  # the bridges' scrape, the model in memory
    router.models.unload("tiny")
    return bridges


def test_span_attribute_table_is_exactly_what_spans_carry(emitted: Emitted) -> None:
    documented = [row[0] for row in table(page_text("telemetry.md"), "Attribute")]
    assert len(documented) == len(set(documented))
    carried = {key for span in emitted.spans for key in span.attributes}
    assert set(documented) == carried
    types = {
        "string": str,
        "int": int,
        "double": float,
        "boolean": bool,
        "string[]": tuple,
        "string (JSON)": str,
    }
    for name, kind in ((row[0], row[1]) for row in table(page_text("telemetry.md"), "Attribute")):
        expected = types[kind.replace(" (s)", "").replace(" (ms)", "")]
        for span in emitted.spans:
            if name in span.attributes:
                value = span.attributes[name]
                assert isinstance(value, expected) and not (
                    expected is int and isinstance(value, bool)
                ), (name, value)


def test_operation_table_is_every_operation(emitted: Emitted) -> None:
    documented = {
        row[0] for row in table(page_text("telemetry.md"), "Operation (gen_ai.operation.name)")
    }
    assert documented == {span.attributes["gen_ai.operation.name"] for span in emitted.spans}
    from opentelemetry.trace import SpanKind

    assert {span.kind for span in emitted.spans} == {SpanKind.CLIENT}
    assert {span.name for span in emitted.spans if span.attributes.get("gen_ai.request.model")} == {
        "chat tiny",
        "load_model tiny",
        "unload_model tiny",
    }


def test_metric_tables_are_exactly_what_is_recorded(emitted: Emitted) -> None:
    documented: dict[str, tuple[str, str]] = {}
    for rows in (
        table(page_text("telemetry.md"), "Metric", "Kind", "Unit", "Description"),
        table(page_text("telemetry.md"), "Metric", "Kind", "Unit", "From llama-server"),
        table(page_text("telemetry.md"), "Metric", "Kind", "Unit", "From /proc"),
        table(page_text("telemetry.md"), "Metric", "Kind", "Unit", "From NVML"),
    ):
        for row in rows:
            documented[row[0]] = (row[1], row[2])
    assert documented == emitted.metrics
    assert set(documented) == ALL_METRICS


def prometheus_families(exposition: str) -> dict[str, set[str]]:
    """Series name (buckets, sums, counts folded into their family) -> label names."""
    families: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)  # type: ignore[union-attr]
        labels = (
            set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line.split("{", 1)[1]))
            if "{" in line
            else set()
        )
        families.setdefault(name, set()).update(labels)
    return families


def test_prometheus_table_is_what_the_exporter_serves(emitted: Emitted) -> None:
    rows = table(page_text("telemetry.md"), "Metric", "Prometheus name")
    assert {row[0] for row in rows} == ALL_METRICS
    served = set(prometheus_families(emitted.exposition))
    for metric, name in rows:
        kind = emitted.metrics[metric][0]
        expected = (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        )
        assert expected <= served, (metric, name)


# --- the CLI page shows what the commands print --------------------------------------------


@dataclass
class Shown:
    args: list[str]
    output: list[str]
    line: int


def shown_commands() -> list[Shown]:
    import shlex

    found = []
    for block in blocks(page_text("cli.md")):
        if block.lang != "console":
            continue
        lines = block.code.splitlines()
        assert lines[0].startswith("$ llamatelemetry"), lines[0]
        assert sum(line.startswith("$ ") for line in lines) == 1, "one command per block"
        found.append(Shown(shlex.split(lines[0][2:])[1:], lines[1:], block.line))
    return found


def shape(line: str) -> str:
    """A line with what legitimately changes from run to run (numbers, paths, URLs, quoted
    model text, column widths, bar lengths) replaced by placeholders."""
    line = re.sub(r"https?://\S+", "<url>", line).replace(" --url <url>", "")  # port-dependent
    line = re.sub(
        r'"(?:[^"\\]|\\.)*"',  # quoted text, but not JSON keys
        lambda m: m[0] if re.match(r"\s*:", m.string[m.end() :]) else "<q>",
        line,
    )
    line = re.sub(r"'[^']*'", "<q>", line)
    line = re.sub(r"(?<![\w<])/[\w.\-/]+", "<path>", line)
    line = re.sub(r"[+-]?\d[\d,]*(\.\d+)?( ?[kMG]B?\b)?", "<n>", line)
    line = re.sub(r"([─━])\1+", r"\1", line)
    return " ".join(line.split())


def is_model_text(args: list[str], line: str) -> bool:
    """Generated text (random weights: it changes with the server's sampling state)."""
    if args[0] in ("chat", "complete") and "--json" not in args:
        return not line.startswith("[")
    return line.strip().startswith("streaming ▸")


PAGE_COLUMNS = "100"  # the terminal width the page's output was made at
SCRIPT = Path(sys.executable).parent / "llamatelemetry"


def cli_env(url: str, columns: str = "200") -> dict[str, str]:
    # Tables: wide enough that the long paths of test servers never wrap a cell.
    return {"LLAMA_BASE_URL": url, "COLUMNS": columns, "NO_COLOR": "1", "LLAMA_API_KEY": ""}


def run_serve(args: list[str], tiny_files: TinyModelFiles) -> list[str]:
    """``serve`` (or ``exporter``) runs until Ctrl-C: start it on a free port, wait for
    it, interrupt it."""
    command = [
        *INTERRUPTIBLE,
        sys.executable,
        "-c",
        "from llamatelemetry.cli import main; main()",
        *args,
        "--port",
        "0",
    ]
    command = [str(tiny_files.model.path) if a == MODEL else a for a in command]
    env = {**os.environ, **cli_env(CHAT_URL)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):  # at once: the command is ready for it
                process.send_signal(signal.SIGINT)
                lines.append("^C")
        assert process.wait(timeout=30) == 0, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    return lines


def test_cli_page_shows_every_command() -> None:
    from llamatelemetry.cli import main

    shown = {s.args[0] for s in shown_commands()}
    assert shown == set(main.commands) | {"--help"}, "a command without real output on cli.md"


def test_cli_page_output_has_the_shape_the_commands_print(
    chat_server: ServerManager, rerank_server: ServerManager, tiny_files: TinyModelFiles
) -> None:
    from llamatelemetry.cli import main

    for shown in shown_commands():
        args = [rerank_server.url if a == RERANK_URL else a for a in shown.args]
        if args[0] in ("serve", "exporter"):  # both run until Ctrl-C
            actual = run_serve(args, tiny_files)
            failed = False
        elif args == ["--help"]:
            # Help is wrapped, and cut with "...", to the terminal's width: the page's.
            done = subprocess.run(
                [str(SCRIPT), "--help"],
                capture_output=True,
                text=True,
                env={**os.environ, **cli_env(chat_server.url, PAGE_COLUMNS)},
            )
            actual, failed = done.stdout.splitlines(), done.returncode != 0
        else:
            result = CliRunner().invoke(
                main, args, env=cli_env(chat_server.url), prog_name="llamatelemetry"
            )
            actual = result.output.splitlines()
            failed = result.exit_code != 0
            assert "Traceback" not in result.output, result.output
        expected_failure = any(line.startswith("Error: ") for line in shown.output)
        assert failed == expected_failure, (shown.args, actual)
        actual_shapes = {shape(line) for line in actual}
        missing = [
            line
            for line in shown.output
            if line.strip()
            and not is_model_text(shown.args, line)
            and shape(line) not in actual_shapes
        ]
        assert not missing, (
            f"cli.md line {shown.line}: `llamatelemetry {' '.join(shown.args)}` "
            f"no longer prints these lines:\n"
            + "\n".join(missing)
            + "\n--- it printed:\n"
            + "\n".join(actual)
        )


# --- the site itself --------------------------------------------------------------------------


def test_every_fence_is_python_or_plainly_not_code() -> None:
    """A ```py or ```pycon block would silently escape execution."""
    for name in PAGES:
        for block in blocks(page_text(name)):
            assert block.lang in FENCES, f"{name}:{block.line}: fence language {block.lang!r}"
            assert not block.code.lstrip().startswith((">>>", "$ python")), f"{name}:{block.line}"


def test_included_code_is_a_tested_example_or_a_real_file() -> None:
    from tests.test_examples import SCRIPTS

    included = []
    for name in PAGES:
        for block in blocks(page_text(name)):
            match = SNIPPET.match(block.code.strip())
            if match:
                path = ROOT / match["path"]
                assert path.is_file(), f"{name}:{block.line}: {match['path']} does not exist"
                if block.lang == "python":
                    assert path.parent.name == "examples" and path.name in SCRIPTS, (
                        f"{name}:{block.line}: included Python that no test runs"
                    )
                    included.append(path.name)
    assert sorted(included) == sorted(SCRIPTS), "every example is shown on examples.md"


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    assert sorted(pages(config["nav"])) == PAGES


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("LlamaCppClient.tokenize", "ChatCompletions.create", "Health.wait_until_ready"):
        assert f'id="llamatelemetry.api.{name}"' in api or name.split(".")[1] in api, name
    telemetry = (tmp_path / "site" / "reference" / "telemetry" / "index.html").read_text()
    assert "setup_telemetry" in telemetry and "chat_completions" in telemetry


# --- deploy/: the Collector, Prometheus and Grafana configuration ------------------------------

DEPLOY = ROOT / "deploy"


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    variable = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr.strip())
    if variable:  # a Grafana template variable's query
        return {variable[1]}, {variable[2]}
    labels = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
    label_names = {name.strip() for group in labels for name in group.split(",") if name.strip()}
    for selector in re.findall(r"\{([^}]*)\}", expr):
        label_names |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)|\"[^\"]*\"", " ", expr)
    functions = {
        "sum",
        "rate",
        "max",
        "min",
        "avg",
        "histogram_quantile",
        "irate",
        "increase",
        "label_values",
        "by",
        "without",
    }
    metrics = {
        name
        for name in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", bare)
        if name not in functions and not re.fullmatch(r"\d+|le|job", name)
    }
    return metrics, label_names


def selector_labels(expr: str, metric: str, labels: set[str]) -> set[str]:
    """The labels of ``labels`` that ``metric`` must have in ``expr``: those of its own
    selectors (``metric{...}``), and any grouping's when the expression has one metric
    only; in an expression of several metrics, a label named in another's selector is
    that one's."""
    own: set[str] = set()
    for selector in re.findall(rf"\b{re.escape(metric)}\{{([^}}]*)\}}", expr):
        own |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    others = set()
    for name, selector in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        if name != metric:
            others |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    return own | (labels - others)


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    queries += [
        variable["definition"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def test_dashboard_queries_only_metrics_and_labels_we_export(emitted: Emitted) -> None:
    families = prometheus_families(emitted.exposition)
    queried: set[str] = set()
    for expr in dashboard_queries():
        metrics, labels = promql_names(expr)
        assert metrics, expr
        for metric in metrics:
            assert metric in families, f"{metric} is not exported (query: {expr})"
            # job and instance come from the Collector (service.name, service.instance.id)
            unknown = selector_labels(expr, metric, labels) - families[metric]
            unknown -= {"job", "instance", "le"}
            assert not unknown, f"{metric} has no label {unknown} (query: {expr})"
        queried |= metrics
    # every instrument we export has a panel
    exported = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for name in families
        if name.startswith(
            ("gen_ai_", "llama_cpp_", "hw_", *(m.replace(".", "_") for m in PROCESS_METRICS))
        )
    }
    assert {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried} == exported


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in dashboard_queries():
        assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval"}, expr


def test_collector_config_wires_what_it_defines() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in service["pipelines"].items():
        for kind in used:
            assert set(pipeline[kind]) <= set(config[kind]), (name, kind)
            used[kind] |= set(pipeline[kind])
        assert pipeline["processors"][0] == "memory_limiter"  # first, as the Collector advises
    assert set(service["pipelines"]) == {"traces", "metrics"}
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "prometheus" in service["pipelines"]["metrics"]["exporters"]
    # Prometheus scrapes the Collector where its exporter listens
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    ]
    assert f"otel-collector:{port}" in targets


def test_compose_file_mounts_files_that_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    mounted = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), source
                mounted.add((DEPLOY / source).resolve())
    assert {p.resolve() for p in DEPLOY.rglob("*") if p.is_file()} - mounted == {
        (DEPLOY / "docker-compose.yaml").resolve()
    }
    provisioning = yaml.safe_load((DEPLOY / "grafana" / "dashboards.yaml").read_text())
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    path = provisioning["providers"][0]["options"]["path"]
    assert any(v.split(":")[1].startswith(path + "/") for v in grafana_volumes)
