"""What a benchmark sends: synthetic prompts of about P tokens, or prompts from a JSONL file.

A benchmark must measure the server, not its prompt cache: a `PromptSource` hands out
prompts that no earlier request of the run (a warm-up, another level) has sent, and
`SyntheticPrompts` without a seed differ from run to run too, so a second run against the
same live server finds nothing cached either. A shared prefix (``shared_prefix_tokens``)
puts the cache in the measurement on purpose.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Union, cast

from ..api import AsyncLlamaCppClient
from ..api._internal import check_messages
from ._jsonfile import loads, read_json, show_number, undecodable, unsendable
from ._phase import CALIBRATION, phase

__all__ = [
    "FilePrompts",
    "Item",
    "Prompt",
    "messages_of",
    "Messages",
    "PromptSource",
    "SyntheticPrompts",
    "load_prompts_file",
    "repeat_prompts",
    "synthetic_prompts",
    "template_prefix_tokens",
    "template_tokens",
]

Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Prompt:
    """A request of a workload that says more than its messages: its own output length
    (``max_tokens``), and in a trace when it was sent (``at``, seconds from the start).
    A dataset that gives only lengths gives ``tokens`` (the prompt's length as the server
    counts it) and no messages: `with_lengths_made` makes its text before a run."""

    messages: Messages
    max_tokens: int | None = None
    at: float | None = None
    tokens: int | None = None


Item = Union[Messages, Prompt]  # noqa: UP007 - a runtime alias


def messages_of(item: Item) -> Messages:
    return item.messages if isinstance(item, Prompt) else item


#: ShareGPT's speakers, as chat roles.
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                   "assistant": "assistant"}  # fmt: skip
CHARS_PER_TOKEN = 4  # a ShareGPT answer's length in tokens, roughly, without a tokenizer

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
#: The most tokens a request may ask for: llama.cpp reads the count into an int32.
MAX_TOKENS = 2**31 - 1


def load_prompts_file(path: str | os.PathLike[str]) -> list[Item]:
    """The requests of a file, in the shapes datasets come in:

    - JSONL, one object per line: ``{"prompt": "..."}`` (a user message), ``{"messages":
      [...]}``, or a ShareGPT ``{"conversations": [...]}``; each optionally with its output
      length (``max_tokens``, or as other tools name it: ``output_tokens``, ``output_len``,
      ``output_length``, ``output_tokens_count``, ``max_completion_tokens``) and, for a
      trace, the ``timestamp`` (seconds) it was sent at;
    - a ShareGPT JSON array of ``{"conversations": [{"from": "human", "value": ...}, ...]}``,
      each sent up to its first human turn, its answer's length (about 4 characters a
      token) as its ``max_tokens``;
    - Parquet (``.parquet``, with the ``parquet`` extra): one request a row, its columns
      as a JSONL line's fields.

    Blank lines are skipped; UTF-8, with or without a byte order mark. The whole file is
    checked here, so that no request of a run fails for what it says: raises
    ``ValueError`` naming the file and line (or entry, or row), and the field, of the
    first bad one.
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return _parquet(path)
    try:
        with path.open(encoding="utf-8-sig") as fh:
            head = fh.read(1024).lstrip()
        if head.startswith("["):
            return _sharegpt(path)
        prompts: list[Item] = []
        with path.open(encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    found = _entry(loads(line, f"{path}:{number}"), f"{path}:{number}")
                    if found is not None:
                        prompts.append(found)
    except UnicodeDecodeError:
        raise ValueError(undecodable(path)) from None
    if not prompts:
        raise ValueError(f"{path}: no prompts in the file")
    return prompts


def _parquet(path: Path) -> list[Item]:
    """A Parquet file's rows, each read as a JSONL line is."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ValueError(
            f"{path}: reading Parquet needs pyarrow: pip install 'llamatelemetry[parquet]'"
        ) from None
    try:
        rows = parquet.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: not a Parquet file this can read ({exc})") from None
    prompts = [
        found
        for number, row in enumerate(rows, 1)
        if (found := _entry(row, f"{path}: row {number}")) is not None
    ]
    if not prompts:
        raise ValueError(f"{path}: no prompts in the file")
    return prompts


def _entry(entry: Any, where: str) -> Item | None:
    """One line's (or row's) request; ``ValueError`` starting with ``where`` for a bad
    one; None for a ShareGPT conversation with no question in it."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with 'prompt', 'messages' or "
                         "'conversations'")  # fmt: skip
    if isinstance(entry.get("messages"), list):
        messages: Messages = entry["messages"]
    elif isinstance(entry.get("prompt"), str) and entry["prompt"]:
        messages = [{"role": "user", "content": entry["prompt"]}]
    elif isinstance(entry.get("conversations"), list):
        found = _conversation(entry["conversations"], where)
        if found is None or _output_length(entry, where) is None:
            return found
        return Prompt(messages_of(found), _output_length(entry, where))
    elif (length := _prompt_length(entry, where)) is not None:
        return Prompt([], *_lengths_and_time(entry, where), tokens=length)
    else:
        raise ValueError(f'{where}: expected {{"prompt": "text"}}, {{"messages": [...]}}, '
                         '{"conversations": [...]} or a prompt length ("prompt_tokens": '
                         'N)')  # fmt: skip
    return _item(_sendable(messages, where), entry, where)


