"""`InferenceEngine`: one model, one managed llama.cpp server, measured inference.

The engine owns a `ServerManager` and a pooled `LlamaCppClient` bound to it, and turns
every generation into an `InferenceResult` that carries the text, the token counts and
the latency figures, taken from llama.cpp's own ``timings`` and from the client's clock::

    with InferenceEngine("model.gguf", ctx_size=8192) as engine:
        result = engine.infer("The capital of France is", max_tokens=32)
        print(result.text, result.ttft_s, result.tpot_s, result.tokens_per_second)

        with engine.infer_stream("Once upon a time") as stream:
            for piece in stream:
                print(piece, end="", flush=True)
        print(stream.result.ttft_s)

        results = engine.batch_infer(["a", "b", "c", "d"])  # the server's parallel slots
        print(engine.stats())

Definitions of the figures (all in seconds, or tokens per second):

- ``latency_s``: client wall clock (`time.perf_counter`) from just before the request is
  sent until the whole answer is in (for a stream: until the final chunk arrives).
- ``ttft_s`` (time to first token): for a stream, client clock from just before the
  request is sent until the first chunk with non-empty text arrives (None when no text
  arrived at all); for a whole response, the server's prompt processing time,
  ``timings.prompt_ms / 1000`` (the first token is sampled right after it).
- ``tpot_s`` (time per output token): the server's mean decoding time per token *after
  the first*, ``timings.predicted_ms / (timings.predicted_n - 1) / 1000``. llama.cpp's
  ``predicted_ms`` starts when the prompt is done, so it spans the ``n - 1`` decode steps
  that follow the first sampled token. None when fewer than 2 tokens were generated.
- ``tokens_per_second``: the server's ``timings.predicted_per_second``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, overload

from .._closing import Closing
from ..api._base import Call, Flow
from ..api._errors import LlamaTelemetryError
from ..api._validation import check_int, check_text, check_texts
from ..api.resources.chat import chat_call
from ..api.resources.completions import complete_call
from ..api.resources.embeddings import embed_flow
from ._errors import ServerError
from ._manager import Backend, PathLike, ServerManager
from ._options import ServerOptions

if TYPE_CHECKING:
    from ..api import LlamaCppClient, Stream
    from ..api._base import TimeoutTypes
    from ..api._types import ChatCompletion, NativeCompletion, Timings

__all__ = [
    "BatchInferenceError",
    "EngineStats",
    "InferenceEngine",
    "InferenceResult",
    "StreamingInference",
]

logger = logging.getLogger("llamatelemetry.server")

DEFAULT_N_PARALLEL = 4  # batch_infer runs on the server's slots: give it a few by default


# -- results -------------------------------------------------------------------------


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
    ttft = timings.prompt_ms / 1000.0 if timings.prompt_ms is not None else None
    tpot = None
    n = timings.predicted_n
    if n is not None and n >= 2 and timings.predicted_ms is not None:
        tpot = timings.predicted_ms / (n - 1) / 1000.0
    return ttft, tpot, timings.predicted_per_second


def _prompt_tokens(response: NativeCompletion) -> int:
    """Every prompt token, cached ones included (``prompt_n`` alone omits the cache hits)."""
    if response.tokens_evaluated is not None:
        return response.tokens_evaluated
    timings = response.timings
    if timings is not None and timings.prompt_n is not None:
        return timings.prompt_n + (timings.cache_n or 0)
    return 0


def _native_result(
    response: NativeCompletion,
    text: str,
    latency_s: float,
    client_ttft_s: float | None,
    streamed: bool,
) -> InferenceResult:
    timings = response.timings
    server_ttft, tpot, tps = _server_figures(timings)
    return InferenceResult(
        text=text,
        prompt_tokens=_prompt_tokens(response),
        completion_tokens=response.tokens_predicted or 0,
        finish_reason=response.finish_reason,
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


def _chat_result(response: ChatCompletion, latency_s: float) -> InferenceResult:
    timings = response.timings
    server_ttft, tpot, tps = _server_figures(timings)
    choice = response.choices[0] if response.choices else None
    usage = response.usage
    return InferenceResult(
        text=(choice.message.content or "") if choice is not None else "",
        prompt_tokens=usage.prompt_tokens if usage is not None else 0,
        completion_tokens=usage.completion_tokens if usage is not None else 0,
        finish_reason=choice.finish_reason if choice is not None else None,
        latency_s=latency_s,
        ttft_s=server_ttft,
        tpot_s=tpot,
        tokens_per_second=tps,
        server_prompt_ms=timings.prompt_ms if timings is not None else None,
        server_predicted_ms=timings.predicted_ms if timings is not None else None,
        timings=timings,
        streamed=False,
        raw=response,
    )


# -- statistics ----------------------------------------------------------------------


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of what the engine has done since it was created.

    ``requests`` counts every call sent to the server (each prompt of a batch, each
    embed call), whatever its outcome; ``failures`` those that raised, ``cancelled`` the
    streams closed before their end. Token, latency, TTFT and speed figures cover the
    ``generations`` that succeeded (embed calls are counted in ``embed_requests`` only).
    ``mean_tokens_per_second`` is the plain mean of the per-request server figures.
    Arguments rejected before sending are not counted.
    """

    requests: int
    generations: int
    embed_requests: int
    failures: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    total_latency_s: float
    mean_latency_s: float | None
    mean_ttft_s: float | None
    mean_tokens_per_second: float | None
    uptime_s: float


