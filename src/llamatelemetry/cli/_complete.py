"""``llamatelemetry complete``: llama.cpp's native ``/completion``, streamed or whole."""

from __future__ import annotations

from typing import Any, cast

import click

from ..api import LlamaCppClient, NativeCompletion, Stream
from ._client import client_command
from ._generation import LiveText, Stats, sampling, sampling_options
from ._output import json_option, print_json, working
from ._user_errors import CliError

__all__ = ["complete"]


def _as_json(response: NativeCompletion) -> dict[str, Any]:
    return {
        "content": response.content,
        "finish_reason": response.finish_reason,
        "stop_type": response.stop_type,
        "prompt_tokens": response.tokens_evaluated,
        "completion_tokens": response.tokens_predicted,
        # prompt tokens reused from the slot's cache (tokens_cached counts the whole slot)
        "cached_tokens": response.timings.cache_n if response.timings else None,
        "model": response.model,
        "timings": response.timings.to_dict() if response.timings else None,
    }


def _stats(response: NativeCompletion) -> Stats:
    stats = Stats(response.tokens_evaluated, response.tokens_predicted)
    stats.add_timings(response.timings)
    stats.finish_reason = response.finish_reason
    return stats


def _stream(chunks: Stream[NativeCompletion]) -> None:
    live = LiveText()
    last: NativeCompletion | None = None
    with chunks:
        try:
            for last in chunks:
                live.write(last.content)
        finally:
            live.end()
    if last is not None:  # the final chunk carries the counts and timings
        stats = _stats(last)
        stats.first_token_ms = live.first_ms
        stats.show()


@click.command()
@click.argument("prompt")
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Print the text as it is generated [default: stream, except with --json].",
)
@sampling_options(max_tokens_default=128)
@json_option
@client_command
def complete(
    client: LlamaCppClient,
    prompt: str,
    stream: bool | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    model: str | None,
    as_json: bool,
) -> None:
    """Continue PROMPT as plain text (llama.cpp's native /completion, no chat template)."""
    if as_json and stream:
        raise CliError("--json prints one whole response; drop --stream")
    stream = not as_json if stream is None else stream
    options = sampling(max_tokens, temperature, seed, model)
    if stream:
        _stream(cast(Stream[NativeCompletion], client.complete(prompt, stream=True, **options)))
        return
    with working("Generating…"):
        response = cast(NativeCompletion, client.complete(prompt, **options))
    if as_json:
        print_json(_as_json(response))
        return
    click.echo(response.content)
    _stats(response).show()
