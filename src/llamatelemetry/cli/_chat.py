"""``llamatelemetry chat``: one streamed answer, or a conversation when no prompt is given
(on a terminal; piped in, standard input is the prompt)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.text import Text

from ..api import APIStatusError, LlamaCppClient
from ._client import client_command
from ._generation import LiveText, Stats, sampling, sampling_options
from ._output import err_console
from ._user_errors import CliError, print_error, print_interrupted

__all__ = ["chat"]

EXIT_COMMANDS = ("/exit", "/quit")
#: Tokens an answer may take unless --max-tokens says otherwise: a model that loops (a
#: small one at temperature 0 will) stops here, not at the end of its context.
DEFAULT_MAX_TOKENS = 512
Message = dict[str, str]


def stream_reply(client: LlamaCppClient, messages: list[Message], options: dict[str, Any]) -> str:
    """Stream the assistant's reply to stdout as it comes; show the stats line; return it."""
    live, stats = LiveText(), Stats()
    stream = client.chat.completions.create(messages=messages, stream=True, **options)
    with stream:
        try:
            for chunk in stream:
                for choice in chunk.choices[:1]:
                    live.write(choice.delta.reasoning_content, aside=True)
                    live.write(choice.delta.content)
                    stats.finish_reason = choice.finish_reason or stats.finish_reason
                if chunk.usage is not None:
                    stats.prompt_tokens = chunk.usage.prompt_tokens
                    stats.completion_tokens = chunk.usage.completion_tokens
                stats.add_timings(chunk.timings)
        finally:
            live.end()
    stats.first_token_ms = live.first_ms
    stats.show()
    return live.text


def _read_turn() -> str | None:
    """The user's next message; None when they are done (EOF, Ctrl-C, /exit)."""
    while True:
        try:
            line = click.prompt(
                click.style("you", fg="green", bold=True),
                prompt_suffix="> ",
                default="",
                show_default=False,
                err=True,  # stdout holds the answers only
            )
        except click.Abort:  # EOF or Ctrl-C at the prompt
            click.echo(err=True)
            return None
        text = str(line).strip()
        if text in EXIT_COMMANDS:
            return None
        if text:
            return text


def converse(client: LlamaCppClient, history: list[Message], options: dict[str, Any]) -> None:
    """Read, answer, repeat; every turn sends the whole conversation so far.

    Ctrl-C during an answer stops that answer (the turn is forgotten); a server error
    (say, a full context) is shown and the conversation goes on.
    """
    console = err_console()
    console.print(Text(f"Chatting with {client.base_url}. /exit or Ctrl-D to quit.", style="dim"))
    while (text := _read_turn()) is not None:
        history.append({"role": "user", "content": text})
        try:
            reply = stream_reply(client, history, options)
        except KeyboardInterrupt:
            print_interrupted(console, "answer stopped")
            history.pop()
            continue
        except APIStatusError as exc:
            print_error(console, f"HTTP {exc.status_code}: {exc.message}")
            history.pop()
            continue
        history.append({"role": "assistant", "content": reply})


def _read_prompt() -> str:
    """The whole of standard input, as one prompt."""
    text = sys.stdin.read().strip()
    if not text:
        raise CliError("no prompt: standard input was empty")
    return text


@click.command()
@click.argument("prompt", required=False)
@click.option("--system", help="A system message to start the conversation with.")
@sampling_options(max_tokens_default=DEFAULT_MAX_TOKENS)
@client_command
def chat(
    client: LlamaCppClient,
    prompt: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    model: str | None,
) -> None:
    """Chat with the server's model: the answer to PROMPT streams as it is generated.

    PROMPT "-", or no PROMPT with standard input piped or redirected: the whole input is
    the prompt (`echo question | llamatelemetry chat`), and stdout gets only the answer.
    Without PROMPT on a terminal, an interactive conversation: each turn sends the whole
    history; /exit or Ctrl-D ends it. Token counts and speed go to stderr. An answer
    ends at --max-tokens even if the model would go on (-1: no limit).
    """
    history: list[Message] = [{"role": "system", "content": system}] if system else []
    options = sampling(max_tokens, temperature, seed, model)
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = _read_prompt()
    if prompt is None:
        converse(client, history, options)
    else:
        stream_reply(client, [*history, {"role": "user", "content": prompt}], options)
