"""What a benchmark sends: synthetic prompts of about P tokens, or prompts from a JSONL file."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from ..api import AsyncLlamaCppClient
from ..api._internal import check_messages

__all__ = ["Messages", "load_prompts_file", "repeat_prompts", "synthetic_prompts"]

Messages = Sequence[Mapping[str, Any]]

#: Plain words that every tokenizer knows; random sequences of them make prompts that no
#: two requests share (so the server's prompt cache cannot skip the prefill).
WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education river light green small large early young important public bad same able "
    "make know take see come think look want give use find tell ask seem feel try leave call "
    "good new first last long great little own other old big high different local"
).split()
CALIBRATION_WORDS = 1000


def load_prompts_file(path: str | os.PathLike[str]) -> list[Messages]:
    """Chat messages from a JSONL file: one ``{"prompt": "..."}`` (a user message) or
    ``{"messages": [...]}`` object per line; blank lines are skipped.

    Raises ``ValueError`` naming the file and line of the first bad entry.
    """
    path = Path(path)
    prompts: list[Messages] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{where}: not JSON ({exc})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: expected an object with 'prompt' or 'messages'")
            if isinstance(entry.get("messages"), list):
                try:
                    prompts.append(check_messages(entry["messages"]))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where}: {exc}") from None
            elif isinstance(entry.get("prompt"), str) and entry["prompt"]:
                prompts.append([{"role": "user", "content": entry["prompt"]}])
            else:
                raise ValueError(f'{where}: expected {{"prompt": "text"}} or {{"messages": [...]}}')
    if not prompts:
        raise ValueError(f"{path}: no prompts in the file")
    return prompts


def repeat_prompts(prompts: Sequence[Messages], count: int) -> list[Messages]:
    """``count`` prompts: the given ones in order, cycled as often as needed."""
    if not prompts:
        raise ValueError("no prompts to repeat")
    return [prompts[i % len(prompts)] for i in range(count)]


async def tokens_per_word(client: AsyncLlamaCppClient, seed: int = 0) -> float:
    """How many of the server's tokens one random word of `WORDS` makes, on average."""
    rng = random.Random(seed)
    sample = " ".join(rng.choice(WORDS) for _ in range(CALIBRATION_WORDS))
    tokens = await cast(Awaitable[list[Any]], client.tokenize(sample, add_special=False))
    return max(len(tokens), 1) / CALIBRATION_WORDS


async def synthetic_prompts(
    client: AsyncLlamaCppClient, count: int, tokens: int, seed: int = 0
) -> list[Messages]:
    """``count`` distinct user prompts of about ``tokens`` tokens each (the chat template
    adds its own few), calibrated with the server's ``/tokenize``; ``seed`` makes them
    repeatable."""
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    per_word = await tokens_per_word(client, seed)
    words = max(1, round(tokens / per_word))
    rng = random.Random(seed + 1)
    return [
        [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(words))}]
        for _ in range(count)
    ]
