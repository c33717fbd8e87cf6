"""Typed responses of llama-server.

Every model allows extra fields (``extra="allow"``): a field a newer server adds is kept on
the object and in ``model_dump()``, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Literal, SupportsIndex, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BaseType",
    "FunctionCall",
    "ToolCall",
    "ParsedChatCompletion",
    "ParsedChatCompletionMessage",
    "ParsedChoice",
    "Timings",
    "PromptTokensDetails",
    "Usage",
    "ChatCompletionMessage",
    "Choice",
    "ChatCompletion",
    "ChoiceDelta",
    "ChunkChoice",
    "ChatCompletionChunk",
    "CompletionChoice",
    "Completion",
    "NativeCompletion",
    "Embedding",
    "EmbeddingsResponse",
    "ChoiceList",
]


class BaseType(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The response as plain JSON-ready data, unknown fields included."""
        return self.model_dump(mode="json", exclude_unset=True)


class Timings(BaseType):
    """llama.cpp's own measurements of one request (milliseconds, tokens per second)."""

    cache_n: int | None = None
    prompt_n: int | None = None
    prompt_ms: float | None = None
    prompt_per_token_ms: float | None = None
    prompt_per_second: float | None = None
    predicted_n: int | None = None
    predicted_ms: float | None = None
    predicted_per_token_ms: float | None = None
    predicted_per_second: float | None = None
    # Speculative decoding (a server started with a draft model or an n-gram type):
    # tokens drafted, and how many of them the model accepted.
    draft_n: int | None = None
    draft_n_accepted: int | None = None

    @property
    def draft_acceptance(self) -> float | None:
        """The share of drafted tokens the model accepted (0..1); None without drafts."""
        if not self.draft_n or self.draft_n_accepted is None:
            return None
        return self.draft_n_accepted / self.draft_n

    # The server's side of the latencies, defined here once for the engine, the load
    # generator and the telemetry alike. llama.cpp samples the first token right after the
    # prompt is processed, and its ``predicted_ms`` starts then, spanning the n - 1 decode
    # steps after the first token.

    @property
    def ttft_s(self) -> float | None:
        """Server-side time to first token, in seconds: ``prompt_ms``."""
        return None if self.prompt_ms is None else self.prompt_ms / 1000.0

    @property
    def tpot_s(self) -> float | None:
        """Server-side time per output token after the first, in seconds:
        ``predicted_ms / (predicted_n - 1)``; None with fewer than two tokens."""
        n = self.predicted_n
        if self.predicted_ms is None or n is None or n < 2:
            return None
        return self.predicted_ms / (n - 1) / 1000.0

    @property
    def e2e_s(self) -> float | None:
        """Server-side time of the whole request, in seconds: ``prompt_ms + predicted_ms``."""
        if self.prompt_ms is None or self.predicted_ms is None:
            return None
        return (self.prompt_ms + self.predicted_ms) / 1000.0


def timings_of(answer: Any) -> Timings | None:
    """llama.cpp's ``timings`` of an answer or chunk: this package's ``Timings``, or the
    plain dict a client that does not know the field keeps (the openai SDK's objects);
    None when there are none or they are not llama.cpp's shape."""
    timings = getattr(answer, "timings", None)
    if timings is None or isinstance(timings, Timings):
        return timings
    if isinstance(timings, Mapping):
        try:
            return Timings.model_validate(timings)
        except ValueError:  # pydantic's ValidationError: not llama.cpp's timings
            return None
    return None


class PromptTokensDetails(BaseType):
    cached_tokens: int | None = None


class Usage(BaseType):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class _Subscriptable(BaseType):
    """Also readable as the dict it was before it was typed: ``call["function"]["name"]``."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


class FunctionCall(_Subscriptable):
    name: str | None = None
    arguments: str | None = None  # JSON text, as the model wrote it


class ToolCall(_Subscriptable):
    """A tool call of the assistant: ``function.name`` and ``function.arguments`` (JSON
    text). In a stream's deltas, ``index`` says which call a piece belongs to."""

    id: str | None = None
    type: str = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)
    index: int | None = None