def _sendable(messages: Any, where: str) -> Messages:
    """Messages a request can carry as they are, else ``ValueError`` saying which field."""
    problem = unsendable(messages, "messages")
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    try:
        return check_messages(messages)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


#: What datasets and other tools call a request's output length, in the order looked for.
OUTPUT_LENGTH_FIELDS = (
    "max_tokens", "output_tokens", "output_len", "output_length", "output_tokens_count",
    "max_completion_tokens",
)  # fmt: skip


def _length(entry: Mapping[str, Any], names: Sequence[str], where: str) -> int | None:
    """A token count the entry gives under the first of ``names`` it has (None: none)."""
    for name in names:
        value = entry.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
            raise ValueError(
                f"{where}: {name} must be a whole number of 1 to {MAX_TOKENS}, "
                f"got {show_number(value)}"
            )
        return value
    return None


def _output_length(entry: Mapping[str, Any], where: str) -> int | None:
    """The entry's output length, under the first of `OUTPUT_LENGTH_FIELDS` it has."""
    return _length(entry, OUTPUT_LENGTH_FIELDS, where)


#: What datasets of lengths alone call a prompt's length (tokens), in the order looked for.
PROMPT_LENGTH_FIELDS = (
    "prompt_tokens", "input_tokens", "input_length", "input_len", "prompt_len",
    "prompt_length",
)  # fmt: skip


def _prompt_length(entry: Mapping[str, Any], where: str) -> int | None:
    """A line of lengths alone: its prompt's length, under the first of
    `PROMPT_LENGTH_FIELDS` it has (None: a line with no such field)."""
    return _length(entry, PROMPT_LENGTH_FIELDS, where)


def _lengths_and_time(entry: Mapping[str, Any], where: str) -> tuple[int | None, float | None]:
    max_tokens, at = _output_length(entry, where), entry.get("timestamp")
    if at is not None and (
        isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at < 1e9
    ):
        raise ValueError(f"{where}: timestamp must be seconds >= 0, got {show_number(at)}")
    return max_tokens, None if at is None else float(at)


def _item(messages: Messages, entry: Mapping[str, Any], where: str) -> Item:
    max_tokens, at = _lengths_and_time(entry, where)
    if max_tokens is None and at is None:
        return messages
    return Prompt(messages, max_tokens, at)


