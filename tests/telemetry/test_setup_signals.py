"""``setup_telemetry``'s third signal and its sampler: the operation-details event (and the
messages it carries when asked for) reaches a real OTLP collector as a log record of the
call's trace, and ``OTEL_TRACES_SAMPLER`` decides which spans are kept."""

from __future__ import annotations

from typing import Any

import pytest

from llamatelemetry.server import ServerManager
from llamatelemetry.telemetry import INFERENCE_EVENT, InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing._otlp import OTLPReceiver

from .test_pipeline import MESSAGES, chat_calls


def one_call(url: str, capture: str | bool) -> tuple[list[Any], list[Any]]:
    """One chat call through ``setup_telemetry``'s pipeline to a real OTLP receiver: the
    spans and log records it received."""
    with OTLPReceiver() as receiver:
        telemetry = setup_telemetry(
            "logs-test", otlp_endpoint=receiver.url, set_global=False, export_interval_s=3600
        )
        with InstrumentedLlamaCppClient(
            url,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            logger_provider=telemetry.logger_provider,
            capture_content=capture,
        ) as client:
            client.chat.completions.create(messages=MESSAGES, max_tokens=3)
        assert telemetry.force_flush()
        telemetry.shutdown()
        return receiver.spans(), receiver.logs()


@pytest.mark.parametrize("mode", ["EVENT_ONLY", "SPAN_AND_EVENT"])
def test_the_event_and_its_messages_reach_the_collector_in_the_calls_trace(
    chat_server: ServerManager, mode: str
) -> None:
    (span,), (record,) = one_call(chat_server.url, mode)
    assert record["event_name"] == INFERENCE_EVENT
    assert (record["trace_id"], record["span_id"]) == (span["trace_id"], span["span_id"])
    assert record["resource"]["service.name"] == "logs-test"
    assert record["attributes"]["gen_ai.usage.output_tokens"] == 3
    (message,) = record["attributes"]["gen_ai.input.messages"]
    assert message["role"] == "user"
    assert message["parts"][0]["content"] == MESSAGES[0]["content"]
    (answer,) = record["attributes"]["gen_ai.output.messages"]
    assert answer["role"] == "assistant" and answer["finish_reason"] == "length"
    # On the span too only when asked for.
    assert ("gen_ai.input.messages" in span["attributes"]) is (mode == "SPAN_AND_EVENT")


def test_no_content_asked_for_sends_no_log_record(chat_server: ServerManager) -> None:
    spans, records = one_call(chat_server.url, False)
    assert len(spans) == 1
    assert records == []


@pytest.mark.parametrize(
    ("sampler", "argument", "spans"),
    [("always_on", None, 6), ("always_off", None, 0), ("traceidratio", "0", 0),
     ("parentbased_traceidratio", "1", 6)],
)  # fmt: skip
def test_otel_traces_sampler_decides_which_spans_are_kept(
    chat_server: ServerManager,
    monkeypatch: pytest.MonkeyPatch,
    sampler: str,
    argument: str | None,
    spans: int,
) -> None:
    """Every call is measured, whichever spans are kept (the sampler is read from the
    environment when ``setup_telemetry`` makes the tracer provider)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if argument is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    with OTLPReceiver() as receiver:
        telemetry = setup_telemetry(
            otlp_endpoint=receiver.url, set_global=False, export_interval_s=3600
        )
        chat_calls(chat_server.url, telemetry, 6)
        assert telemetry.force_flush()
        kept = len(receiver.spans())
        duration = receiver.metrics()["gen_ai.client.operation.duration"][-1]["count"]
        telemetry.shutdown()
    assert (kept, duration) == (spans, 6)