class _StatsRecorder:
    """Thread-safe accumulation (batch workers record concurrently)."""

    def __init__(self) -> None:
        # Reentrant: a stream closed by garbage collection may record from inside a
        # thread that already holds the lock.
        self._lock = threading.RLock()
        self.requests = 0
        self.generations = 0
        self.embed_requests = 0
        self.failures = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_latency_s = 0.0
        self.ttft_sum = 0.0
        self.ttft_n = 0
        self.tps_sum = 0.0
        self.tps_n = 0

    def request(self, *, embed: bool = False) -> None:
        with self._lock:
            self.requests += 1
            if embed:
                self.embed_requests += 1

    def failure(self) -> None:
        with self._lock:
            self.failures += 1

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    def success(self, result: InferenceResult) -> None:
        with self._lock:
            self.generations += 1
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            self.total_latency_s += result.latency_s
            if result.ttft_s is not None:
                self.ttft_sum += result.ttft_s
                self.ttft_n += 1
            if result.tokens_per_second is not None:
                self.tps_sum += result.tokens_per_second
                self.tps_n += 1

    def snapshot(self, uptime_s: float) -> EngineStats:
        with self._lock:
            return EngineStats(
                requests=self.requests,
                generations=self.generations,
                embed_requests=self.embed_requests,
                failures=self.failures,
                cancelled=self.cancelled,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                total_latency_s=self.total_latency_s,
                mean_latency_s=(
                    self.total_latency_s / self.generations if self.generations else None
                ),
                mean_ttft_s=self.ttft_sum / self.ttft_n if self.ttft_n else None,
                mean_tokens_per_second=self.tps_sum / self.tps_n if self.tps_n else None,
                uptime_s=uptime_s,
            )


# -- streaming -----------------------------------------------------------------------