async def with_lengths_made(
    client: AsyncLlamaCppClient, items: Sequence[Item], seed: int | None = None
) -> list[Item]:
    """``items`` with a text made for each prompt a dataset gave only as a length: random
    words (no two prompts beginning alike) that the server counts, its chat template
    included, as about that many tokens; calibrated once with its ``/apply-template`` and
    ``/tokenize``. ``items`` as they are when none is a length alone."""
    if not any(_length_only(item) for item in items):
        return list(items)
    with phase(CALIBRATION):
        per_word = await tokens_per_word(client, seed or 0)
        sample = " ".join(random.Random(seed or 0).choice(WORDS) for _ in range(16))
        template = await template_tokens(client, sample) or 0
    rng = random.Random(seed)
    firsts = sorted(set(WORDS))
    rng.shuffle(firsts)
    made: list[Item] = []
    for number, item in enumerate(items):
        if not _length_only(item):
            made.append(item)
            continue
        assert isinstance(item, Prompt) and item.tokens is not None
        words = max(2, round((item.tokens - template) / per_word))
        first = f"{firsts[number % len(firsts)]} {firsts[(number // len(firsts)) % len(firsts)]}"
        text = " ".join([first, *(rng.choice(WORDS) for _ in range(words - 2))])
        made.append(replace(item, messages=[{"role": "user", "content": text}]))
    return made


def _length_only(item: Item) -> bool:
    """Whether ``item`` is a prompt a dataset gave as a length alone (no text yet)."""
    return isinstance(item, Prompt) and item.tokens is not None and not item.messages


def _sharegpt(path: Path) -> list[Item]:
    data = read_json(path)
    prompts: list[Item] = []
    for number, entry in enumerate(data if isinstance(data, list) else [], 1):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise ValueError(f"{path}: entry {number} has no 'conversations' list")
        found = _conversation(turns, f"{path}: entry {number}")
        if found is not None:
            prompts.append(found)
    if not prompts:
        raise ValueError(f"{path}: no conversations with a human turn in the file")
    return prompts


def _conversation(turns: list[Any], where: str) -> Prompt | None:
    """A ShareGPT conversation up to its first human turn, with its answer's length (about
    `CHARS_PER_TOKEN` characters a token) as its output length; None without a question."""
    messages: list[dict[str, Any]] = []
    answer: str | None = None
    for turn in turns:
        role = _SHAREGPT_ROLES.get(str(turn.get("from"))) if isinstance(turn, dict) else None
        text = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(text, str):
            raise ValueError(f"{where} has a turn that is not "
                             '{"from": "human"|"gpt"|"system", "value": "..."}')  # fmt: skip
        if any(m["role"] == "user" for m in messages):
            answer = text if role == "assistant" else None
            break
        messages.append({"role": role, "content": text})
    if not any(m["role"] == "user" for m in messages):
        return None  # a conversation without a question: nothing to send
    length = None if not answer else max(1, round(len(answer) / CHARS_PER_TOKEN))
    return Prompt(_sendable(messages, where), length)


def repeat_prompts(prompts: Sequence[Messages], count: int) -> list[Messages]:
    """``count`` prompts: the given ones in order, cycled as often as needed."""
    if not prompts:
        raise ValueError("no prompts to repeat")
    return [messages_of(p) for p in FilePrompts(prompts).take(count)]


async def tokens_per_word(client: AsyncLlamaCppClient, seed: int = 0) -> float:
    """How many of the server's tokens one random word of `WORDS` makes, on average."""
    rng = random.Random(seed)
    sample = " ".join(rng.choice(WORDS) for _ in range(CALIBRATION_WORDS))
    tokens = await cast(Awaitable[list[Any]], client.tokenize(sample, add_special=False))
    return max(len(tokens), 1) / CALIBRATION_WORDS


