"""The frameworks people call llama-server through, unchanged, against a real server:
LangChain's ``ChatOpenAI``, LiteLLM's ``openai/`` models and llama-index's ``OpenAILike``
all reach it through the openai SDK, so each call is one of our spans, with llama.cpp's
attributes. Where a framework's own instrumentation makes a span of the model call
(OpenLLMetry's for LangChain), ours nests under it, in one trace."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import LlamaCppInstrumentor

# LiteLLM reads its model cost map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TIMINGS = {"llama_cpp.timings.prompt_ms", "llama_cpp.timings.predicted_n"}


def our_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [
        s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "llamatelemetry"
    ]


def assert_llama_cpp_calls(exporter: InMemorySpanExporter, model: str, stream: list[bool]) -> None:
    """One of our spans per call, ``stream`` saying which calls streamed."""
    spans = our_spans(exporter)
    assert [s.name for s in spans] == [f"chat {model}"] * len(stream)
    for span, streamed in zip(spans, stream, strict=True):
        found = dict(span.attributes or {})
        assert found["gen_ai.provider.name"] == "llama.cpp"
        assert found["gen_ai.request.stream"] is streamed
        assert found["gen_ai.usage.output_tokens"] > 0
        assert TIMINGS <= set(found), span.name
        assert "llama_cpp.stream.closed_early" not in found
        if streamed:
            assert found["gen_ai.response.time_to_first_chunk"] > 0


def test_langchain_chat_openai(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    from langchain_openai import ChatOpenAI

    options: dict[str, Any] = {
        "base_url": chat_server.url + "/v1", "api_key": "none", "model": "tiny",
        "max_tokens": 3, "max_retries": 0, "extra_body": {"ignore_eos": True},
    }  # fmt: skip
    llm = ChatOpenAI(**options)
    assert llm.invoke("Once").content
    assert "".join(str(c.content) for c in llm.stream("Once"))

    async def ainvoke() -> Any:  # the caller's own http client, closed by the caller
        async with httpx.AsyncClient() as http:
            return await ChatOpenAI(**options, http_async_client=http).ainvoke("Once")

    assert asyncio.run(ainvoke()).content
    tool = {
        "type": "function",
        "function": {"name": "weather", "description": "The weather in a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }  # fmt: skip
    llm.bind_tools([tool]).invoke("Weather in Paris?")
    assert_llama_cpp_calls(span_exporter, "tiny", [False, True, False, False])


# LiteLLM leaves event loops of its own (its logging workers') unclosed, for the
# collector to find: their ResourceWarnings are LiteLLM's.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_litellm(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    import litellm

    request: dict[str, Any] = {
        "model": "openai/tiny", "api_base": chat_server.url + "/v1", "api_key": "none",
        "messages": [{"role": "user", "content": "Once"}], "max_tokens": 3,
        "extra_body": {"ignore_eos": True},
    }  # fmt: skip
    assert litellm.completion(**request).choices[0].message.content

    async def acompletion() -> Any:  # the caller's own openai client, closed by the caller
        async with openai.AsyncOpenAI(base_url=request["api_base"], api_key="none") as client:
            return await litellm.acompletion(**request, client=client)

    assert asyncio.run(acompletion()).choices[0].message.content
    chunks = list(litellm.completion(**request, stream=True))
    assert chunks
    assert_llama_cpp_calls(span_exporter, "tiny", [False, False, True])


def test_llama_index_openai_like(
    chat_server: ServerManager, instrumented: Any, span_exporter: InMemorySpanExporter
) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="tiny", api_base=chat_server.url + "/v1", api_key="none", is_chat_model=True,
        max_tokens=3, max_retries=0, additional_kwargs={"extra_body": {"ignore_eos": True}},
    )  # fmt: skip
    assert llm.complete("Once").text
    assert llm.chat([ChatMessage(role="user", content="Once")]).message.content
    assert "".join(c.delta or "" for c in llm.stream_complete("Once"))
    assert asyncio.run(llm.acomplete("Once")).text
    assert_llama_cpp_calls(span_exporter, "tiny", [False, False, True, False])


def test_under_openllmetrys_langchain_span_in_one_trace(
    real_server: ServerManager,
    providers: Any,
    instrumented: Any,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its span of the model call is kept out of the current context, but named in the
    request's trace context headers: ours is its child. On SmolLM2, with content captured,
    our span's output is the text the chain returned."""
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    LlamaCppInstrumentor().uninstrument()
    tracer_provider = providers[0]
    LlamaCppInstrumentor().instrument(tracer_provider=tracer_provider)
    LangchainInstrumentor().instrument(tracer_provider=tracer_provider)
    try:
        llm = ChatOpenAI(
            base_url=real_server.url + "/v1", api_key="none", model="smollm2",  # type: ignore[arg-type]
            max_tokens=8, temperature=0, max_retries=0,
        )  # fmt: skip
        chain = ChatPromptTemplate.from_messages([("user", "Say {word}")]) | llm
        text = chain.invoke({"word": "hello"}).content
    finally:
        LangchainInstrumentor().uninstrument()
    spans = span_exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    by_id = {s.context.span_id: s for s in spans}
    (ours,) = our_spans(span_exporter)
    assert ours.parent is not None
    parent = by_id[ours.parent.span_id]
    assert parent.name == "ChatOpenAI.chat"
    assert parent.parent is not None
    assert by_id[parent.parent.span_id].name == "RunnableSequence.workflow"
    found = dict(ours.attributes or {})
    assert TIMINGS <= set(found)
    assert isinstance(text, str) and text
    assert text in str(found["gen_ai.output.messages"])
