"""Histogram points recorded off the caller's thread, and never late for a collection.

The SDK's ``Histogram.record`` cleans and hashes the point's attributes on every call:
four or five of them per operation cost a call more than its span does. So an operation
only queues the recording (one entry, expanded into its points later); a daemon thread
records the queue in batches while the application waits on the network, and every
collection first records whatever is still queued (through an observable instrument's
callback, which the SDK runs before it reads the histograms). A reader therefore always
sees every operation that finished before it collected: right after a call
(``InMemoryMetricReader``), at a Prometheus scrape, at ``force_flush`` and at
``shutdown``. Each point keeps the context of its operation, so
exemplars still point at the operation's span.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["DeferredRecorder", "recorder"]

log = logging.getLogger("llamatelemetry.telemetry")

# A wake-up of the thread records what a burst of calls queued, not one call's points.
BATCH_WINDOW_S = 0.05
# Past this many queued points the caller records them itself: memory stays bounded even
# when the thread cannot keep up.
MAX_QUEUED = 20_000
# The thread lets others run between small groups of entries, so a caller whose response
# just arrived waits for a few points at most, never for a whole batch.
YIELD_EVERY = 4

#: ``histogram.record`` itself, or a function that records several points: (value,
#: attributes, context of the operation)
Record = Callable[[Any, Any, Context | None], None]
_Entry = tuple[Record, Any, Any, Context | None]


class DeferredRecorder:
    """A queue of recordings and the thread that makes them (one per process).

    With ``background=False`` no thread is started: entries wait for a collection, a
    ``flush()`` or a full queue.
    """

    def __init__(self, *, background: bool = True) -> None:
        self._background = background
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child starts empty: the parent records what it had queued.
        self._queue: deque[_Entry] = deque()
        self._lock = threading.Lock()  # held while an entry moves from the queue to the SDK
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def defer(
        self, record: Record, value: Any, attributes: Any, context: Context | None = None
    ) -> None:
        """Queue ``record(value, attributes, context)``; nothing passed may change after."""
        queue = self._queue
        queue.append((record, value, attributes, context))
        if not self._wake.is_set():
            if self._thread is None and self._background:
                self._start()
            self._wake.set()
        if len(queue) > MAX_QUEUED:
            self.flush()

    def flush(self) -> None:
        """Make every queued recording now, in this thread."""
        self._record_queued(yielding=False)

    def attach(self, meter: Meter) -> None:
        """Have every collection through ``meter``'s provider record the queue first."""
        meter.create_observable_gauge(
            "llamatelemetry.telemetry.queued_points",
            callbacks=[self._before_collection],
            description="Never exported: collecting it records the queued GenAI points first.",
        )

    def _before_collection(self, options: CallbackOptions) -> Iterable[Observation]:
        self.flush()
        return ()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llamatelemetry-metrics", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(BATCH_WINDOW_S)
            self._record_queued(yielding=True)

    def _record_queued(self, *, yielding: bool) -> None:
        queue = self._queue
        done = 0
        while queue:
            # The lock spans pop and record, so a collection that finds the queue empty
            # also knows no point is half-way to the SDK.
            with self._lock:
                try:
                    record, value, attributes, context = queue.popleft()
                except IndexError:
                    return
                try:
                    record(value, attributes, context)
                except Exception:  # noqa: BLE001 - a faulty SDK must not stop the recording
                    log.debug("could not record a metric point", exc_info=True)
            done += 1
            if yielding and done % YIELD_EVERY == 0:
                time.sleep(0)  # release the GIL to a caller whose response has arrived


recorder = DeferredRecorder()
