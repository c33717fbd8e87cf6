"""`StreamingInference`: one generation of an `InferenceEngine`, token by token."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..._closing import Closing
from .._server_errors import ServerError
from ._inference_result import InferenceResult, _native_result

if TYPE_CHECKING:
    from ...api import NativeCompletion, Stream
    from ._engine_stats import _StatsRecorder

__all__ = ["StreamingInference"]

logger = logging.getLogger("llamatelemetry.server")


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
