"""The openai SDK's calls, instrumented: the same spans and points as our client's, with
llama.cpp's attributes for a llama-server (learnt from its answers), plain GenAI spans for
any other server, and every stream's span ended exactly once whatever way its reader
leaves. The real SDK against a real llama-server, and a hostile server of our own for
what a real one cannot be made to do."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import LlamaCppInstrumentor
from llamatelemetry.testing._fault_server import FaultServer, Reply, sse

from .test_pipeline import MESSAGES, points

TIMINGS = {"llama_cpp.timings.prompt_ms", "llama_cpp.timings.predicted_n"}


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_chat_call_is_our_span_with_llama_cpps_attributes(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    client = sdk(chat_server.url)
    answers = [
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat tiny", "chat tiny"]
    for span, answer in zip(spans, answers, strict=True):
        found = attrs(span)
        assert found["gen_ai.response.id"] == answer.id
        assert found["gen_ai.usage.output_tokens"] == 3
        assert found["gen_ai.provider.name"] == "llama.cpp"  # the first learnt it at its end
        assert TIMINGS <= set(found)
        assert found["server.port"] == chat_server.port
    durations = points(instrumented)["gen_ai.client.operation.duration"]
    assert {dict(p.attributes)["gen_ai.provider.name"] for p in durations} == {"llama.cpp"}
    assert sum(p.count for p in durations) == 2
    assert sum(p.count for p in points(instrumented)["gen_ai.server.time_to_first_token"]) == 2


def test_the_trace_context_reaches_the_server(
    instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "hi"}}]}  # fmt: skip
    with FaultServer(Reply(200, answer)) as server:
        sdk(server.url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        (seen,) = server.requests
    (span,) = span_exporter.get_finished_spans()
    assert seen.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    # No timings in the answer: another server's, a plain GenAI span.
    assert attrs(span)["gen_ai.provider.name"] == "openai"
    assert not any(key.startswith("llama_cpp.") for key in attrs(span))


def test_a_stream_read_to_its_end(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    stream = sdk(chat_server.url).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=6, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert {type(c) for c in chunks} == {openai.types.chat.ChatCompletionChunk}
    (span,) = span_exporter.get_finished_spans()
    found = attrs(span)
    assert found["gen_ai.request.stream"] is True
    assert found["gen_ai.usage.output_tokens"] == 6
    assert found["gen_ai.response.finish_reasons"] == ("length",)
    assert found["gen_ai.response.time_to_first_chunk"] > 0
    assert TIMINGS <= set(found)
    assert "llama_cpp.stream.closed_early" not in found
    gaps = points(instrumented)["gen_ai.client.operation.time_per_output_chunk"]
    assert sum(p.count for p in gaps) == len(chunks) - 1


@pytest.mark.parametrize("leave", ["with-break", "close", "collected"])
def test_a_stream_left_early_ends_its_span_once(
    chat_server: ServerManager,
    instrumented: Any,
    span_exporter: InMemorySpanExporter,
    leave: str,
) -> None:
    client = sdk(chat_server.url)

    def stream() -> Any:
        return client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=32, stream=True,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    if leave == "with-break":
        with stream() as chunks:
            for _ in chunks:
                break
    elif leave == "close":
        chunks = stream()
        next(chunks)
        chunks.close()
        chunks.close()
    else:
        chunks = stream()
        next(chunks)
        with warnings.catch_warnings():  # the SDK leaves a dropped stream's socket open
            warnings.simplefilter("ignore", ResourceWarning)
            del chunks
            gc.collect()
    client.close()  # the connections a dropped stream left are the client's to close
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["llama_cpp.stream.closed_early"] is True
    assert span.status.status_code is StatusCode.UNSET
    assert sum(p.count for p in points(instrumented)["gen_ai.client.operation.duration"]) == 1


def test_a_stream_cut_by_the_server_is_an_error_span(
    instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    chunk = {
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
    }  # fmt: skip
    with FaultServer(
        Reply(
            200, chunks=sse(chunk, chunk, chunk), drop_after=2, content_type="text/event-stream"
        )  # fmt: skip
    ) as server:
        stream = sdk(server.url).chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        # the SDK's 3.x wraps the cut as its APIError, 2.x lets httpx's error through
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            list(stream)
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"]


def test_async_calls_and_streams(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=chat_server.url + "/v1", api_key="none", max_retries=0)
        await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=4, stream=True,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        assert isinstance(stream, openai.AsyncStream)
        n = len([chunk async for chunk in stream])
        early = await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=32, stream=True,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        await early.__anext__()
        await early.close()
        await client.close()
        return n

    chunks = asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert [attrs(s)["gen_ai.request.stream"] if "gen_ai.request.stream" in attrs(s) else False
            for s in spans] == [False, True, True]  # fmt: skip
    assert attrs(spans[0])["gen_ai.usage.output_tokens"] == 2
    assert "llama_cpp.stream.closed_early" not in attrs(spans[1]) and chunks >= 4
    assert attrs(spans[2])["llama_cpp.stream.closed_early"] is True


def test_completions_embeddings_and_raw_responses(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    client = sdk(chat_server.url)
    client.completions.create(model="tiny", prompt="Once", max_tokens=2)
    client.embeddings.create(model="tiny", input=["a", "b"])
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=2,  # type: ignore[arg-type]
    )
    assert raw.parse().usage is not None
    spans = span_exporter.get_finished_spans()
    assert [attrs(s)["gen_ai.operation.name"] for s in spans] == [
        "text_completion", "embeddings", "chat"
    ]  # fmt: skip
    assert attrs(spans[0])["gen_ai.usage.output_tokens"] == 2
    assert attrs(spans[2])["gen_ai.usage.output_tokens"] == 2  # the raw answer, parsed


def test_uninstrument_restores_the_sdk_and_keeps_a_later_wrapper(
    providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    assert "request" not in openai.OpenAI.__dict__  # inherited from the SDK's base client
    LlamaCppInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    ours = openai.OpenAI.__dict__["request"]
    calls: list[str] = []

    def theirs(client: Any, cast_to: Any, options: Any, **kwargs: Any) -> Any:
        calls.append(options.url)
        return ours(client, cast_to, options, **kwargs)

    openai.OpenAI.request = theirs  # type: ignore[method-assign,assignment]
    try:
        LlamaCppInstrumentor().uninstrument()
        assert openai.OpenAI.__dict__["request"] is theirs  # theirs stays, ours passes through
    finally:
        del openai.OpenAI.request
    LlamaCppInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    LlamaCppInstrumentor().uninstrument()
    assert "request" not in openai.OpenAI.__dict__
    assert "request" not in openai.AsyncOpenAI.__dict__


def test_a_cancelled_task_ends_its_streams_span_once(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=chat_server.url + "/v1", api_key="none", max_retries=0)
        started = asyncio.Event()

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=3000, stream=True,  # type: ignore[arg-type]
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            async with stream:  # the server's slot is freed when the task goes
                async for _ in stream:
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()

    asyncio.run(main())
    gc.collect()
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["error.type"] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR
    assert sum(p.count for p in points(instrumented)["gen_ai.client.operation.duration"]) == 1


def scoped(reader: Any) -> dict[tuple[str, str], int]:
    """(instrumentation scope, metric) -> points counted."""
    found: dict[tuple[str, str], int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (scope.scope.name, metric.name)
                    found[key] = found.get(key, 0) + getattr(point, "count", 1)
    return found


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "openai-v2-first"])
def test_beside_openai_v2_one_span_each_point_once_with_llama_cpps_attributes(
    chat_server: ServerManager,
    providers: Any,
    span_exporter: InMemorySpanExporter,
    ours_first: bool,
) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    tracer_provider, meter_provider, reader = providers
    pipeline = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    order = [LlamaCppInstrumentor(), OpenAIInstrumentor()]
    for instrumentor in order if ours_first else order[::-1]:
        instrumentor.instrument(**pipeline)
    try:
        client = sdk(chat_server.url)
        answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
        chunks = list(
            client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=4, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )
        )  # fmt: skip
    finally:
        for instrumentor in order:
            instrumentor.uninstrument()
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2  # one per call, openai-v2's
    # Its own tracer, or (its newer mode, the one installed here) the GenAI handler's.
    assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} <= {
        "opentelemetry.instrumentation.openai_v2",
        "opentelemetry.util.genai.handler",
    }
    for span in spans:
        assert TIMINGS <= set(attrs(span))  # what only llama.cpp tells, added to theirs
        assert attrs(span)["gen_ai.provider.name"] == "openai"  # theirs, not overwritten
    assert attrs(spans[0])["gen_ai.response.id"] == answer.id
    assert chunks
    counted = scoped(reader)
    assert counted.get(("llamatelemetry", "gen_ai.client.operation.duration")) is None
    assert counted.get(("llamatelemetry", "gen_ai.client.token.usage")) is None
    theirs = sum(
        n for (scope, name), n in counted.items()
        if scope != "llamatelemetry" and name == "gen_ai.client.operation.duration"
    )  # fmt: skip
    assert theirs == 2  # each call counted once, by them
    assert counted[("llamatelemetry", "gen_ai.server.time_to_first_token")] == 2


def test_the_first_stream_to_a_new_server_counts_under_llama_cpp(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    """The server's kind is learnt from its first answer, at the stream's end: the stream's
    first-chunk and between-chunk points wait for it, so none is labelled ``openai``."""
    stream = sdk(chat_server.url).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=4, stream=True,  # type: ignore[arg-type]
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    n = len(list(stream))
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["gen_ai.provider.name"] == "llama.cpp"
    found = points(instrumented)
    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
    ):
        providers = {p.attributes["gen_ai.provider.name"] for p in found[name]}
        assert providers == {"llama.cpp"}, name
    gaps = found["gen_ai.client.operation.time_per_output_chunk"]
    assert sum(p.count for p in gaps) == n - 1
    (first,) = found["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1
    assert first.sum == pytest.approx(attrs(span)["gen_ai.response.time_to_first_chunk"])


def test_the_sdks_helpers_stream_parse_and_raw_streams(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    client = sdk(chat_server.url)
    request: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3}
    stream_body = {**request, "extra_body": {"ignore_eos": True}}
    # The parsing helpers refuse an answer cut at max_tokens: a grammar ends it first.
    stopped = {**request, "extra_body": {"grammar": 'root ::= "a" "b"'}}
    with client.chat.completions.stream(**stopped) as helper:  # the .stream() helper
        text = "".join(e.delta for e in helper if e.type == "content.delta")
        assert helper.get_final_completion().choices[0].message.content == text == "ab"
    parsed = client.chat.completions.parse(**stopped)  # parse (no format)
    assert parsed.choices[0].message.content == "ab"
    raw = client.chat.completions.with_raw_response.create(**stream_body, stream=True)
    assert len(list(raw.parse())) >= 3  # LiteLLM's way: a raw response, parsed later
    with client.chat.completions.with_streaming_response.create(**request) as response:
        assert response.parse().usage is not None
    with client.chat.completions.with_streaming_response.create(
        **stream_body, stream=True
    ) as response:
        assert len(list(response.parse())) >= 3
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 5
    for span in spans:
        found = attrs(span)
        assert found["gen_ai.provider.name"] == "llama.cpp"
        assert found["gen_ai.request.max_tokens"] == 3
        assert span.status.status_code is not StatusCode.ERROR
        assert "llama_cpp.stream.closed_early" not in found
    # the answers each read by the SDK (not the one whose body the caller read) say all
    for span in (spans[0], spans[1], spans[2], spans[4]):
        assert attrs(span)["gen_ai.usage.output_tokens"] in (2, 3), span.name
        assert TIMINGS <= set(attrs(span))
    assert attrs(spans[0])["gen_ai.response.time_to_first_chunk"] > 0
    assert attrs(spans[4])["gen_ai.response.time_to_first_chunk"] > 0


def test_a_raw_stream_never_parsed_ends_cut_short(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    client = sdk(chat_server.url)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=MESSAGES, max_tokens=3, stream=True,  # type: ignore[arg-type]
    )  # fmt: skip
    assert span_exporter.get_finished_spans() == ()  # its reader may still parse it
    raw.http_response.close()
    del raw
    gc.collect()
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["llama_cpp.stream.closed_early"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api(
    chat_server: ServerManager,
    instrumented: Any,
    span_exporter: InMemorySpanExporter,
    stream: bool,
) -> None:
    async def main() -> Any:
        client = openai.AsyncOpenAI(base_url=chat_server.url + "/v1", api_key="none", max_retries=0)
        async with client:
            answer = await client.responses.create(
                model="tiny", input="Once", max_output_tokens=4, stream=stream
            )
            if not stream:
                return answer
            async for event in answer:
                if event.type == "response.completed":
                    return event.response
        raise AssertionError("no response.completed")

    answer = asyncio.run(main())
    (span,) = span_exporter.get_finished_spans()
    found = attrs(span)
    assert span.name == "chat tiny"
    assert found["gen_ai.request.max_tokens"] == 4
    assert found["gen_ai.response.id"] == answer.id
    assert found["gen_ai.usage.output_tokens"] == answer.usage.output_tokens
    assert found["gen_ai.usage.input_tokens"] == answer.usage.input_tokens
    if stream:  # llama.cpp sends its timings beside a streamed response only
        assert found["gen_ai.provider.name"] == "llama.cpp"
        assert TIMINGS <= set(found)
        assert found["gen_ai.response.time_to_first_chunk"] > 0
    else:
        assert found["gen_ai.provider.name"] == "openai"
        assert not TIMINGS & set(found)


ANSWER = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}  # fmt: skip


@pytest.mark.parametrize(
    "timings",
    ["garbage", {"prompt_n": "many", "predicted_ms": [1]}, {"predicted_n": -1e400}, [1, 2], None],
)
def test_garbage_timings_change_nothing(
    instrumented: Any, span_exporter: InMemorySpanExporter, timings: Any
) -> None:
    """An answer whose timings are not llama.cpp's shape: the same answer, a plain span."""
    body = {**ANSWER, "timings": timings}
    with FaultServer(Reply(200, body=json.dumps(body), content_type="application/json")) as server:
        answer = sdk(server.url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "hi"
    assert answer.model_dump()["timings"] == json.loads(json.dumps(timings))
    (span,) = span_exporter.get_finished_spans()
    found = attrs(span)
    assert found["gen_ai.provider.name"] == "openai"
    assert not [k for k in found if k.startswith("llama_cpp.timings")]
    assert found["gen_ai.usage.output_tokens"] == 1


def test_credentials_in_the_base_url_are_never_shown(
    instrumented: Any, span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "llamatelemetry")
    with FaultServer(
        Reply(200, body=json.dumps(ANSWER), content_type="application/json")
    ) as server:
        url = server.url.replace("http://", "http://alice:s3cret@")
        sdk(url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    (span,) = span_exporter.get_finished_spans()
    shown = json.dumps(attrs(span), default=str) + caplog.text
    assert "s3cret" not in shown and "alice" not in shown
    assert attrs(span)["server.address"] == "127.0.0.1"


def test_an_sdk_older_than_the_lower_bound_is_left_alone(
    providers: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openai, "__version__", "1.2.3")
    request = openai.OpenAI.request
    tracer_provider, meter_provider, _ = providers
    with caplog.at_level(logging.WARNING, "llamatelemetry"):
        LlamaCppInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    try:
        assert openai.OpenAI.request is request
        (record,) = caplog.records
        assert "1.2.3" in record.getMessage() and "openai>=1.55" in record.getMessage()
    finally:
        LlamaCppInstrumentor().uninstrument()
    assert openai.OpenAI.request is request


def test_a_callers_own_http_client_two_threads_and_two_event_loops(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    """Each thread runs its own loop with three streams at once, through the caller's own
    httpx clients: every stream is its own span, with its own chunks."""

    async def streams(tokens: int) -> list[int]:
        async with httpx.AsyncClient() as http:
            client = openai.AsyncOpenAI(
                base_url=chat_server.url + "/v1", api_key="none", http_client=http
            )

            async def one() -> int:
                stream = await client.chat.completions.create(
                    model="tiny", messages=MESSAGES, max_tokens=tokens, stream=True,  # type: ignore[arg-type]
                    extra_body={"ignore_eos": True},
                )  # fmt: skip
                return len([c async for c in stream])

            return list(await asyncio.gather(one(), one(), one()))

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda n: asyncio.run(streams(n)), [3, 5]))
    with httpx.Client() as http:
        client = openai.OpenAI(base_url=chat_server.url + "/v1", api_key="none", http_client=http)
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 7
    streamed = sorted(attrs(s)["gen_ai.usage.output_tokens"] for s in spans[:6])
    assert streamed == [3, 3, 3, 5, 5, 5]
    assert all(c[0] == c[1] == c[2] for c in counts)
    assert len({s.context.trace_id for s in spans}) == 7  # seven calls, seven traces
    gaps = points(instrumented)["gen_ai.client.operation.time_per_output_chunk"]
    assert sum(p.count for p in gaps) == sum(n - 1 for c in counts for n in c)


def test_a_client_used_before_instrumenting_is_observed_after(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    """The SDK's resources keep the client's methods they were made with: a client whose
    ``chat`` was used before ``instrument()`` (an app's module-level client) is still seen."""
    client = sdk(chat_server.url)
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    aclient = openai.AsyncOpenAI(base_url=chat_server.url + "/v1", api_key="none")
    assert aclient.embeddings is not None  # made before instrumenting
    tracer_provider, meter_provider, _ = providers
    LlamaCppInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    try:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]

        async def embed() -> None:
            async with aclient:
                await aclient.embeddings.create(model="tiny", input="a")

        asyncio.run(embed())
    finally:
        LlamaCppInstrumentor().uninstrument()
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    assert [s.name for s in span_exporter.get_finished_spans()] == ["chat tiny", "embeddings tiny"]
