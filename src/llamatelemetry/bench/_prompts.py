"""What a benchmark sends: synthetic prompts of about P tokens, or prompts from a JSONL file.

A benchmark must measure the server, not its prompt cache: a `PromptSource` hands out
prompts that no earlier request of the run (a warm-up, another level) has sent, and
`SyntheticPrompts` without a seed differ from run to run too, so a second run against the
same live server finds nothing cached either. A shared prefix (``shared_prefix_tokens``)
puts the cache in the measurement on purpose.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from ..api import AsyncLlamaCppClient
from ..api._internal import check_messages

__all__ = [
    "FilePrompts",
    "Messages",
    "PromptSource",
    "SyntheticPrompts",
    "load_prompts_file",
    "repeat_prompts",
    "synthetic_prompts",
    "template_prefix_tokens",
]

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
    return (await synthetic_source(client, tokens, seed)).take(count)


class PromptSource(Protocol):
    """Where a run's prompts come from: each `take` continues where the last one stopped."""

    def take(self, count: int) -> list[Messages]: ...

    def describe(self) -> dict[str, Any]: ...


class SyntheticPrompts:
    """Prompts of random words, about ``words`` each, none sent twice in a run; ``seed``
    (None: a fresh one per source, so runs differ) makes a run's sequence repeatable. With
    ``shared_words``, every prompt starts with the same words (a prefix the server's
    cache may reuse), then its own."""

    def __init__(self, words: int, seed: int | None = None, shared_words: int = 0) -> None:
        if words < 1:
            raise ValueError(f"words must be >= 1, got {words}")
        if shared_words < 0:
            raise ValueError(f"shared_words must be >= 0, got {shared_words}")
        self.seed = secrets.randbits(63) if seed is None else seed
        self.seeded = seed is not None
        self._rng = random.Random(self.seed)
        self._words = words
        self._prefix = " ".join(self._rng.choice(WORDS) for _ in range(shared_words))
        # The first words go round a shuffled list: no two prompts of a run begin alike
        # (until hundreds have been sent), so the cache finds no shared start by chance.
        self._firsts = sorted(set(WORDS))
        self._rng.shuffle(self._firsts)
        self._seconds = list(self._firsts)
        self._rng.shuffle(self._seconds)
        self.shared_tokens = 0  # the shared prefix in the server's tokens, once measured
        self.taken = 0

    @property
    def shared_text(self) -> str:
        """What every prompt starts with (empty without a shared prefix)."""
        return f"{self._prefix}\n\n" if self._prefix else ""

    def take(self, count: int) -> list[Messages]:
        prompts: list[Messages] = []
        for _ in range(count):
            # Two words no other prompt of the first ~20,000 begins with.
            cycle = len(self._firsts)
            first = self._firsts[self.taken % cycle]
            second = self._seconds[(self.taken // cycle) % cycle]
            self.taken += 1
            rest = (self._rng.choice(WORDS) for _ in range(self._words - 2))
            own = " ".join((first, second, *rest))
            text = self.shared_text + own
            prompts.append([{"role": "user", "content": text}])
        return prompts

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "seed": self.seed if self.seeded else None}


class FilePrompts:
    """The prompts of a file (or any list), in order, cycled: a run longer than the list
    sends some twice, and the server's cache may then serve them (the report says so)."""

    def __init__(self, prompts: Sequence[Messages], name: str | None = None) -> None:
        if not prompts:
            raise ValueError("no prompts")
        self._prompts = list(prompts)
        self._name = name
        self.taken = 0

    def take(self, count: int) -> list[Messages]:
        start = self.taken
        self.taken += count
        return [self._prompts[(start + i) % len(self._prompts)] for i in range(count)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": self._name, "prompts": len(self._prompts)}


async def synthetic_source(
    client: AsyncLlamaCppClient, tokens: int, seed: int | None = None, shared_tokens: int = 0
) -> SyntheticPrompts:
    """A `SyntheticPrompts` of about ``tokens`` tokens a prompt (``shared_tokens`` of them
    the same in every prompt), calibrated with the server's ``/tokenize``."""
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    per_word = await tokens_per_word(client, seed or 0)
    words, shared = max(2, round(tokens / per_word)), round(shared_tokens / per_word)
    source = SyntheticPrompts(words, seed, shared)
    if source.shared_text:
        measured = await cast(
            Awaitable[list[Any]], client.tokenize(source.shared_text, add_special=False)
        )
        source.shared_tokens = len(measured)
    return source


MARKER = "\u2063llamatelemetry\u2063"


async def template_prefix_tokens(client: AsyncLlamaCppClient) -> int | None:
    """How many tokens the chat template puts before a user's text (its fixed prefix: a
    system prompt, role markers): what the server's cache may serve to any request without
    the benchmark measuring its cache. None when the server cannot tell."""
    try:
        text = await cast(
            Awaitable[str], client.apply_template([{"role": "user", "content": MARKER}])
        )
        before = text.split(MARKER, 1)[0]
        if not before:
            return 0
        tokens = await cast(Awaitable[list[Any]], client.tokenize(before, add_special=True))
    except Exception:  # noqa: BLE001 - an older server or a proxy: no warning then
        return None
    return len(tokens)
