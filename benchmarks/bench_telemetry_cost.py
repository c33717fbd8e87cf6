"""What telemetry adds to a call, in process CPU, beside the official openai-v2
instrumentation on the same pipeline.

    python benchmarks/bench_telemetry_cost.py [--rounds 20] [--calls 60] [--streams 10]
                                              [--tokens 32] [--long-tokens 400]
                                              [--long-streams 2] [--chunk-rounds 20]
                                              [--otlp] [--profile]

The setup a user of both would have: one ``TracerProvider`` with a ``BatchSpanProcessor``
to an exporter that drops what it gets, one ``MeterProvider`` with an in-memory reader,
both instrumentations on that one pipeline, a tiny-model llama.cpp server in another
process. Exporting is left out on purpose: its cost (encoding, the network) is the
exporter's, and it differs between exporters. ``--otlp`` measures the same calls with
``bench_cpu.py``'s pipeline instead (the SDK's defaults: batch span processor and periodic
metric reader exporting OTLP to a collector in another process), whose encoding counts
against each instrumentation in proportion to what it exports.

Per call (``max_tokens=1``, not streamed), per ``--tokens``-token stream and per
``--long-tokens``-token stream (whose cost beyond a call's, per chunk, is the figure per
chunk), the CPU of
this process (all its threads: the span processor's and the metric recorder's included),
blocks of calls interleaved round by round (what telemetry adds: the median of each
round's difference between the instrumented block and the bare one next to it):

- ``LlamaCppClient`` bare and instrumented (``InstrumentedLlamaCppClient``);
- the openai SDK bare, under ``OpenAIInstrumentor`` and under our ``LlamaCppInstrumentor``
  (each switched on around its block): the same calls, through the same SDK.

Targets: ours adds <= 100 us per call and <= 3 us per streamed chunk; the instrumented
client's wall time per call <= 1.10x the bare one's; on the openai SDK's calls, ours adds
<= 0.5x what openai-v2 adds per call, and <= 3 us per streamed chunk. ``--profile`` prints where the
instrumented client's CPU goes (this thread only).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from _harness import machine
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.telemetry import InstrumentedLlamaCppClient, setup_telemetry
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Say something."}]


class Dropping(SpanExporter):
    """Takes every batch and keeps nothing."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


Candidate = tuple[Callable[[], object], Callable[[], None], Callable[[], None]]
Seen = dict[str, list[tuple[float, float]]]


def settled(tracer_provider: Any) -> None:
    """Between blocks, untimed: the spans a block ended are exported and its garbage is
    collected, so that no block pays for the one before it."""
    tracer_provider.force_flush()
    gc.collect()


def blocks(candidates: dict[str, Candidate], ops: int, rounds: int, tracer_provider: Any) -> Seen:
    """(CPU, wall) per op of each candidate, a block each per round; round 0 warms up;
    ``tracer_provider``: the pipeline under test, settled between blocks."""
    seen: Seen = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds + 1):
        for name in names if round_index % 2 == 0 else names[::-1]:
            call, before, after = candidates[name]
            settled(tracer_provider)
            before()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(ops):
                call()
            spent = ((time.process_time() - cpu) / ops, (time.perf_counter() - wall) / ops)
            after()
            if round_index:
                seen[name].append(spent)
    return seen


def added(seen: Seen, instrumented: str, bare: str) -> float:
    """The median of each round's difference, in us: the two blocks of a round ran one
    after the other, so a slow spell of the machine (a shared one drifts by tens of
    percent) hits both."""
    pairs = zip(seen[instrumented], seen[bare], strict=True)
    return statistics.median(a - b for (a, _), (b, _) in pairs) * 1e6


