"""What ``chat`` and ``complete`` share: sampling options, live text, the stats line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.text import Text

from ..api import Timings
from ._output import err_console

__all__ = ["LiveText", "Stats", "sampling", "sampling_options"]

F = TypeVar("F", bound=Callable[..., Any])


def sampling_options(max_tokens_default: int | None) -> Callable[[F], F]:
    """``--max-tokens``, ``--temperature`` and ``--seed``; unset ones keep the server's default."""
    no_limit = "until the model stops" if max_tokens_default is None else str(max_tokens_default)

    def add(fn: F) -> F:
        fn = click.option(
            "--model",
            help="The model to use: a router serves many and needs one (loaded on demand).",
        )(fn)
        fn = click.option("--seed", type=int, help="Sampling seed, for repeatable output.")(fn)
        fn = click.option(
            "--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature."
        )(fn)
        return click.option(
            "--max-tokens",
            type=click.IntRange(min=-1),
            default=max_tokens_default,
            help=f"Most tokens to generate (-1: until the model stops) [default: {no_limit}].",
        )(fn)

    return add


def sampling(
    max_tokens: int | None, temperature: float | None, seed: int | None, model: str | None
) -> dict[str, Any]:
    """Keyword arguments for a generation call: what the user set, the server's defaults
    for everything else (the client's own defaults are switched off with None)."""
    return {
        # The native endpoints take no model argument; a router reads it from the body.
        "extra_body": None if model is None else {"model": model},
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "top_p": None,
        "top_k": None,
        "frequency_penalty": None,
        "presence_penalty": None,
    }


class LiveText:
    """Streamed text onto stdout as it arrives; remembers it and when the first piece came."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_ms: float | None = None
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def write(self, piece: str | None, *, aside: bool = False) -> None:
        """Print ``piece`` now; ``aside`` pieces (a model's reasoning) are dimmed, not kept."""
        if not piece:
            return
        if self.first_ms is None:
            self.first_ms = (time.perf_counter() - self.started) * 1000.0
        if not aside:
            self._parts.append(piece)
        click.echo(click.style(piece, dim=True) if aside else piece, nl=False)
        sys.stdout.flush()

    def end(self) -> None:
        """Finish the line the text is on."""
        click.echo()


@dataclass
class Stats:
    """Token counts and speeds of one generation, as the server reported them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    first_token_ms: float | None = None
    finish_reason: str | None = None

    def add_timings(self, timings: Timings | None) -> None:
        if timings is not None and timings.predicted_per_second is not None:
            self.tokens_per_second = timings.predicted_per_second

    def line(self) -> str:
        parts = []
        if self.prompt_tokens is not None:
            parts.append(f"{self.prompt_tokens} prompt tokens")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} generated")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:,.1f} tok/s")
        if self.first_token_ms is not None:
            parts.append(f"first token {self.first_token_ms:,.1f} ms")
        if self.finish_reason:
            parts.append(f"finish {self.finish_reason}")
        return " · ".join(parts)

    def show(self) -> None:
        """The stats line on stderr, dimmed: piped stdout keeps only the generated text."""
        line = self.line()
        if line:
            err_console().print(Text(f"[{line}]", style="dim"), soft_wrap=True)
