# The static face of AsyncLlamaCppClient. At run time the async client reuses the sync
# client's resources and convenience methods (they validate, then return the coroutine of
# the async transport), so their declared return types are the sync ones; this stub tells
# type checkers what awaiting them gives. Parameters and their checks are the sync
# client's: see resources/*.py for each one's full signature.

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx
from prometheus_client.samples import Sample
from typing_extensions import Self

from ._base import BaseClient, Call, Flow, TimeoutTypes
from ._streaming import AsyncStream
from ._types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    EmbeddingsResponse,
    NativeCompletion,
)

__all__ = ["AsyncLlamaCppClient"]

_Messages = Sequence[Mapping[str, Any]]
_Dicts = list[dict[str, Any]]
_T = TypeVar("_T")

class AsyncChatCompletions:
    @overload
    async def create(
        self, messages: _Messages, *args: Any, stream: Literal[False] = ..., **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    async def create(
        self, messages: _Messages, *args: Any, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def create(
        self, messages: _Messages, *args: Any, stream: bool, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...

class AsyncChat:
    completions: AsyncChatCompletions

class AsyncCompletions:
    @overload
    async def create(
        self, prompt: str | Sequence[Any], *args: Any, stream: Literal[False] = ..., **kwargs: Any
    ) -> Completion: ...
    @overload
    async def create(
        self, prompt: str | Sequence[Any], *args: Any, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[Completion]: ...
    @overload
    async def create(
        self, prompt: str | Sequence[Any], *args: Any, stream: bool, **kwargs: Any
    ) -> Completion | AsyncStream[Completion]: ...

class AsyncEmbeddings:
    async def create(
        self,
        input: str | Sequence[str] | Sequence[int],
        model: str | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        *,
        timeout: TimeoutTypes = None,
        total_timeout: float | None = None,
        **extra: Any,
    ) -> EmbeddingsResponse: ...

class AsyncModels:
    async def list(self) -> list[dict[str, Any]]: ...

class AsyncProps:
    async def get(self) -> dict[str, Any]: ...

class AsyncSlots:
    async def list(self) -> list[dict[str, Any]]: ...
    async def save(self, slot_id: int, filename: str) -> dict[str, Any]: ...
    async def restore(self, slot_id: int, filename: str) -> dict[str, Any]: ...
    async def erase(self, slot_id: int) -> dict[str, Any]: ...

class AsyncLora:
    async def list(self) -> _Dicts: ...
    async def apply(self, path: str, scale: float = 1.0) -> _Dicts: ...
    async def set_scales(self, scales: Mapping[int, float]) -> _Dicts: ...

class AsyncHealth:
    async def check(self, timeout: float | None = None) -> dict[str, Any]: ...
    async def wait_until_ready(
        self, timeout: float = 60.0, interval: float = 0.1
    ) -> dict[str, Any]: ...

class AsyncMetrics:
    async def get(self) -> str: ...
    async def parse(self) -> list[Sample]: ...
    async def values(self) -> dict[str, float]: ...

class AsyncLlamaCppClient(BaseClient):
    _http: httpx.AsyncClient
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> None: ...
    async def _execute(self, call: Call[_T]) -> _T: ...  # type: ignore[override]
    async def _run(self, flow: Flow[_T]) -> _T: ...  # type: ignore[override]
    @property
    def chat(self) -> AsyncChat: ...  # type: ignore[override]
    @property
    def completions(self) -> AsyncCompletions: ...  # type: ignore[override]
    @property
    def embeddings(self) -> AsyncEmbeddings: ...  # type: ignore[override]
    @property
    def models(self) -> AsyncModels: ...  # type: ignore[override]
    @property
    def props(self) -> AsyncProps: ...  # type: ignore[override]
    @property
    def slots(self) -> AsyncSlots: ...  # type: ignore[override]
    @property
    def lora(self) -> AsyncLora: ...  # type: ignore[override]
    @property
    def health(self) -> AsyncHealth: ...  # type: ignore[override]
    @property
    def metrics(self) -> AsyncMetrics: ...  # type: ignore[override]
    @overload
    async def chat_completion(
        self, *, stream: Literal[False] = ..., **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    async def chat_completion(
        self, *, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def chat_completion(
        self, *, stream: bool, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def embed(self, text: str) -> list[float]: ...  # type: ignore[overload-overlap]
    @overload
    async def embed(self, text: Sequence[str]) -> list[list[float]]: ...
    async def tokenize(
        self,
        text: str,
        add_special: bool = True,
        with_pieces: bool = False,
        *,
        parse_special: bool = True,
    ) -> list[Any]: ...
    async def detokenize(self, ids: Sequence[int]) -> str: ...
    async def apply_template(self, messages: _Messages) -> str: ...
    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
    ) -> list[dict[str, Any]]: ...
    @overload
    async def complete(
        self, prompt: str | Sequence[Any], *args: Any, stream: Literal[False] = ..., **kwargs: Any
    ) -> NativeCompletion: ...
    @overload
    async def complete(
        self, prompt: str | Sequence[Any], *args: Any, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[NativeCompletion]: ...
    @overload
    async def infill(
        self,
        input_prefix: str,
        input_suffix: str = "",
        *,
        stream: Literal[False] = ...,
        **kwargs: Any,
    ) -> NativeCompletion: ...
    @overload
    async def infill(
        self, input_prefix: str, input_suffix: str = "", *, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[NativeCompletion]: ...
    async def aclose(self) -> None: ...
    @property
    def is_closed(self) -> bool: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
