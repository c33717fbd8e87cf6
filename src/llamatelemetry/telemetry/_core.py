"""Telemetry for this package's own clients: a ``CallRecorder`` fed through the api
layer's ``Caller`` seam.

``Telemetry.execute(client, call, send)`` wraps any client's ``execute_call``: the
instrumented client calls it directly, the instrumentor patches it in. It tells the
recorder of the call, sends it with the span current and the trace context in its
headers, and watches a streamed answer through the stream's observer hook. Before a call
that needs the model, it may ask the server whether the model is in memory (``_warmth``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry.context import attach, detach

from ..api._internal import (
    Accumulator,
    AsyncCaller,
    Call,
    Caller,
    ObservableStream,
    current_deadline,
)
from ._call_recorder import CallRecorder, RecordedCall
from ._warmth import MODEL_OPERATIONS, Probe, Warmth, probe_budget

__all__ = ["Telemetry"]

log = logging.getLogger("llamatelemetry.telemetry")

T = TypeVar("T")
C = TypeVar("C", bound=Caller)
A = TypeVar("A", bound=AsyncCaller)


class Telemetry:
    """A recorder and what it knows of the servers it has called, for one instrumented
    surface (an instrumented client, or the instrumentor's patch)."""

    def __init__(self, recorder: CallRecorder) -> None:
        self.recorder = recorder
        self.warmth = Warmth()

    def _begin(
        self, base_url: str, call: Call[Any], state: dict[str, Any]
    ) -> tuple[RecordedCall, Call[Any]]:
        """Start the call's span; the call to send carries its W3C ``traceparent``."""
        recorded = self.recorder.begin(
            call.operation,
            base_url=base_url,
            request=call.body,
            stream=call.stream is not None,
            defaulted=call.defaulted,
            attributes=state,
        )
        if recorded.recording:
            headers = recorded.headers(call.headers)
            if headers:
                call = call.with_headers(headers)
        return recorded, call

    def _settle(self, recorded: RecordedCall, base_url: str, call: Call[Any], result: T) -> T:
        if isinstance(result, ObservableStream):
            result.observe(_StreamWatch(self, recorded, base_url, call, result.accumulator))
        else:
            self._end(recorded, base_url, call, result)
        return result

    def _end(
        self,
        recorded: RecordedCall,
        base_url: str,
        call: Call[Any],
        result: Any = None,
        error: BaseException | None = None,
        complete: bool = True,
    ) -> None:
        self.warmth.done(base_url, call.operation)
        recorded.end(result, error=error, complete=complete)

    def execute(self, client: C, call: Call[T], send: Callable[[C, Call[T]], T]) -> T:
        """Run ``send(client, call)`` (a sync client's ``send_call``, or the ``execute_call``
        an instrumentor wrapped) inside the call's span."""
        asked = self._asking(client, call)
        state: dict[str, Any] = {}
        if asked is not None:
            probe, started = asked
            try:
                step = next(probe)
                while True:
                    step = probe.send(client.send_call(step))
            except StopIteration as stop:
                state = stop.value
            except Exception:  # noqa: BLE001 - the call itself will meet any trouble
                self._ask_failed(client)
            call = _rest_of_limit(client, call, started)
        base_url = client.base_url
        recorded, call = self._begin(base_url, call, state)
        if not recorded.recording:
            return send(client, call)
        token = attach(recorded.context)
        try:
            result = send(client, call)
        except BaseException as error:
            detach(token)
            self._end(recorded, base_url, call, error=error)
            raise
        detach(token)
        return self._settle(recorded, base_url, call, result)

    async def execute_async(
        self, client: A, call: Call[T], send: Callable[[A, Call[T]], Awaitable[T]]
    ) -> T:
        """The same for an async transport; the span is the current one only in this task,
        so concurrent calls are siblings under their caller, never nested in each other."""
        asked = self._asking(client, call)
        state: dict[str, Any] = {}
        if asked is not None:
            probe, started = asked
            try:
                step = next(probe)
                while True:
                    step = probe.send(await client.send_call(step))
            except StopIteration as stop:
                state = stop.value
            except Exception:  # noqa: BLE001 - the call itself will meet any trouble
                self._ask_failed(client)
            call = _rest_of_limit(client, call, started)
        base_url = client.base_url
        recorded, call = self._begin(base_url, call, state)
        if not recorded.recording:
            return await send(client, call)
        token = attach(recorded.context)
        try:
            result = await send(client, call)
        except BaseException as error:
            detach(token)
            self._end(recorded, base_url, call, error=error)
            raise
        detach(token)
        return self._settle(recorded, base_url, call, result)

    def _asking(self, client: Caller | AsyncCaller, call: Call[Any]) -> tuple[Probe, float] | None:
        """What to ask the server before ``call`` (see ``_warmth``), and when it started."""
        if call.operation not in MODEL_OPERATIONS:
            return None
        started = time.monotonic()
        probe = self.warmth.probe(
            client.base_url,
            call,
            lambda: probe_budget(_time_limit(client, call), current_deadline()),
        )
        return None if probe is None else (probe, started)

    def _ask_failed(self, client: Caller | AsyncCaller) -> None:
        log.debug("could not ask %s about its model", client.base_url, exc_info=True)
        self.warmth.failed(client.base_url)


class _StreamWatch:
    """A stream's observer: hands each chunk to the recorded call, and its end (with the
    answer the stream's accumulator made of typed events) exactly once."""

    __slots__ = ("_telemetry", "_recorded", "_base_url", "_call", "_accumulator")

    def __init__(
        self,
        telemetry: Telemetry,
        recorded: RecordedCall,
        base_url: str,
        call: Call[Any],
        accumulator: Accumulator | None,
    ) -> None:
        self._telemetry = telemetry
        self._recorded = recorded
        self._base_url = base_url
        self._call = call
        self._accumulator = accumulator

    def on_chunk(self, chunk: Any) -> None:
        self._recorded.chunk(chunk)

    def on_close(self, error: BaseException | None, *, complete: bool) -> None:
        answer = None
        accumulator = self._accumulator
        if accumulator is not None and self._recorded.needs_answer:
            try:
                answer = accumulator.completion()  # the events added up: a Response, a Message
            except Exception:  # noqa: BLE001
                log.debug("could not read a stream's final answer", exc_info=True)
        self._telemetry._end(
            self._recorded, self._base_url, self._call, answer, error=error, complete=complete
        )


def _time_limit(client: Caller | AsyncCaller, call: Call[Any]) -> float | None:
    """The wall-clock limit the call runs under: its own ``total_timeout``, else the client's."""
    return call.total_timeout if call.total_timeout is not None else client.total_timeout


def _rest_of_limit(client: Caller | AsyncCaller, call: Call[T], started: float) -> Call[T]:
    """The call with what its time limit leaves after the ask: asking never lengthens it."""
    bound = _time_limit(client, call)
    spent = time.monotonic() - started
    if bound is None or spent < 0.001:
        return call
    return dataclasses.replace(call, total_timeout=max(bound - spent, 0.001))