async def template_tokens(client: AsyncLlamaCppClient, sample: str) -> int | None:
    """How many tokens the server's chat template adds around a user's message (a system
    prompt, role markers, the assistant's cue): what the server counts beyond the text of
    ``sample``. None when the server cannot tell (no ``/apply-template``)."""
    try:
        text = await cast(
            Awaitable[str], client.apply_template([{"role": "user", "content": sample}])
        )
        whole = await cast(Awaitable[list[Any]], client.tokenize(text, add_special=True))
        alone = await cast(Awaitable[list[Any]], client.tokenize(sample, add_special=False))
    except Exception:  # noqa: BLE001 - an older server or a proxy: the text alone, then
        return None
    return max(len(whole) - len(alone), 0)


async def synthetic_prompts(
    client: AsyncLlamaCppClient, count: int, tokens: int, seed: int = 0
) -> list[Messages]:
    """``count`` distinct user prompts that the server counts as about ``tokens`` tokens
    each, its chat template's included, calibrated with the server's ``/apply-template``
    and ``/tokenize``; ``seed`` makes them repeatable."""
    return [messages_of(p) for p in (await synthetic_source(client, tokens, seed)).take(count)]


class PromptSource(Protocol):
    """Where a run's prompts come from: each `take` continues where the last one stopped."""

    def take(self, count: int) -> list[Item]: ...

    def describe(self) -> dict[str, Any]: ...