class StreamingInference(Closing):
    """The text pieces of one generation as the server produces them, then its result.

    Iterate it for the pieces (non-empty ``str``, one per token as llama.cpp sends them);
    once it is exhausted, `result` holds the `InferenceResult`. ``close()`` (or leaving a
    ``with`` block, or dropping it) ends the request early: the server stops generating
    and frees its slot. The request itself is sent when the stream is created, so HTTP
    errors are raised by `InferenceEngine.infer_stream`.
    """

    def __init__(
        self, stream: Stream[NativeCompletion], started: float, recorder: _StatsRecorder
    ) -> None:
        self._stream = stream
        self._started = started
        self._recorder = recorder
        self._pieces: list[str] = []
        self._first_at: float | None = None
        self._final: NativeCompletion | None = None
        self._ended_at: float | None = None
        self._result: InferenceResult | None = None
        self._closed = False
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        # A plain state machine, not a generator: no reference cycle, so an abandoned
        # stream is closed (and its slot freed) as soon as it is dropped.
        while True:
            if self._closed:
                raise StopIteration
            try:
                chunk = next(self._stream)
            except StopIteration:
                self._settle()
                raise
            except BaseException as exc:
                self._error = exc
                self._closed = True
                self._recorder.failure()
                self._stream.close()
                raise
            now = time.perf_counter()
            if chunk.stop:
                self._final = chunk
                self._ended_at = now
            if chunk.content:
                if self._first_at is None:
                    self._first_at = now
                self._pieces.append(chunk.content)
                return chunk.content

    def _settle(self) -> None:
        """The end of the stream: build the result, or count a stream that never finished."""
        if self._closed:
            return
        self._closed = True
        final = self._final
        if final is None or self._ended_at is None:
            self._recorder.cancel()
            return
        ttft = None if self._first_at is None else self._first_at - self._started
        self._result = _native_result(
            final, "".join(self._pieces), self._ended_at - self._started, ttft, streamed=True
        )
        self._recorder.success(self._result)
        logger.debug(
            "streamed %d tokens in %.3fs", self._result.completion_tokens, self._result.latency_s
        )

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._pieces)

    @property
    def done(self) -> bool:
        """Whether the generation finished and `result` is available."""
        return self._result is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def result(self) -> InferenceResult:
        """The result of the finished generation; consume the stream first (or `finish()`)."""
        if self._result is None:
            if self._error is not None:
                raise ServerError(f"the stream failed: {self._error}") from self._error
            if self._closed:
                raise ServerError(
                    "the stream was closed before the generation finished; there is no result"
                )
            raise ServerError(
                "the stream is not finished yet: iterate it to the end "
                "(or call finish()) before reading result"
            )
        return self._result

    def finish(self) -> InferenceResult:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        return self.result

    def close(self) -> None:
        """End the request (the server stops generating); safe to call any number of times."""
        if self._closed:
            return
        if self._final is not None:
            self._settle()  # the final chunk is in: keep the result
        else:
            self._closed = True
            self._recorder.cancel()
        self._stream.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


# -- batch errors --------------------------------------------------------------------


class BatchInferenceError(LlamaTelemetryError):
    """Some prompts of a `InferenceEngine.batch_infer` call failed; the others did not.

    ``results[i]`` is the `InferenceResult` of prompt ``i``, or the exception it raised;
    ``errors`` maps the index of each failed prompt to its exception; `successes` maps
    the others to their results. The first failure is also the ``__cause__``.
    """

    def __init__(self, results: list[InferenceResult | Exception]) -> None:
        self.results = results
        self.errors: dict[int, Exception] = {
            i: r for i, r in enumerate(results) if isinstance(r, Exception)
        }
        shown = "; ".join(
            f"[{i}] {type(e).__name__}: {e}" for i, e in list(self.errors.items())[:5]
        )
        more = f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} of {len(results)} prompts failed: {shown}{more}")

    @property
    def successes(self) -> dict[int, InferenceResult]:
        return {i: r for i, r in enumerate(self.results) if isinstance(r, InferenceResult)}


# -- the engine ----------------------------------------------------------------------


_START_ONLY = ("timeout",)  # ServerManager.start arguments that are not ServerOptions


