"""Client overhead: LlamaCppClient against raw ``httpx.Client`` and the openai SDK
(``openai.OpenAI(base_url=.../v1)``), on the same tiny-model llama.cpp server, interleaved.

    python benchmarks/bench_client.py [--rounds 11] [--ops 50] [--stream-tokens 200]

All three send the same JSON body (checked at start) and read the reply's text:
- per non-streamed call (max_tokens=1): the raw peer posts the body and reads
  ``r.json()["choices"][0]["message"]["content"]``;
- per streamed call (200 tokens): the raw peer iterates ``iter_lines()`` and
  ``json.loads`` each ``data:`` line.
The raw peer gets the one resend after a stale keep-alive connection that our client
makes (llama-server closes idle keep-alive connections); the openai SDK uses its own
retries, and how many it took is printed.

Targets (issue 7), on wall time: per call ours / httpx <= 1.10 and ours / openai <= 0.80;
per stream ours / httpx <= 1.10 (ours / openai is shown for information). This process's
CPU time per op is shown too, for information: it is the client's own cost, which the
server's share of the wall time (and other load on a shared machine) hides.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import openai
from _harness import Result, compare, machine

from llamatelemetry.api import LlamaCppClient
from llamatelemetry.testing import start_chat_server

MESSAGES = [{"role": "user", "content": "Say something."}]
MODEL = "tiny"  # llama-server ignores it; openai requires one, so everyone sends it


class Counter(logging.Handler):
    """Counts log records that contain ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


def verdict(name: str, value: float, op: str, target: float) -> bool:
    good = value <= target if op == "<=" else value >= target
    print(f"  {name:<44} {value:7.3f}   target {op} {target:.2f}   {'OK' if good else 'MISS'}")
    return good


def show(title: str, results: dict[str, Result]) -> None:
    base = results["raw httpx"]
    print(f"\n{title}")
    print(f"  {'':<16} {'wall ms/op':>10} {'x raw':>7}   {'client CPU ms/op':>16} {'x raw':>7}")
    for name, result in results.items():
        print(
            f"  {name:<16} {result.median * 1e3:10.3f} {result.median / base.median:7.3f}   "
            f"{result.cpu_median * 1e3:16.3f} {result.cpu_median / base.cpu_median:7.3f}"
        )