def show(title: str, seen: Seen) -> dict[str, float]:
    cpu = {name: statistics.median(c for c, _ in values) * 1e6 for name, values in seen.items()}
    wall = {name: statistics.median(w for _, w in values) * 1e6 for name, values in seen.items()}
    print(f"\n{title}")
    for name in seen:
        print(f"  {name:<26} {cpu[name]:8.1f} us CPU  {wall[name]:8.1f} us wall")
    ours = added(seen, "ours + telemetry", "ours")
    theirs = added(seen, "openai SDK + openai-v2", "openai SDK")
    on_sdk = added(seen, "openai SDK + ours", "openai SDK")
    print(f"  added CPU: ours {ours:.1f} us, openai-v2 {theirs:.1f} us "
          f"(ours / openai-v2 {ours / theirs:.2f}); on the openai SDK: ours {on_sdk:.1f} us "
          f"(/ openai-v2 {on_sdk / theirs:.2f})")  # fmt: skip
    print(f"  wall, ours + telemetry / ours: {wall['ours + telemetry'] / wall['ours']:.3f}")
    return {"ours": ours, "theirs": theirs, "on_sdk": on_sdk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=60, help="calls per block")
    parser.add_argument("--streams", type=int, default=10, help="streams per block")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=400, help="for the cost per chunk")
    parser.add_argument("--long-streams", type=int, default=2, help="per block")
    parser.add_argument("--chunk-rounds", type=int, default=20, help="rounds of long streams")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="export to an OTLP collector in another process instead (bench_cpu.py's setup)",
    )
    args = parser.parse_args()
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    collector = None
    if args.otlp:  # the SDK's defaults, exporting to a collector of its own
        collector = subprocess.Popen(
            [sys.executable, "-m", "llamatelemetry.testing._otlp"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert collector.stdout is not None
        pipeline = setup_telemetry(
            "bench", otlp_endpoint=collector.stdout.readline().strip(), set_global=False
        )
        tracer_provider, meter_provider = pipeline.tracer_provider, pipeline.meter_provider
    else:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = OpenAIInstrumentor()
    try:
        measure(args, tracer_provider, meter_provider, instrumentor)
    finally:
        if collector is not None:
            pipeline.shutdown()
            collector.terminate()
            collector.wait()
            assert collector.stdout is not None
            collector.stdout.close()


def measure(args: Any, tracer_provider: Any, meter_provider: Any, instrumentor: Any) -> None:
    import openai

    from llamatelemetry.telemetry import LlamaCppInstrumentor

    def instrument() -> None:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    ours_on_sdk = LlamaCppInstrumentor()

    def instrument_ours() -> None:
        ours_on_sdk.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp, n_threads=1) as server:
        bare = LlamaCppClient(server.url)
        traced = InstrumentedLlamaCppClient(
            server.url, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

        def call(client: LlamaCppClient) -> Callable[[], object]:
            return lambda: client.chat.completions.create(messages=MESSAGES, max_tokens=1)

        def sdk_call() -> object:
            return sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]

        def stream(client: LlamaCppClient, tokens: int) -> Callable[[], int]:
            def run() -> int:
                chunks = client.chat.completions.create(
                    messages=MESSAGES, max_tokens=tokens, stream=True, ignore_eos=True
                )
                return sum(1 for _ in chunks)

            return run

        def sdk_stream(tokens: int) -> Callable[[], int]:
            def run() -> int:
                chunks = sdk.chat.completions.create(
                    model="tiny", messages=MESSAGES, max_tokens=tokens, stream=True,  # type: ignore[arg-type]
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
                )  # fmt: skip
                return sum(1 for _ in chunks)

            return run

        def nothing() -> None:
            return None

        if args.profile:
            for _ in range(50):
                call(traced)()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.calls):
                call(traced)()
            for _ in range(args.streams):
                stream(traced, args.tokens)()
            profile.disable()
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats("telemetry|opentelemetry", 45)
            stats.sort_stats("tottime").print_stats(25)
            return
        print(f"{machine()}; {args.rounds} rounds")
        per_call = blocks(
            {
                "ours": (call(bare), nothing, nothing),
                "ours + telemetry": (call(traced), nothing, nothing),
                "openai SDK": (sdk_call, nothing, nothing),
                "openai SDK + openai-v2": (sdk_call, instrument, instrumentor.uninstrument),
                "openai SDK + ours": (sdk_call, instrument_ours, ours_on_sdk.uninstrument),
            },
            args.calls,
            args.rounds,
            tracer_provider,
        )
        calls = show(f"per call (max_tokens=1), blocks of {args.calls}", per_call)
        chunks = stream(bare, args.tokens)()
        seen = blocks(
            {
                "ours": (stream(bare, args.tokens), nothing, nothing),
                "ours + telemetry": (stream(traced, args.tokens), nothing, nothing),
                "openai SDK": (sdk_stream(args.tokens), nothing, nothing),
                "openai SDK + openai-v2": (
                    sdk_stream(args.tokens),
                    instrument,
                    instrumentor.uninstrument,
                ),
                "openai SDK + ours": (
                    sdk_stream(args.tokens),
                    instrument_ours,
                    ours_on_sdk.uninstrument,
                ),
            },
            args.streams,
            args.rounds,
            tracer_provider,
        )
        show(f"per {args.tokens}-token stream ({chunks} chunks), blocks of {args.streams}", seen)
        # Per chunk: what a long stream costs beyond a call, ours only (a stream's CPU
        # varies by milliseconds from one to the next: many rounds, two candidates).
        long = args.long_tokens
        chunks = stream(bare, long)()
        seen = blocks(
            {
                "ours": (stream(bare, long), nothing, nothing),
                "ours + telemetry": (stream(traced, long), nothing, nothing),
                "openai SDK": (sdk_stream(long), nothing, nothing),
                "openai SDK + ours": (
                    sdk_stream(long),
                    instrument_ours,
                    ours_on_sdk.uninstrument,
                ),
            },
            args.long_streams,
            args.chunk_rounds,
            tracer_provider,
        )
        cpu = {name: statistics.median(c for c, _ in values) * 1e6 for name, values in seen.items()}
        added_long = added(seen, "ours + telemetry", "ours")
        added_sdk = added(seen, "openai SDK + ours", "openai SDK")
        print(f"\nper {long}-token stream ({chunks} chunks), {args.chunk_rounds} rounds of "
              f"{args.long_streams}: ours {cpu['ours']:.0f} us CPU, instrumented "
              f"{cpu['ours + telemetry']:.0f} us: added {added_long:.0f} us; the openai SDK "
              f"{cpu['openai SDK']:.0f} us, under ours {cpu['openai SDK + ours']:.0f} us: "
              f"added {added_sdk:.0f} us")  # fmt: skip
        ours_chunk = (added_long - calls["ours"]) / chunks
        sdk_chunk = (added_sdk - calls["on_sdk"]) / chunks
        print(
            f"added per chunk, beyond a call's cost: {ours_chunk:.2f} us; "
            f"on the openai SDK: {sdk_chunk:.2f} us"
        )
        print(f"added per call: ours {calls['ours']:.1f} us, openai-v2 {calls['theirs']:.1f} us")
        in_process(tracer_provider, meter_provider)
        wall = statistics.median(w for _, w in per_call["ours + telemetry"]) / statistics.median(
            w for _, w in per_call["ours"]
        )
        for label, value, target in (
            ("telemetry added per call, us", calls["ours"], 100.0),
            ("telemetry added per chunk, us", ours_chunk, 3.0),
            ("per call, added: ours / openai-v2", calls["ours"] / calls["theirs"], 0.5),
            ("per call, wall: instrumented / bare", wall, 1.10),
            ("openai SDK per call: ours / openai-v2", calls["on_sdk"] / calls["theirs"], 0.5),
            ("openai SDK, added per chunk, us", sdk_chunk, 3.0),
        ):
            verdict = "OK" if value <= target else "MISS"
            print(f"  {label:<36} {value:8.3f}   target <= {target:.2f}   {verdict}")
        tracer_provider.force_flush()


