"""`InferenceResult`: what an `InferenceEngine` returns for every generation, built from
the server's response: the text, the token counts and the latency figures, taken from
llama.cpp's own ``timings`` and from the client's clock.

Definitions of the figures (all in seconds, or tokens per second):

- ``latency_s``: client wall clock (`time.perf_counter`) from just before the request is
  sent until the whole answer is in (for a stream: until the final chunk arrives).
- ``ttft_s`` (time to first token): for a stream, client clock from just before the
  request is sent until the first chunk with non-empty text arrives (None when no text
  arrived at all); for a whole response, the server's prompt processing time,
  ``Timings.ttft_s`` (the first token is sampled right after it).
- ``tpot_s`` (time per output token): the server's mean decoding time per token *after
  the first*, ``Timings.tpot_s``. None when fewer than 2 tokens were generated.
- ``tokens_per_second``: the server's ``timings.predicted_per_second``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...api import ChatCompletion, NativeCompletion, Timings

__all__ = ["InferenceResult"]


@dataclass(frozen=True)
class InferenceResult:
    """One finished generation: text, token counts, and how long it took.

    See the module docstring for the exact definitions of ``latency_s``, ``ttft_s``,
    ``tpot_s`` and ``tokens_per_second``. ``streamed`` tells which ``ttft_s`` it is
    (client-measured when True, the server's prompt time when False). ``raw`` is the
    server's response: a `NativeCompletion` (for a stream, its final chunk) or a
    `ChatCompletion`.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    latency_s: float
    ttft_s: float | None
    tpot_s: float | None
    tokens_per_second: float | None
    server_prompt_ms: float | None
    server_predicted_ms: float | None
    timings: Timings | None
    streamed: bool
    raw: Any = dataclasses.field(repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _server_figures(
    timings: Timings | None,
) -> tuple[float | None, float | None, float | None]:
    """(server TTFT s, TPOT s, tokens/s) from llama.cpp's timings, None where unknown."""
    if timings is None:
        return None, None, None
    return timings.ttft_s, timings.tpot_s, timings.predicted_per_second


def _prompt_tokens(response: NativeCompletion) -> int:
    """Every prompt token, cached ones included (``prompt_n`` alone omits the cache hits)."""
    if response.tokens_evaluated is not None:
        return response.tokens_evaluated
    timings = response.timings
    if timings is not None and timings.prompt_n is not None:
        return timings.prompt_n + (timings.cache_n or 0)
    return 0


def _result(
    response: NativeCompletion | ChatCompletion,
    text: str,
    tokens: tuple[int, int],
    finish_reason: str | None,
    latency_s: float,
    client_ttft_s: float | None,
    streamed: bool,
) -> InferenceResult:
    """The result of ``response``; ``tokens`` is (prompt tokens, completion tokens)."""
    timings = response.timings
    server_ttft, tpot, tps = _server_figures(timings)
    return InferenceResult(
        text=text,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        finish_reason=finish_reason,
        latency_s=latency_s,
        ttft_s=client_ttft_s if streamed else server_ttft,
        tpot_s=tpot,
        tokens_per_second=tps,
        server_prompt_ms=timings.prompt_ms if timings is not None else None,
        server_predicted_ms=timings.predicted_ms if timings is not None else None,
        timings=timings,
        streamed=streamed,
        raw=response,
    )


def _native_result(
    response: NativeCompletion,
    text: str,
    latency_s: float,
    client_ttft_s: float | None,
    streamed: bool,
) -> InferenceResult:
    tokens = (_prompt_tokens(response), response.tokens_predicted or 0)
    return _result(
        response, text, tokens, response.finish_reason, latency_s, client_ttft_s, streamed
    )


def _chat_result(response: ChatCompletion, latency_s: float) -> InferenceResult:
    choice = response.choices[0] if response.choices else None
    usage = response.usage
    text = (choice.message.content or "") if choice is not None else ""
    tokens = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0)
    finish_reason = choice.finish_reason if choice is not None else None
    return _result(response, text, tokens, finish_reason, latency_s, None, streamed=False)