def captured_body(send: Callable[[Any], object], client_factory: Callable[[Any], Any]) -> Any:
    """The JSON body a client sends, captured by a request hook of its HTTP client."""
    bodies: list[Any] = []

    def hook(request: Any) -> None:
        bodies.append(json.loads(request.read()))

    client = client_factory(hook)
    try:
        send(client)
    finally:
        client.close()
    return bodies[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--ops", type=int, default=50, help="non-streamed calls per round")
    parser.add_argument("--stream-ops", type=int, default=5, help="streams per round")
    parser.add_argument("--stream-tokens", type=int, default=200)
    args = parser.parse_args()

    resends = Counter("stale pooled connection")
    logging.getLogger("llamatelemetry").addHandler(resends)
    logging.getLogger("llamatelemetry").setLevel(logging.DEBUG)
    openai_retries = Counter("Retrying request")
    logging.getLogger("openai").addHandler(openai_retries)
    logging.getLogger("openai").setLevel(logging.INFO)
    raw_resends = 0

    with tempfile.TemporaryDirectory() as tmp, start_chat_server(tmp) as server:
        url = server.url
        chat_url = f"{url}/v1/chat/completions"
        ours = LlamaCppClient(url)
        raw = httpx.Client(timeout=600, trust_env=False)
        oai = openai.OpenAI(base_url=f"{url}/v1", api_key="none")

        # Everyone sends what our client sends by default (its sampling defaults).
        def our_send(client: LlamaCppClient, **kw: Any) -> Any:
            return client.chat.completions.create(messages=MESSAGES, model=MODEL, **kw)

        call_body = captured_body(
            lambda c: our_send(c, max_tokens=1),
            lambda hook: LlamaCppClient(
                url, http_client=httpx.Client(event_hooks={"request": [hook]}, trust_env=False)
            ),
        )
        stream_body = captured_body(
            lambda c: our_send(c, max_tokens=args.stream_tokens, stream=True).until_done(),
            lambda hook: LlamaCppClient(
                url, http_client=httpx.Client(event_hooks={"request": [hook]}, trust_env=False)
            ),
        )
        sampling = {
            k: call_body[k]
            for k in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
        }
        extra = {"top_k": call_body["top_k"]}

        def oai_send(client: openai.OpenAI, **kw: Any) -> Any:
            return client.chat.completions.create(
                messages=MESSAGES,
                model=MODEL,  # type: ignore[arg-type]
                extra_body=extra,
                **sampling,
                **kw,
            )

        oai_stream_kw = {"stream": True, "stream_options": {"include_usage": True}}
        for body, kw in (
            (call_body, {"max_tokens": 1}),
            (stream_body, {"max_tokens": args.stream_tokens, **oai_stream_kw}),
        ):
            theirs = captured_body(
                lambda c, kw=kw: [*oai_send(c, **kw)] if kw.get("stream") else oai_send(c, **kw),
                lambda hook: openai.OpenAI(
                    base_url=f"{url}/v1",
                    api_key="none",
                    http_client=httpx2.Client(event_hooks={"request": [hook]}),
                ),
            )
            same = {k: v for k, v in body.items() if (k, v) != ("stream", False)}  # the default
            assert theirs == same, f"openai sends {theirs}, we send {body}"

        def raw_send(body: dict[str, Any], stream: bool) -> httpx.Response:
            nonlocal raw_resends
            request = raw.build_request("POST", chat_url, json=body)
            try:
                return raw.send(request, stream=stream)
            except httpx.RemoteProtocolError:  # a keep-alive connection the server closed
                raw_resends += 1
                return raw.send(request, stream=stream)

        def raw_call() -> str:
            response = raw_send(call_body, stream=False)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

        def our_call() -> str | None:
            return our_send(ours, max_tokens=1).choices[0].message.content

        def oai_call() -> str | None:
            return oai_send(oai, max_tokens=1).choices[0].message.content

        def raw_stream() -> str:
            response = raw_send(stream_body, stream=True)
            pieces = []
            try:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunk = json.loads(line[6:])
                        if chunk["choices"]:
                            pieces.append(chunk["choices"][0]["delta"].get("content") or "")
            finally:
                response.close()
            return "".join(pieces)

        def our_stream() -> str:
            stream = our_send(ours, max_tokens=args.stream_tokens, stream=True)
            return "".join([c.choices[0].delta.content or "" for c in stream])

        def oai_stream() -> str:
            stream = oai_send(oai, max_tokens=args.stream_tokens, **oai_stream_kw)
            return "".join([c.choices[0].delta.content or "" for c in stream if c.choices])

        assert raw_call() == our_call() == oai_call()
        assert raw_stream() == our_stream() == oai_stream()  # same seed: the same text

        print(f"llamatelemetry client overhead — {machine()}, server {url}")
        calls = compare(
            {"raw httpx": raw_call, "LlamaCppClient": our_call, "openai SDK": oai_call},
            ops=args.ops,
            rounds=args.rounds,
        )
        show("non-streamed chat, max_tokens=1", calls)
        streams = compare(
            {"raw httpx": raw_stream, "LlamaCppClient": our_stream, "openai SDK": oai_stream},
            ops=args.stream_ops,
            rounds=args.rounds,
            warmup=2,
        )
        show(f"streamed chat, {args.stream_tokens} tokens", streams)

        print(
            f"\nstale-connection resends: ours {resends.count}, raw httpx {raw_resends}; "
            f"openai SDK retries: {openai_retries.count}"
        )
        print("\nverdict (wall time per op)")
        ours_c, ours_s = calls["LlamaCppClient"], streams["LlamaCppClient"]
        verdict("per call, ours / raw httpx", ours_c.median / calls["raw httpx"].median, "<=", 1.10)
        verdict(
            "per call, ours / openai SDK", ours_c.median / calls["openai SDK"].median, "<=", 0.80
        )
        verdict(
            "per stream, ours / raw httpx", ours_s.median / streams["raw httpx"].median, "<=", 1.10
        )
        for name, value in (
            ("per stream, ours / openai SDK", ours_s.median / streams["openai SDK"].median),
            (
                "client CPU per call, ours / raw httpx",
                ours_c.cpu_median / calls["raw httpx"].cpu_median,
            ),
            (
                "client CPU per call, ours / openai SDK",
                ours_c.cpu_median / calls["openai SDK"].cpu_median,
            ),
            (
                "client CPU per stream, ours / raw httpx",
                ours_s.cpu_median / streams["raw httpx"].cpu_median,
            ),
            (
                "client CPU per stream, ours / openai SDK",
                ours_s.cpu_median / streams["openai SDK"].cpu_median,
            ),
        ):
            print(f"  {name:<44} {value:7.3f}   (for information)")
        ours.close()
        raw.close()
        oai.close()


if __name__ == "__main__":
    main()