def in_process(tracer_provider: Any, meter_provider: Any) -> None:
    """Without the network: what recording a call costs (``CallRecorder`` fed a canned
    answer, its metric points recorded), and the SDK's own share, a span with the same
    attributes started, made current, propagated and ended. The difference between these
    and the figures above is what running between network reads costs (colder caches,
    the background threads)."""
    from opentelemetry import propagate, trace
    from opentelemetry.context import attach, detach

    from llamatelemetry.api import ChatCompletion
    from llamatelemetry.telemetry import CallRecorder
    from llamatelemetry.telemetry._recorder import recorder as deferred

    answer = ChatCompletion.model_validate(CANNED)
    request = {
        "messages": MESSAGES, "max_tokens": 1, "temperature": 0.7, "top_p": 0.9,
        "frequency_penalty": 0.0, "presence_penalty": 0.0, "top_k": 40, "seed": 0,
    }  # fmt: skip
    defaulted = ("frequency_penalty", "presence_penalty", "seed", "temperature", "top_k", "top_p")
    recorder = CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider)
    url = "http://127.0.0.1:8080"

    def record() -> None:
        call = recorder.begin("chat", base_url=url, request=request, defaulted=defaulted)
        call.headers()
        token = attach(call.context)
        detach(token)
        call.end(answer)

    # The attributes such a call's span has, read from a span of a side pipeline.
    kept = InMemorySpanExporter()
    side = TracerProvider()
    side.add_span_processor(SimpleSpanProcessor(kept))
    call = CallRecorder(tracer_provider=side, meter_provider=meter_provider).begin(
        "chat", base_url=url, request=request, defaulted=defaulted
    )
    call.end(answer)
    (span,) = kept.get_finished_spans()
    start_attributes = dict(span.attributes or {})
    tracer = trace.get_tracer("floor", tracer_provider=tracer_provider)
    end_keys = [k for k in start_attributes if k.startswith(("gen_ai.response", "gen_ai.usage",
                                                              "llama_cpp"))]  # fmt: skip
    at_end = {k: start_attributes.pop(k) for k in end_keys}

    def span_only() -> None:
        span = tracer.start_span("chat", attributes=start_attributes)
        context = trace.set_span_in_context(span)
        propagate.inject({}, context=context)
        detach(attach(context))
        span.set_attributes(at_end)
        span.end()

    sdk_calls = sdk_in_memory(tracer_provider, meter_provider)
    long = 400
    sdk_streams = sdk_in_memory(tracer_provider, meter_provider, chunks=long)
    n = 5000
    figures = {}
    for name, fn in (("CallRecorder, canned answer", record), ("the SDK span alone", span_only)):
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(n):
                fn()
            deferred.flush()
            best = min(best, (time.process_time() - started) / n * 1e6)
        figures[name] = best
    print(f"\nin process, no network ({len(start_attributes) + len(at_end)} span attributes), "
          f"best of 5 x {n}:")  # fmt: skip
    for name, micros in figures.items():
        print(f"  {name:<30} {micros:7.1f} us CPU per call")
    bare = sdk_calls["openai SDK"]
    print("the openai SDK's call over an in-memory transport (the same canned answer), "
          "best of 5 x 2000, paired:")  # fmt: skip
    for name, micros in sdk_calls.items():
        more = f"  added {micros - bare:6.1f} us" if name != "openai SDK" else ""
        print(f"  {name:<30} {micros:7.1f} us CPU per call{more}")
    ours, theirs = sdk_calls["+ ours"] - bare, sdk_calls["+ openai-v2"] - bare
    print(f"  added: ours / openai-v2 {ours / theirs:.2f}")
    bare_stream = sdk_streams["openai SDK"]
    print(f"a {long}-chunk stream of it, best of 5 x 20:")
    for name, micros in sdk_streams.items():
        more = ""
        if name != "openai SDK":
            added_stream = micros - bare_stream
            per_chunk = (added_stream - (sdk_calls[name] - bare)) / long
            more = f"  added {added_stream:6.1f} us, {per_chunk:5.2f} us per chunk beyond a call"
        print(f"  {name:<30} {micros:7.1f} us CPU per stream{more}")
    layer = sdk_layer_per_chunk(tracer_provider, meter_provider)
    print(
        f"our layer on the openai SDK's stream, per chunk (its chunks replayed from "
        f"memory; the recorder and the metric points included): {layer:.2f} us"
    )
    for label, value, target in (
        ("in memory, SDK per call: ours / openai-v2", ours / theirs, 0.5),
        ("in process, our layer per SDK chunk, us", layer, 3.0),
    ):
        verdict = "OK" if value <= target else "MISS"
        print(f"  {label:<44} {value:8.3f}   target <= {target:.2f}   {verdict}")


