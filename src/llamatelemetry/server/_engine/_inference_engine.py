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

The figures (``latency_s``, ``ttft_s``, ``tpot_s``, ``tokens_per_second``) are defined
where `InferenceResult` is (``_inference_result``); `EngineStats` (``_engine_stats``) adds
them up and `StreamingInference` (``_streaming_inference``) measures a stream.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast, overload

from typing_extensions import Unpack

from ..._closing import Closing
from ...api import SamplingParams
from ...api._internal import (
    Call,
    Caller,
    Flow,
    chat_call,
    check_int,
    check_text,
    check_texts,
    complete_call,
    embed_flow,
)
from .._manager import Backend, PathLike, ServerManager
from .._options import ServerOptions
from .._server_errors import ServerError
from ._batch_inference_error import BatchInferenceError
from ._engine_stats import EngineStats, _StatsRecorder
from ._inference_result import InferenceResult, _chat_result, _native_result
from ._streaming_inference import StreamingInference

if TYPE_CHECKING:
    from ...api import LlamaCppClient, NativeCompletion, Stream
    from ...api._internal import TimeoutTypes

__all__ = ["InferenceEngine"]

logger = logging.getLogger("llamatelemetry.server")

DEFAULT_N_PARALLEL = 4  # batch_infer runs on the server's slots: give it a few by default


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

    def _send(self, call: Call[Any] | Flow[Any], *, embed: bool = False) -> tuple[Any, float]:
        """Send a call (or run a flow) built, and so validated, beforehand; count it; return
        the answer and when it was sent. Building first means bad input never starts a lazy
        server."""
        client: Caller = self._ensure_client()
        self._stats.request(embed=embed)
        started = time.perf_counter()
        try:
            if isinstance(call, Call):
                return client.execute_call(call), started
            return client.run_flow(call), started
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
        *,
        stop_sequences: str | Sequence[str] | None = None,
        timeout: TimeoutTypes = None,
        **params: Unpack[SamplingParams],
    ) -> InferenceResult:
        """Complete ``prompt`` (llama.cpp's native ``/completion``) and measure it.

        ``params`` are the client's sampling parameters (:class:`SamplingParams`, with its
        defaults); ``stop_sequences`` is ``stop`` by another name. Bad arguments raise
        `TypeError`/`ValueError` before anything is sent.
        """
        check_text("prompt", prompt)
        call = complete_call(prompt, _params(stop_sequences, params), stream=False, timeout=timeout)
        return self._infer(call)

    def infer_stream(
        self,
        prompt: str,
        *,
        stop_sequences: str | Sequence[str] | None = None,
        timeout: TimeoutTypes = None,
        **params: Unpack[SamplingParams],
    ) -> StreamingInference:
        """Like `infer`, token by token: iterate the returned `StreamingInference` for text
        pieces, then read its ``result`` (whose ``ttft_s`` is measured by the client)."""
        check_text("prompt", prompt)
        call = complete_call(prompt, _params(stop_sequences, params), stream=True, timeout=timeout)
        stream, started = self._send(call)
        return StreamingInference(cast("Stream[NativeCompletion]", stream), started, self._stats)

    def batch_infer(
        self,
        prompts: Sequence[str],
        concurrency: int | None = None,
        *,
        stop_sequences: str | Sequence[str] | None = None,
        return_exceptions: bool = False,
        timeout: TimeoutTypes = None,
        **params: Unpack[SamplingParams],
    ) -> list[Any]:
        """Run `infer` on every prompt, ``concurrency`` at a time (default: the server's
        ``n_parallel`` slots); results come back in input order.

        A failing prompt does not stop the others. When some fail, `BatchInferenceError`
        is raised once all are done; it carries every result and every error. With
        ``return_exceptions=True`` the list holds the exception in place of the result
        instead (as `asyncio.gather` does), and the failures are logged at DEBUG only
        (raised, they are also logged as a warning).
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
        sampling = _params(stop_sequences, params)
        calls = [
            complete_call(prompt, sampling, stream=False, timeout=timeout) for prompt in prompts
        ]
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
            # Returned as values, the failures are the caller's to report: no warning then.
            level = logging.DEBUG if return_exceptions else logging.WARNING
            logger.log(level, "batch_infer: %d of %d prompts failed", failed, len(prompts))
            if not return_exceptions:
                error = BatchInferenceError(results)
                raise error from next(iter(error.errors.values()))
        return results

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stop_sequences: str | Sequence[str] | None = None,
        model: str | None = None,
        timeout: TimeoutTypes = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Unpack[SamplingParams],
    ) -> InferenceResult:
        """The assistant's reply to ``messages`` (``/v1/chat/completions``), measured;
        ``raw`` is the `ChatCompletion`. The same parameters as `infer`."""
        call = chat_call(
            messages,
            _params(stop_sequences, params),
            model=model,
            stream=False,
            timeout=timeout,
            extra_headers=extra_headers,
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


#: A router serves many models; an engine runs one.
_ROUTER_ONLY = ("models_dir", "models_max", "models_autoload")


def _check_option_names(server_options: Mapping[str, Any]) -> None:
    """Name a misspelt server option (and its likely meaning) instead of a dataclass error."""
    known = [
        f.name
        for f in dataclasses.fields(ServerOptions)
        if f.name not in ("model_path", "host", "port", *_ROUTER_ONLY)
    ]
    for name in server_options:
        if name in _ROUTER_ONLY:
            raise TypeError(
                f"{name} is a router's option and an engine runs one model: start a router "
                "with ServerManager(models_dir=...)"
            )
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            raise TypeError(f"unexpected server option {name!r}{hint}")


def _params(stop_sequences: Any, params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The sampling parameters as the client takes them: ``stop_sequences`` is ``stop``."""
    if "stream" in params:
        raise TypeError("unexpected keyword argument 'stream': use infer_stream() to stream")
    if stop_sequences is None:
        return params
    if "stop" in params:
        raise TypeError("pass stop_sequences= or stop=, not both (they are the same)")
    return {**params, "stop": stop_sequences}