class SyntheticPrompts:
    """Prompts of random words, about ``words`` each, none sent twice in a run; ``seed``
    (None: a fresh one per source, so runs differ) makes a run's sequence repeatable. With
    ``shared_words``, every prompt starts with the same words (a prefix the server's
    cache may reuse), then its own. With a ``spread``, each prompt's length is drawn
    within ±spread of the whole request's, ``template_words`` (what the chat template
    adds, in words) included."""

    def __init__(
        self,
        words: int,
        seed: int | None = None,
        shared_words: int = 0,
        *,
        spread: float = 0.0,
        max_tokens: int | None = None,
        template_words: float = 0.0,
    ) -> None:
        if words < 1:
            raise ValueError(f"words must be >= 1, got {words}")
        if shared_words < 0:
            raise ValueError(f"shared_words must be >= 0, got {shared_words}")
        if not 0.0 <= spread < 1.0:
            raise ValueError(f"spread must be within [0, 1), got {spread}")
        # Lengths drawn uniformly within ±spread of the asked-for ones, each request its own.
        self._spread = spread
        self._max_tokens = max_tokens
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
        self._template_words = template_words
        self.shared_tokens = 0  # the shared prefix in the server's tokens, once measured
        # Once calibrated: the length asked for (the server's count), what the chat
        # template adds to it, and the fewest a prompt can have (the template, two words).
        self.tokens: int | None = None
        self.template_tokens: int | None = None
        self.fewest_tokens: int | None = None
        self.taken = 0

    @property
    def shared_text(self) -> str:
        """What every prompt starts with (empty without a shared prefix)."""
        return f"{self._prefix}\n\n" if self._prefix else ""

    def _length(self, mean: int) -> int:
        if not self._spread:
            return mean
        return max(1, round(mean * self._rng.uniform(1 - self._spread, 1 + self._spread)))

    def take(self, count: int) -> list[Item]:
        prompts: list[Item] = []
        for _ in range(count):
            # Two words no other prompt of the first ~20,000 begins with.
            cycle = len(self._firsts)
            first = self._firsts[self.taken % cycle]
            second = self._seconds[(self.taken // cycle) % cycle]
            self.taken += 1
            if self._spread and self._template_words:  # the whole request's length varies
                whole = self._words + self._template_words
                drawn = whole * self._rng.uniform(1 - self._spread, 1 + self._spread)
                words = max(2, round(drawn - self._template_words))
            else:
                words = max(2, self._length(self._words))
            rest = (self._rng.choice(WORDS) for _ in range(words - 2))
            own = " ".join((first, second, *rest))
            messages = [{"role": "user", "content": self.shared_text + own}]
            if self._spread and self._max_tokens is not None:
                prompts.append(Prompt(messages, self._length(self._max_tokens)))
            else:
                prompts.append(messages)
        return prompts

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "seed": self.seed if self.seeded else None,
            "tokens": self.tokens,  # per prompt, as the server counts them
            "template_tokens": self.template_tokens,
            "fewest_tokens": self.fewest_tokens,
        }


class FilePrompts:
    """The prompts of a file (or any list), in order, cycled: a run longer than the list
    sends some twice, and the server's cache may then serve them (the report says so)."""

    def __init__(self, prompts: Sequence[Item], name: str | None = None) -> None:
        if not prompts:
            raise ValueError("no prompts")
        self._prompts = list(prompts)
        self._name = name
        self.taken = 0

    @property
    def timed(self) -> bool:
        """A trace: every request says when it was sent."""
        return all(isinstance(p, Prompt) and p.at is not None for p in self._prompts)

    @property
    def span(self) -> int:
        return len(self._prompts)

    def take(self, count: int) -> list[Item]:
        start = self.taken
        self.taken += count
        return [self._prompts[(start + i) % len(self._prompts)] for i in range(count)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": self._name, "prompts": len(self._prompts)}


async def synthetic_source(
    client: AsyncLlamaCppClient,
    tokens: int,
    seed: int | None = None,
    shared_tokens: int = 0,
    *,
    spread: float = 0.0,
    max_tokens: int | None = None,
) -> SyntheticPrompts:
    """A `SyntheticPrompts` whose requests the server counts as about ``tokens`` prompt
    tokens, the chat template's own included (what a capacity plan counts: the server
    processes and caches them all), plus ``shared_tokens`` that every prompt starts with;
    calibrated with the server's ``/apply-template`` and ``/tokenize``. A server that
    cannot apply its template gets prompts of ``tokens`` tokens of text."""
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    with phase(CALIBRATION):
        return await _calibrated(client, tokens, seed, shared_tokens, spread, max_tokens)


async def _calibrated(
    client: AsyncLlamaCppClient,
    tokens: int,
    seed: int | None,
    shared_tokens: int,
    spread: float,
    max_tokens: int | None,
) -> SyntheticPrompts:
    per_word = await tokens_per_word(client, seed or 0)
    rng = random.Random(seed or 0)
    sample = " ".join(rng.choice(WORDS) for _ in range(max(2, round(tokens / per_word))))
    template = await template_tokens(client, sample)
    words = max(2, round((tokens - (template or 0)) / per_word))
    shared = round(shared_tokens / per_word)

    def source_of(shared: int) -> SyntheticPrompts:
        found = SyntheticPrompts(
            words, seed, shared, spread=spread, max_tokens=max_tokens,
            template_words=(template or 0) / per_word,
        )  # fmt: skip
        found.tokens, found.template_tokens = tokens, template
        found.fewest_tokens = (template or 0) + round(2 * per_word)
        return found

    source = source_of(shared)
    while source.shared_text:
        measured = await cast(
            Awaitable[list[Any]], client.tokenize(source.shared_text, add_special=False)
        )
        source.shared_tokens = len(measured)
        # Words are about per_word tokens each: grow the prefix until it holds the tokens
        # asked for (a word is at least a token, so this ends by then).
        if source.shared_tokens >= shared_tokens or shared >= shared_tokens:
            break
        shared += max(1, int((shared_tokens - source.shared_tokens) / per_word))
        source = source_of(shared)
    return source


MARKER = "\u2063llamatelemetry\u2063"


async def template_prefix_tokens(client: AsyncLlamaCppClient) -> int | None:
    """How many tokens the chat template puts before a user's text (its fixed prefix: a
    system prompt, role markers): what the server's cache may serve to any request without
    the benchmark measuring its cache. None when the server cannot tell."""
    with phase(CALIBRATION):
        return await _prefix_tokens(client)


async def _prefix_tokens(client: AsyncLlamaCppClient) -> int | None:
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