def sdk_layer_per_chunk(tracer_provider: Any, meter_provider: Any, chunks: int = 400) -> float:
    """What observing the openai SDK's stream adds per chunk, in CPU: the SDK's stream class
    as our instrumentation subclasses it, over a stand-in base that replays one real
    ``ChatCompletionChunk`` (the SDK's own per-chunk work, ~120 us of parsing, would bury
    a microsecond in its noise); best of 7."""
    from openai.types.chat import ChatCompletionChunk

    from llamatelemetry.telemetry import CallRecorder
    from llamatelemetry.telemetry._openai_sdk import SdkTelemetry, _building, _observed
    from llamatelemetry.telemetry._recorder import recorder as deferred

    sdk = SdkTelemetry(CallRecorder(tracer_provider=tracer_provider, meter_provider=meter_provider))
    chunk = ChatCompletionChunk.model_validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
         "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
    )  # fmt: skip
    length = [0]

    class Replay:  # the SDK's Stream's shape: ``__stream__`` behind ``__iter__``
        def __init__(self, **kwargs: Any) -> None:
            self._iterator = self.__stream__()

        def __stream__(self) -> Any:
            for _ in range(length[0]):
                yield chunk

        def __iter__(self) -> Any:
            yield from self._iterator

        def close(self) -> None:
            return None

    observed = _observed(Replay, sdk)

    def bare() -> int:
        return sum(1 for _ in Replay())

    def ours() -> int:
        call = sdk.recorder.begin("chat", base_url="http://127.0.0.1:8080", stream=True)
        token = _building.set((call, "http://127.0.0.1:8080"))
        try:
            stream = observed(response=None)
        finally:
            _building.reset(token)
        return sum(1 for _ in stream)

    def best(fn: Callable[[], int]) -> float:
        spent = []
        for _ in range(7):
            started = time.process_time()
            for _ in range(40):
                fn()
            deferred.flush()
            tracer_provider.force_flush()
            spent.append((time.process_time() - started) / 40 * 1e6)
        return min(spent)

    length[0] = 0
    empty = best(ours) - best(bare)
    length[0] = chunks
    full = best(ours) - best(bare)
    return (full - empty) / chunks


