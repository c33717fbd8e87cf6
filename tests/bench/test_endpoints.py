"""Every endpoint a workload may load, against the real tiny-model servers: each
generating one (chat, completions, Responses, Messages), streamed or not, answers every
request with exactly ``max_tokens`` tokens (the tiny model never stops early), timed on
both sides; embeddings and rerank answer every request, with their latencies and (for
embeddings) the input tokens read; a server started for rerank ranks (its pooling is
set); and what cannot mean anything is refused before anything is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llamatelemetry.api import AsyncLlamaCppClient, LlamaCppClient
from llamatelemetry.api._internal import WireTimes
from llamatelemetry.bench import SyntheticPrompts
from llamatelemetry.bench._endpoints import GENERATING, endpoint_of, request_of, send, send_sync
from llamatelemetry.bench._records import RequestRecord
from llamatelemetry.server import ServerManager
from llamatelemetry.testing import TinyModelFiles

from .test_load import invoke, ok_json

QUICK = ("-n", "3", "-c", "2", "--prompt-tokens", "16", "--scrape-interval", "0",
         "--warmup", "1", "--seed", "1")  # fmt: skip


def only_run(*args: str) -> dict[str, Any]:
    [run] = ok_json(*args)["runs"]
    assert run["completed"] == run["requests"] == 3, run["error_samples"]
    return run


@pytest.mark.parametrize("endpoint", ["chat", "completions", "responses", "messages"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_generating_endpoint_under_load(
    chat_server: ServerManager, endpoint: str, stream: bool
) -> None:
    run = only_run("--url", chat_server.url, "--endpoint", endpoint, "--max-tokens", "5",
                   "--ignore-eos", *QUICK, *(() if stream else ("--no-stream",)))  # fmt: skip
    # llama-server sends no timings with the Messages API, nor with a whole response of
    # the Responses API: no server-side figures for those
    timed = endpoint in ("chat", "completions") or (endpoint == "responses" and stream)
    for request in run["per_request"]:
        assert request["output_tokens"] == 5, request
        assert request["prompt_tokens"]
        assert (request["server_ttft_ms"] is not None) == timed
        assert (request["ttft_ms"] is not None) == stream
    metrics = run["metrics"]
    assert (metrics["itl_ms"]["client"] is not None) == stream
    assert run["output_throughput"] > 0 and run["input_throughput"] > 0


def test_embeddings_under_load(chat_server: ServerManager) -> None:
    run = only_run("--url", chat_server.url, "--endpoint", "embeddings", *QUICK)
    for request in run["per_request"]:
        assert request["ttft_ms"] is None and request["output_tokens"] == 0
        assert request["prompt_tokens"] > 0 and request["e2e_ms"] > 0
    assert run["metrics"]["e2e_ms"]["client"]["count"] == 3
    assert run["input_throughput"] > 0 and run["output_throughput"] == 0


def test_rerank_under_load(rerank_server: ServerManager) -> None:
    run = only_run("--url", rerank_server.url, "--endpoint", "rerank", "--documents", "5",
                   *QUICK)  # fmt: skip
    assert run["metrics"]["e2e_ms"]["client"]["count"] == 3
    assert all(r["prompt_tokens"] > 0 for r in run["per_request"])  # the server's usage
    assert run["input_throughput"] > 0
    human = invoke("--url", rerank_server.url, "--endpoint", "rerank", *QUICK)
    assert human.exit_code == 0 and "rerank" in human.stdout.splitlines()[1]


@pytest.mark.parametrize("endpoint", ["rerank", "embeddings"])
def test_a_server_started_for_an_endpoint_serves_it(
    tiny_files: TinyModelFiles, endpoint: str
) -> None:
    """The rerank server needs ranking pooling, the embeddings one its embeddings: without
    them every request would fail (501 or 404)."""
    run = only_run("--model", str(tiny_files.model.path), "--endpoint", endpoint, *QUICK)
    assert run["errors"] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--endpoint", "embeddings", "--turns", "2"), "--turns is for endpoints that generate"),
        (("--endpoint", "rerank", "--ignore-eos"), "--ignore-eos is for endpoints that generate"),
        (("--endpoint", "embeddings", "--slo", "ttft=1s"), "--slo is for endpoints that generate"),
        (("--documents", "3",), "--documents is for --endpoint rerank"),
        (("--endpoint", "speech",), "'speech' is not one of"),
    ],
)  # fmt: skip
def test_what_an_endpoint_cannot_do_is_refused(args: tuple[str, ...], says: str) -> None:
    result = invoke("--url", "http://127.0.0.1:9", *args)
    assert result.exit_code != 0 and says in " ".join(result.output.split()), result.output


def _read_both(url: str, endpoint: str, stream: bool) -> tuple[RequestRecord, RequestRecord]:
    """One request of ``endpoint``, the same twice: through the async client (the load
    generator's loop, `send`) and through the blocking one (Locust's, `send_sync`)."""
    settings = {"max_tokens": 4, "stream": stream, "temperature": 0.0, "seed": 1,
                "ignore_eos": endpoint in GENERATING, "documents": 3}  # fmt: skip
    request = request_of(SyntheticPrompts(12, seed=3).take(1)[0], (), settings)
    chosen = endpoint_of(endpoint)
    records = RequestRecord(1), RequestRecord(1)

    async def async_one() -> None:
        async with AsyncLlamaCppClient(url, max_retries=0) as client:
            await send(chosen, client, request, records[0], WireTimes(), None)

    asyncio.run(async_one())
    with LlamaCppClient(url, max_retries=0) as client:
        send_sync(chosen, client, request, records[1], WireTimes(), None)
    return records


def _as_read(record: RequestRecord) -> dict[str, Any]:
    return {
        "ok": record.ok, "error": record.error, "output_tokens": record.output_tokens,
        "prompt_tokens": record.prompt_tokens, "chunks": record.chunks,
        "timed": record.ttft is not None, "gaps": len(record.itl), "model": record.model,
        "server_timed": record.server_ttft is not None, "answer_id": bool(record.response_id),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "stream"),
    [(e, s) for e in GENERATING for s in (True, False)] + [("embeddings", False)],
)
def test_the_blocking_loop_reads_an_endpoint_as_the_async_one_does(
    chat_server: ServerManager, endpoint: str, stream: bool
) -> None:
    """Locust's users send with the blocking client: each endpoint's answer, streamed or
    whole, reads into the same record through either."""
    through_async, through_sync = _read_both(chat_server.url, endpoint, stream)
    assert through_async.ok, through_async.error
    assert _as_read(through_sync) == _as_read(through_async)
    if endpoint in GENERATING:
        assert through_sync.output_tokens == 4
        assert (through_sync.ttft is not None) == stream


def test_the_blocking_loop_reads_a_rerank_as_the_async_one_does(
    rerank_server: ServerManager,
) -> None:
    through_async, through_sync = _read_both(rerank_server.url, "rerank", False)
    assert through_async.ok, through_async.error
    assert _as_read(through_sync) == _as_read(through_async)
    assert through_sync.prompt_tokens