class InferenceEngine(Closing):
    """A model served by its own llama.cpp server, with measured inference calls.

    ``server_options`` go to `ServerManager.start` (``ctx_size``, ``n_parallel`` (4 here,
    so that `batch_infer` runs prompts in parallel), ``n_threads``, ``embedding``,
    ``pooling``, ``lora``, ``api_key``, ...); note that ``ctx_size`` is the total
    context, split evenly across the ``n_parallel`` slots. They are checked at once.
    With ``start=False`` the server starts on the first call that needs it (or on
    `start`). ``client_options`` go to the `LlamaCppClient` (``timeout``,
    ``max_retries``, ...). `close` (or leaving a ``with`` block) stops the server.
    """

    def __init__(
        self,
        model_path: PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: Backend = "auto",
        start: bool = True,
        startup_timeout: float = 60.0,
        client_options: Mapping[str, Any] | None = None,
        server_path: PathLike | None = None,
        log_dir: PathLike | None = None,
        **server_options: Any,
    ) -> None:
        for name in _START_ONLY:
            if name in server_options:
                raise TypeError(
                    f"unexpected keyword argument {name!r}: "
                    "use startup_timeout= for the server's start"
                )
        if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)):
            raise TypeError(
                f"startup_timeout must be a number of seconds, not {type(startup_timeout).__name__}"
            )
        if not startup_timeout > 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout!r}")
        if client_options is not None and not isinstance(client_options, Mapping):
            raise TypeError(f"client_options must be a dict, not {type(client_options).__name__}")
        _check_option_names(server_options)
        server_options.setdefault("n_parallel", DEFAULT_N_PARALLEL)
        # Check names and values now, not at a lazy start much later (files are checked
        # at start: they may not exist yet).
        ServerOptions(
            model_path=os.fspath(model_path),  # type: ignore[arg-type]
            host=host,
            port=port,
            **server_options,
        )
        self._model_path = model_path
        self._server_options = server_options
        self._startup_timeout = float(startup_timeout)
        self._client_options = dict(client_options or {})
        self._server = ServerManager(
            host=host, port=port, backend=backend, server_path=server_path, log_dir=log_dir
        )
        self._client: LlamaCppClient | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._stats = _StatsRecorder()
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (and its client) unless it already runs. Thread-safe."""
        with self._lock:
            if self._closed:
                raise ServerError("this InferenceEngine is closed; create a new one")
            if self._client is not None:
                return
            self._server.start(
                self._model_path, timeout=self._startup_timeout, **self._server_options
            )
            try:
                self._client = self._server.client(**self._client_options)
            except BaseException:
                self._server.stop()
                raise
            self._started_at = time.monotonic()
            logger.info("InferenceEngine ready at %s (%d slots)", self._server.url, self.n_parallel)

    def close(self) -> None:
        """Stop the server and close the client. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
            try:
                if client is not None:
                    client.close()
            finally:
                self._server.stop()
                if self._started_at is not None:
                    self._stopped_at = time.monotonic()
                    logger.info("InferenceEngine at %s closed", self._server.url)

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_client(self) -> LlamaCppClient:
        client = self._client
        if client is None:
            self.start()
            client = self._client
            if client is None:  # closed concurrently
                raise ServerError("this InferenceEngine is closed; create a new one")
        return client

    # -- properties ------------------------------------------------------------------

    @property
    def server(self) -> ServerManager:
        """The `ServerManager` running the model."""
        return self._server

    @property
    def client(self) -> LlamaCppClient:
        """The pooled `LlamaCppClient` bound to the server (starts it if needed)."""
        return self._ensure_client()

    @property
    def url(self) -> str:
        """The server's ``http://host:port`` (starts it if needed)."""
        self._ensure_client()
        return self._server.url

    @property
    def n_parallel(self) -> int:
        """The server's number of parallel slots (the default concurrency of `batch_infer`)."""
        options = self._server.options
        if options is not None:
            return options.n_parallel
        return int(self._server_options["n_parallel"])

    def stats(self) -> EngineStats:
        """A snapshot of the cumulative statistics (see `EngineStats`)."""
        if self._started_at is None:
            uptime = 0.0
        else:
            uptime = (self._stopped_at or time.monotonic()) - self._started_at
        return self._stats.snapshot(uptime)

    # -- generation ------------------------------------------------------------------

    @staticmethod
    def _sampling(
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        top_k: int | None,
        seed: int | None,
        stop_sequences: str | Sequence[str] | None,
        timeout: TimeoutTypes,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        if "stream" in extra:
            raise TypeError("unexpected keyword argument 'stream': use infer_stream() to stream")
        if "stop" in extra:
            raise TypeError("unexpected keyword argument 'stop': pass stop_sequences=")
        return {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
            "stop": stop_sequences,
            "timeout": timeout,
            **extra,
        }

    def _send(self, call: Call[Any] | Flow[Any], *, embed: bool = False) -> tuple[Any, float]:
        """Send a call (or run a flow) built, and so validated, beforehand; count it; return
        the answer and when it was sent. Building first means bad input never starts a lazy
        server."""
        client = self._ensure_client()
        self._stats.request(embed=embed)
        started = time.perf_counter()
        try:
            if isinstance(call, Call):
                return client._execute(call), started
            return client._run(call), started
        except BaseException:
            self._stats.failure()
            raise

    def _infer(self, call: Call[Any]) -> InferenceResult:
        """One non-streamed /completion, measured and counted."""
        response, started = self._send(call)
        latency = time.perf_counter() - started
        response = cast("NativeCompletion", response)
        result = _native_result(response, response.content, latency, None, streamed=False)
        self._stats.success(result)
        logger.debug("completion of %d tokens in %.3fs", result.completion_tokens, latency)
        return result

    def infer(
        self,
        prompt: str,
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        seed: int | None = 0,
        stop_sequences: str | Sequence[str] | None = None,
        *,
        timeout: TimeoutTypes = None,
        **extra: Any,
    ) -> InferenceResult:
        """Complete ``prompt`` (llama.cpp's native ``/completion``) and measure it.

        ``extra`` passes other llama.cpp parameters through (``min_p``, ``grammar``, ...).
        Bad arguments raise `TypeError`/`ValueError` before anything is sent.
        """
        check_text("prompt", prompt)
        sampling = self._sampling(
            max_tokens, temperature, top_p, top_k, seed, stop_sequences, timeout, extra
        )
        return self._infer(complete_call(prompt, stream=False, **_call_args(sampling)))

    def infer_stream(
        self,
        prompt: str,
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        seed: int | None = 0,
        stop_sequences: str | Sequence[str] | None = None,
        *,
        timeout: TimeoutTypes = None,
        **extra: Any,
    ) -> StreamingInference:
        """Like `infer`, token by token: iterate the returned `StreamingInference` for text
        pieces, then read its ``result`` (whose ``ttft_s`` is measured by the client)."""
        check_text("prompt", prompt)
        sampling = self._sampling(
            max_tokens, temperature, top_p, top_k, seed, stop_sequences, timeout, extra
        )
        stream, started = self._send(complete_call(prompt, stream=True, **_call_args(sampling)))
        return StreamingInference(cast("Stream[NativeCompletion]", stream), started, self._stats)

    def batch_infer(
        self,
        prompts: Sequence[str],
        concurrency: int | None = None,
        *,
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        seed: int | None = 0,
        stop_sequences: str | Sequence[str] | None = None,
        return_exceptions: bool = False,
        timeout: TimeoutTypes = None,
        **extra: Any,
    ) -> list[Any]:
        """Run `infer` on every prompt, ``concurrency`` at a time (default: the server's
        ``n_parallel`` slots); results come back in input order.

        A failing prompt does not stop the others. When some fail, `BatchInferenceError`
        is raised once all are done; it carries every result and every error. With
        ``return_exceptions=True`` the list holds the exception in place of the result
        instead (as `asyncio.gather` does).
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a list of str, not {type(prompts).__name__}")
        if not prompts:
            return []
        prompts = check_texts("prompts", prompts)
        if concurrency is not None:
            check_int("concurrency", concurrency, minimum=1)
        if not isinstance(return_exceptions, bool):
            raise TypeError("return_exceptions must be True or False")
        sampling = self._sampling(
            max_tokens, temperature, top_p, top_k, seed, stop_sequences, timeout, extra
        )
        calls = [complete_call(prompt, stream=False, **_call_args(sampling)) for prompt in prompts]
        self._ensure_client()
        workers = min(concurrency or self.n_parallel, len(prompts))

        results: list[InferenceResult | Exception] = []
        with ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="llamatelemetry-batch"
        ) as pool:
            futures: list[Future[InferenceResult]] = [
                pool.submit(self._infer, call) for call in calls
            ]
            try:
                for future in futures:
                    try:
                        results.append(future.result())
                    except Exception as exc:  # noqa: BLE001 - collected, reported below
                        results.append(exc)
            except BaseException:
                # Ctrl-C: drop what has not started; the running requests finish.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        failed = sum(isinstance(r, Exception) for r in results)
        if failed:
            logger.warning("batch_infer: %d of %d prompts failed", failed, len(prompts))
            if not return_exceptions:
                error = BatchInferenceError(results)
                raise error from next(iter(error.errors.values()))
        return results

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None = 128,
        temperature: float | None = 0.7,
        top_p: float | None = 0.9,
        top_k: int | None = 40,
        seed: int | None = 0,
        stop_sequences: str | Sequence[str] | None = None,
        *,
        timeout: TimeoutTypes = None,
        **extra: Any,
    ) -> InferenceResult:
        """The assistant's reply to ``messages`` (``/v1/chat/completions``), measured;
        ``raw`` is the `ChatCompletion`."""
        sampling = self._sampling(
            max_tokens, temperature, top_p, top_k, seed, stop_sequences, timeout, extra
        )
        args = _call_args(sampling)
        call = chat_call(
            messages,
            model=args["extra"].pop("model", None),
            stream=False,
            extra_headers=args["extra"].pop("extra_headers", None),
            **args,
        )
        response, started = self._send(call)
        result = _chat_result(response, time.perf_counter() - started)
        self._stats.success(result)
        return result

    @overload
    def embed(self, texts: str) -> list[float]: ...  # type: ignore[overload-overlap]
    @overload
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
    def embed(self, texts: str | Sequence[str]) -> list[float] | list[list[float]]:
        """Embedding vectors of ``texts``, in order (one flat vector for a single str).

        Needs ``embedding=True`` (and usually ``pooling="mean"``) among the server options.
        """
        return self._send(embed_flow(texts), embed=True)[0]  # type: ignore[no-any-return]

    # -- misc ------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = (
            "closed" if self._closed else ("running" if self._server.is_running else "not started")
        )
        model = os.path.basename(os.fspath(self._model_path))
        return f"<InferenceEngine model={model!r} {state} server={self._server!r}>"


def _check_option_names(server_options: Mapping[str, Any]) -> None:
    """Name a misspelt server option (and its likely meaning) instead of a dataclass error."""
    known = [
        f.name
        for f in dataclasses.fields(ServerOptions)
        if f.name not in ("model_path", "host", "port")
    ]
    for name in server_options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            raise TypeError(f"unexpected server option {name!r}{hint}")


def _call_args(sampling: dict[str, Any]) -> dict[str, Any]:
    """The engine's sampling keywords in the shape the pure call builders take."""
    args = dict(sampling)
    named = {
        k: args.pop(k)
        for k in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "timeout")
    }
    for penalty in ("frequency_penalty", "presence_penalty"):
        named[penalty] = args.pop(penalty, 0.0)
    return {**named, "extra": args}