def sdk_in_memory(tracer_provider: Any, meter_provider: Any, chunks: int = 0) -> dict[str, float]:
    """The openai SDK's chat call answered by an in-memory transport (a stream of
    ``chunks`` chunks and a last one with the finish reason, usage and timings, when
    given): bare, under our instrumentor and under openai-v2, each switched on around its
    own block; best of 5."""
    import httpx
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    from llamatelemetry.telemetry import LlamaCppInstrumentor
    from llamatelemetry.telemetry._recorder import recorder as deferred

    body, kind = json.dumps(CANNED).encode(), "application/json"
    if chunks:
        delta = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "tiny",
            "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
        }
        last = {**delta, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                "usage": CANNED["usage"], "timings": CANNED["timings"]}  # fmt: skip
        events = [json.dumps(delta)] * chunks + [json.dumps(last), "[DONE]"]
        body, kind = "".join(f"data: {e}\n\n" for e in events).encode(), "text/event-stream"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": kind})
    )
    client = openai.OpenAI(
        base_url="http://127.0.0.1:8080/v1", api_key="none", max_retries=0,
        http_client=httpx.Client(transport=transport),
    )  # fmt: skip

    def call() -> object:
        if chunks:
            stream = client.chat.completions.create(
                model="tiny",
                messages=MESSAGES,
                max_tokens=chunks,
                stream=True,  # type: ignore[arg-type]
            )
            return sum(1 for _ in stream)
        return client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]

    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    candidates: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "openai SDK": (lambda: None, lambda: None),
        "+ ours": (
            lambda: LlamaCppInstrumentor().instrument(**providers),
            lambda: LlamaCppInstrumentor().uninstrument(),
        ),
        "+ openai-v2": (
            lambda: OpenAIInstrumentor().instrument(**providers),
            lambda: OpenAIInstrumentor().uninstrument(),
        ),
    }
    best = dict.fromkeys(candidates, float("inf"))
    n = 20 if chunks else 2000
    for _ in range(6):  # the first round warms up, and is kept only if it is the best
        for name, (on, off) in candidates.items():
            on()
            settled(tracer_provider)
            started = time.process_time()
            for _ in range(n):
                call()
            deferred.flush()
            tracer_provider.force_flush()
            best[name] = min(best[name], (time.process_time() - started) / n * 1e6)
            off()
    return best


CANNED = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "tiny",
    "choices": [{"index": 0, "finish_reason": "length",
                 "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13,
              "prompt_tokens_details": {"cached_tokens": 11}},
    "timings": {"cache_n": 11, "prompt_n": 1, "prompt_ms": 1.2, "prompt_per_token_ms": 1.2,
                "prompt_per_second": 800.0, "predicted_n": 1, "predicted_ms": 0.5,
                "predicted_per_token_ms": 0.5, "predicted_per_second": 2000.0},
}  # fmt: skip


if __name__ == "__main__":
    main()