class ChatCompletionMessage(BaseType):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseType):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletion(BaseType):
    id: str | None = None
    object: str = "chat.completion"
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage | None = None
    timings: Timings | None = None


M = TypeVar("M", bound=BaseModel)


class ParsedChatCompletionMessage(ChatCompletionMessage, Generic[M]):
    """A message whose content was constrained to a model's JSON schema: ``parsed`` is the
    validated instance."""

    parsed: M | None = None


class ParsedChoice(Choice, Generic[M]):
    message: ParsedChatCompletionMessage[M]


class ParsedChatCompletion(ChatCompletion, Generic[M]):
    """What ``chat.completions.parse`` returns: ``choices[0].message.parsed``."""

    choices: list[ParsedChoice[M]]  # type: ignore[assignment]


_C = TypeVar("_C", bound=BaseType)


class ChoiceList(list[_C], Generic[_C]):
    """The ``choices`` of a stream chunk.

    The last chunk of a stream carries only usage and timings, with ``choices: []``.
    Code written for OpenAI reads ``chunk.choices[0].delta.content`` on every chunk, so
    indexing an empty list gives an empty choice instead of raising ``IndexError``;
    ``len()``, iteration and truthiness still show the list is empty.
    """

    _empty: type[_C]

    @overload
    def __getitem__(self, index: SupportsIndex) -> _C: ...
    @overload
    def __getitem__(self, index: slice) -> list[_C]: ...
    def __getitem__(self, index: Any) -> Any:
        if not self and index in (0, -1):
            return self._empty()
        return super().__getitem__(index)


class ChoiceDelta(BaseType):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(BaseType):
    index: int = 0
    delta: ChoiceDelta = Field(default_factory=ChoiceDelta)
    finish_reason: str | None = None
    logprobs: Any = None


class _ChunkChoiceList(ChoiceList[ChunkChoice]):
    _empty = ChunkChoice


class ChatCompletionChunk(BaseType):
    id: str | None = None
    object: str = "chat.completion.chunk"
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    choices: list[ChunkChoice] = Field(default_factory=_ChunkChoiceList)
    usage: Usage | None = None
    timings: Timings | None = None

    @field_validator("choices", mode="after")
    @classmethod
    def _safe_choices(cls, value: list[ChunkChoice]) -> list[ChunkChoice]:
        return _ChunkChoiceList(value)


class CompletionChoice(BaseType):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: Any = None


class _CompletionChoiceList(ChoiceList[CompletionChoice]):
    _empty = CompletionChoice


class Completion(BaseType):
    """``/v1/completions``: a whole response or, when streaming, one chunk."""

    id: str | None = None
    object: str = "text_completion"
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    choices: list[CompletionChoice] = Field(default_factory=_CompletionChoiceList)
    usage: Usage | None = None
    timings: Timings | None = None

    @field_validator("choices", mode="after")
    @classmethod
    def _safe_choices(cls, value: list[CompletionChoice]) -> list[CompletionChoice]:
        return _CompletionChoiceList(value)


class NativeCompletion(BaseType):
    """llama.cpp's native ``/completion`` and ``/infill``: a whole response or one stream chunk."""

    content: str = ""
    tokens: list[int] | None = None
    stop: bool = False
    model: str | None = None
    id_slot: int | None = None
    tokens_predicted: int | None = None
    tokens_evaluated: int | None = None
    tokens_cached: int | None = None
    truncated: bool | None = None
    stop_type: str | None = None
    stopping_word: str | None = None
    prompt: Any = None
    generation_settings: dict[str, Any] | None = None
    timings: Timings | None = None

    @property
    def finish_reason(self) -> str | None:
        """The OpenAI name for why generation ended: "stop", "length", or None while streaming."""
        if not self.stop:
            return None
        return "length" if self.stop_type == "limit" else "stop"


class Embedding(BaseType):
    index: int = 0
    object: str = "embedding"
    embedding: list[float] | str


class EmbeddingsResponse(BaseType):
    object: Literal["list"] | str = "list"
    model: str | None = None
    data: list[Embedding]
    usage: Usage | None = None
