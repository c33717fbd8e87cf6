"""``CallRecorder``, the public face of the telemetry: any client that tells it the facts of
a call gets the same span and metric points as this package's own client. Fed here by
the real openai SDK and by plain httpx against a real llama.cpp server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import CallRecorder, InstrumentedLlamaCppClient

from .test_pipeline import MESSAGES, points

# llama.cpp's own figures: only a client that reads the answer's ``timings`` has them.
TIMING_KEYS = {
    "llama_cpp.timings.prompt_n",
    "llama_cpp.timings.prompt_ms",
    "llama_cpp.timings.predicted_n",
    "llama_cpp.timings.predicted_ms",
}


def sdk(server: ServerManager) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def counts(reader: Any) -> dict[str, int]:
    """Each histogram's points (the counters' sums are not counts)."""
    return {
        name: sum(p.count for p in found)
        for name, found in points(reader).items()
        if found and hasattr(found[0], "count")
    }


def test_the_openai_sdk_fed_to_the_recorder_gets_our_clients_span_and_points(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, reader = providers
    request = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "temperature": 0.0}
    recorder = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider)
    call = recorder.begin("chat", base_url=chat_server.url, request=request)
    answer = sdk(chat_server).chat.completions.create(**request, extra_headers=call.headers())
    call.end(answer)
    ((theirs,),) = [span_exporter.get_finished_spans()]
    span_exporter.clear()

    with InstrumentedLlamaCppClient(
        chat_server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
    ) as client:
        client.chat.completions.create(**request)
    ((ours,),) = [span_exporter.get_finished_spans()]

    assert theirs.name == ours.name == "chat tiny"
    assert theirs.status.status_code is StatusCode.UNSET
    # The same attributes, names and types (values differ only where the calls did):
    # the SDK's answer keeps llama.cpp's timings as a plain dict, and they are read.
    assert theirs.attributes is not None and ours.attributes is not None
    assert TIMING_KEYS <= set(theirs.attributes)
    # Ours also names the parameters it filled in and the model's state: the rest match.
    assert set(theirs.attributes) <= set(ours.attributes)
    answer_side = ("gen_ai.response.", "gen_ai.usage.", "llama_cpp.timings.")
    assert {k for k in theirs.attributes if k.startswith(answer_side)} == {
        k for k in ours.attributes if k.startswith(answer_side)
    }
    for key, value in ours.attributes.items():
        if key in theirs.attributes:
            assert type(theirs.attributes[key]) is type(value), key
    assert theirs.attributes["gen_ai.usage.output_tokens"] == 3
    assert theirs.attributes["gen_ai.response.finish_reasons"] == ("length",)
    found = counts(reader)
    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    ):
        assert found[name] == 2, name  # one from each client
    assert found["gen_ai.client.token.usage"] == 4  # input and output, each


def test_the_sdk_stream_gets_first_chunk_gaps_reasons_usage_and_timings(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, reader = providers
    request = {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, "stream": True,
               "stream_options": {"include_usage": True}}  # fmt: skip
    recorder = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider)
    call = recorder.begin("chat", base_url=chat_server.url, request=request, stream=True)
    chunks = 0
    stream = sdk(chat_server).chat.completions.create(
        **request, extra_body={"ignore_eos": True}, extra_headers=call.headers()
    )
    for chunk in stream:
        assert type(chunk) is openai.types.chat.ChatCompletionChunk  # untouched
        call.chunk(chunk)
        chunks += 1
    call.end()
    (span,) = span_exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["gen_ai.usage.output_tokens"] == 8
    assert TIMING_KEYS <= set(attributes)  # the last chunk's timings
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"]
    assert "llama_cpp.stream.closed_early" not in attributes
    found = counts(reader)
    assert found["gen_ai.client.operation.time_to_first_chunk"] == 1
    # A gap between every two chunks the reader got.
    assert found["gen_ai.client.operation.time_per_output_chunk"] == chunks - 1


def test_plain_httpx_reading_native_chunks_and_leaving_early(
    chat_server: ServerManager, providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    """A stream left before its end is marked so, and the native chunks (no ``choices``,
    plain dicts here, not even objects) count as chunks."""
    tracer_provider, meter_provider, reader = providers
    request = {"prompt": "Once", "n_predict": 16, "stream": True, "ignore_eos": True}
    recorder = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider)
    call = recorder.begin("text_completion", base_url=chat_server.url, request=request, stream=True)
    seen = 0
    with httpx.stream(
        "POST", chat_server.url + "/completion", json=request, headers=call.headers()
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                call.chunk(json.loads(line[6:]))
                seen += 1
                if seen == 3:
                    break
    call.end(complete=False)
    (span,) = span_exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["llama_cpp.stream.closed_early"] is True
    assert attributes["gen_ai.request.max_tokens"] == 16
    assert counts(reader)["gen_ai.client.operation.time_per_output_chunk"] == 2


def test_the_trace_context_goes_into_the_callers_headers(
    providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, _ = providers
    call = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider).begin(
        "health", base_url="http://127.0.0.1:9"
    )
    headers = call.headers({"X-Mine": "kept"})
    call.end()
    (span,) = span_exporter.get_finished_spans()
    assert headers["X-Mine"] == "kept"
    assert headers["traceparent"] == (
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    )


def test_an_error_ends_the_span_once_and_later_facts_are_ignored(
    providers: Any, span_exporter: InMemorySpanExporter
) -> None:
    tracer_provider, meter_provider, reader = providers
    recorder = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider)
    call = recorder.begin("chat", base_url="http://127.0.0.1:9", request={"model": "m"})
    call.end(error=httpx.ConnectError("refused"))
    call.end(object())  # a second end, and a chunk after the end: nothing more
    call.chunk(object())
    assert not call.recording
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ConnectError"
    duration = points(reader)["gen_ai.client.operation.duration"]
    assert [(p.count, dict(p.attributes)["error.type"]) for p in duration] == [(1, "ConnectError")]
    assert "gen_ai.client.token.usage" not in points(reader)


class _Broken(TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = super().get_tracer(*args, **kwargs)

        def start_span(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a broken tracer")

        tracer.start_span = start_span  # type: ignore[method-assign]
        return tracer


def test_a_recorder_that_cannot_start_a_span_changes_nothing_for_the_caller(
    providers: Any,
) -> None:
    _, meter_provider, reader = providers
    recorder = CallRecorder(tracer_provider=_Broken(), meter_provider=meter_provider)
    call = recorder.begin("chat", base_url="http://127.0.0.1:9", request={"model": "m"})
    assert not call.recording
    assert call.headers({"a": "b"}) == {"a": "b"}  # no trace context, the caller's kept
    call.chunk(object())
    call.end(object())
    assert "gen_ai.client.operation.duration" not in points(reader)


@pytest.mark.parametrize("bad", [{"prompt_ms": "soon"}, ["not", "a", "dict"], 3])
def test_timings_of_another_shape_are_left_out_not_an_error(
    providers: Any, span_exporter: InMemorySpanExporter, bad: Any
) -> None:
    tracer_provider, meter_provider, reader = providers

    class Answer:
        id = "x"
        model = "m"
        timings = bad

    call = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider).begin(
        "chat", base_url="http://127.0.0.1:9"
    )
    call.end(Answer())
    (span,) = span_exporter.get_finished_spans()
    assert (span.attributes or {})["gen_ai.response.id"] == "x"
    assert not any(key.startswith("llama_cpp.timings") for key in span.attributes or {})
    assert "gen_ai.server.time_to_first_token" not in points(reader)


def _usage_objects() -> list[Any]:
    from openai.types import CompletionUsage

    from llamatelemetry.api import Usage
    from llamatelemetry.api._responses_and_messages import MessageUsage

    class Plain:
        prompt_tokens = 3

        @property
        def input_tokens(self) -> int:
            return 7

    return [
        Usage.model_validate({"prompt_tokens": 5, "completion_tokens": 2, "odd": 1}),
        MessageUsage.model_validate({"input_tokens": 4, "cache_read_input_tokens": 6}),
        CompletionUsage.model_validate(
            {
                "prompt_tokens": 5,
                "completion_tokens": 2,
                "total_tokens": 7,
                "completion_tokens_details": {"reasoning_tokens": 1},
            }
        ),  # fmt: skip
        Plain(),
        None,
        {"prompt_tokens": 1},
    ]


@pytest.mark.parametrize("obj", _usage_objects(), ids=lambda o: type(o).__name__)
def test_fields_are_read_as_getattr_reads_them(obj: Any) -> None:
    """The attribute reader that skips pydantic's miss path gives what ``getattr`` gives:
    declared fields, extras, properties (a Messages usage's ``prompt_tokens``), plain
    objects' attributes, nothing for what is not there."""
    from llamatelemetry.telemetry._attributes import _field

    names = (
        "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "odd",
        "cache_read_input_tokens", "completion_tokens_details", "missing", "__class__",
    )  # fmt: skip
    for name in names:
        assert _field(obj, name) == getattr(obj, name, None), name
