"""The seam between a client and what runs on it: the bottom of the api layer.

Endpoints are described, not performed. A resource method validates its arguments and
returns a :class:`Call` (one request: method, path, body, how to parse the answer, how it
streams) or a :data:`Flow` (a generator that yields Calls and :class:`Sleep` steps and
receives their results, for operations of several requests). A client only runs them.

What the rest of the package needs of a client is :class:`Caller` (or its async twin
:class:`AsyncCaller`): resources describe calls and hand them to ``execute_call`` or
``run_flow``; telemetry wraps ``execute_call`` and sends through ``send_call``, so a call is
recorded once; the server's engine runs the calls it builds. What telemetry needs of a
stream a call returned is :class:`ObservableStream`: an observer told of every chunk and of
the end (:class:`StreamObserver`), and the stream's :class:`Accumulator`.

These names are public within the package, not to users. Nothing here imports another
module of the client, so every module (resources, transports, telemetry) can stand on it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from ._config import TimeoutTypes

__all__ = [
    "Accumulator",
    "AsyncCaller",
    "Call",
    "Caller",
    "Flow",
    "ObservableStream",
    "Sleep",
    "StreamFormat",
    "StreamObserver",
]

T = TypeVar("T")


class Accumulator(Protocol):
    """Folds a stream's chunks into the whole answer (``get_final_completion()``)."""

    def add(self, chunk: Any) -> None: ...

    def completion(self) -> Any:
        """What the chunks added so far make: the whole answer once all have been added."""
        ...


@dataclass(frozen=True, slots=True)
class StreamFormat(Generic[T]):
    """How one endpoint streams: the chunk type, and how the stream says it is complete.

    OpenAI-style endpoints end with ``data: [DONE]``; llama.cpp's native endpoints end with
    a chunk whose ``stop`` is true.
    """

    parse: Callable[[Any], T]
    ends_with_done: bool = True
    # Typed-event streams (Responses, Messages) end with an event of one of these types.
    last_types: frozenset[str] = frozenset()
    # Folds the chunks into the whole answer, for get_final_completion() (chat streams).
    accumulator: Callable[[], Accumulator] | None = None
    # The same type as ``parse``, validated straight from the event's bytes: a chunk is
    # parsed once, by pydantic's JSON parser, instead of by json.loads and then validated.
    # Anything it refuses goes the way of ``parse``, which names what is wrong.
    parse_json: Callable[[bytes], T] | None = None

    @classmethod
    def of(cls, model: type[BaseModel], **options: Any) -> StreamFormat[Any]:
        """The format of a stream of ``model``s, with its fast path when it ends with
        ``[DONE]`` (whose end a parsed chunk never has to tell)."""
        fast = options.get("ends_with_done", True) and not options.get("last_types")
        parse: Callable[[Any], Any] = model.model_validate
        return cls(
            parse,
            parse_json=model.__pydantic_validator__.validate_json if fast else None,
            **options,
        )


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP request and what its answer becomes."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: Mapping[str, Any] | None = None
    text: bool = False  # the answer is text (Prometheus), not JSON
    stream: StreamFormat[Any] | None = None
    ok_statuses: frozenset[int] = frozenset()  # error statuses that are an answer, not a failure
    retries: int | None = None  # None: the client's max_retries
    timeout: TimeoutTypes | None = None
    headers: Mapping[str, str] | None = None
    operation: str = "http"  # what telemetry calls it: chat, embeddings, tokenize, ...
    total_timeout: float | None = None  # None: the client's total_timeout
    # The rest of a multi-request operation (a model load and the polls that wait for it):
    # a flow run on the answer, inside the same call, so telemetry sees one operation.
    follow: Callable[[Any], Flow[Any]] | None = None
    # The body's fields the client filled in from its defaults, not the caller: telemetry
    # marks them (``llamatelemetry.request.defaulted``).
    defaulted: tuple[str, ...] = ()

    def with_headers(self, headers: Mapping[str, str]) -> Call[T]:
        """The same call with these headers (``dataclasses.replace`` at a third of the
        cost: telemetry does this on every call)."""
        return Call(
            self.method, self.path, self.parse, self.body, self.params, self.text,
            self.stream, self.ok_statuses, self.retries, self.timeout, headers,
            self.operation, self.total_timeout, self.follow, self.defaulted,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sleep:
    """A pause between a flow's steps (cut short at the flow's deadline)."""

    seconds: float


Flow = Generator[Call[Any] | Sleep, Any, T]


class Caller(Protocol):
    """What resources, telemetry and the server's engine need of a (synchronous) client.

    - ``execute_call``: run one call as an operation of its own. Every call a resource
      describes goes through it: it is the method telemetry wraps (an instrumented client
      overrides it; the instrumentor patches it on the class).
    - ``send_call``: the transport itself, with no telemetry: what a wrapped
      ``execute_call`` sends through, and what telemetry's own questions to the server use.
    - ``run_flow``: drive a multi-step operation; each Call it yields is run by
      ``execute_call``. ``total_timeout`` bounds its steps together (default: the client's).
    - ``base_url`` and ``total_timeout``: where the server is, and the client's wall-clock
      limit on a call.

    The answer of a streaming call is a stream (an :class:`ObservableStream`).
    """

    @property
    def base_url(self) -> str: ...

    @property
    def total_timeout(self) -> float | None: ...

    def execute_call(self, call: Call[T]) -> T: ...

    def send_call(self, call: Call[T]) -> T: ...

    def run_flow(self, flow: Flow[T], total_timeout: float | None = None) -> T: ...


class AsyncCaller(Protocol):
    """The async twin of :class:`Caller`: the same methods, awaited."""

    @property
    def base_url(self) -> str: ...

    @property
    def total_timeout(self) -> float | None: ...

    async def execute_call(self, call: Call[T]) -> T: ...

    async def send_call(self, call: Call[T]) -> T: ...

    async def run_flow(self, flow: Flow[T], total_timeout: float | None = None) -> T: ...


class StreamObserver(Protocol):
    """Told of every chunk and, exactly once, of the end: what telemetry hooks into."""

    def on_chunk(self, chunk: Any) -> None: ...

    def on_close(self, error: BaseException | None, *, complete: bool) -> None: ...


class ObservableStream:
    """A stream a call returned, as telemetry sees it. ``Stream`` and ``AsyncStream``
    derive from it, as must the streams of any client built on this seam: telemetry tells a
    stream from an answer with one ``isinstance``.

    - ``observe(observer)``: have the observer told of every chunk handed to the reader
      and, exactly once, of the end (one observer per stream: a second replaces the first).
    - ``accumulator``: what folds the chunks into the whole answer (its ``completion()`` is
      what they add up to so far, without reading on), or None for a stream whose chunks
      add up to nothing (completion streams).
    """

    __slots__ = ()

    def observe(self, observer: StreamObserver) -> None:
        raise NotImplementedError

    @property
    def accumulator(self) -> Accumulator | None:
        raise NotImplementedError
