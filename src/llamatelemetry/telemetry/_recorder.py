"""Histogram points recorded off the caller's thread, and never late for a collection.

The SDK's ``Histogram.record`` cleans and hashes the point's attributes on every call:
four or five of them per operation cost a call more than its span does. So an operation
only queues the recording (one entry, expanded into its points later); a daemon thread
records the queue in batches while the application waits on the network, the values of
a batch that share a histogram and attributes together (``Points``), and every
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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

from ._bulk import record_one, record_points

__all__ = ["DeferredRecorder", "Points", "recorder"]

log = logging.getLogger("llamatelemetry.telemetry")

# A wake-up of the thread records what a burst of calls queued, not one call's points.
BATCH_WINDOW_S = 0.05
# Past this many queued points the caller records them itself: memory stays bounded even
# when the thread cannot keep up.
MAX_QUEUED = 20_000

# Entries recorded under one hold of the lock: their points are grouped.
BATCH_ENTRIES = 256

#: ``histogram.record`` itself, or a function that records several points: (value,
#: attributes, context of the operation)
Record = Callable[[Any, Any, Context | None], None]
#: A function that adds an entry's points to a batch's ``Points``.
AddPoints = Callable[["Points", Any, Any, Context | None], None]
_Entry = tuple[Any, Any, Any, Context | None, bool]  # (record or add, value, attributes,
# context, whether it adds to the batch's Points)


class Points:
    """The histogram points of a batch of entries, grouped by histogram and attributes,
    each value with its operation's context; ``record()`` hands each group to the SDK at
    once (``_bulk.record_points``)."""

    __slots__ = ("_groups", "_sums")

    def __init__(self) -> None:
        self._groups: dict[Any, tuple[Histogram, Mapping[str, Any], list[Any], list[Any]]] = {}
        # A counter's values of one set of attributes: their sum is one add, with the context
        # of the last operation (a Sum aggregates to the same figure).
        self._sums: dict[Any, list[Any]] = {}

    def add(
        self,
        histogram: Histogram,
        value: float,
        attributes: Mapping[str, Any],
        context: Context | None,
        items: tuple[tuple[str, Any], ...] | None = None,
    ) -> None:
        """``items``: ``tuple(attributes.items())``, when the caller has it already."""
        try:
            key = (id(histogram), tuple(attributes.items()) if items is None else items)
            group = self._groups.get(key)
        except TypeError:  # an attribute value that cannot be hashed: alone
            record_one(histogram, value, attributes, context)
            return
        if group is None:
            group = self._groups[key] = (histogram, attributes, [], [])
        group[2].append(value)
        group[3].append(context)

    def count(
        self,
        counter: Counter,
        value: int,
        attributes: Mapping[str, Any],
        context: Context | None,
        items: tuple[tuple[str, Any], ...],
    ) -> None:
        """A counter's ``add``; ``items``: ``tuple(attributes.items())``."""
        key = (id(counter), items)
        summed = self._sums.get(key)
        if summed is None:
            self._sums[key] = [counter, attributes, value, context]
        else:
            summed[2] += value
            summed[3] = context

    def record(self) -> None:
        sums, self._sums = self._sums, {}
        for counter, attributes, total, context in sums.values():
            try:
                counter.add(total, attributes, context)
            except Exception:  # noqa: BLE001 - a faulty SDK must not stop the recording
                log.debug("could not add to a counter", exc_info=True)
        groups, self._groups = self._groups, {}
        for histogram, attributes, values, contexts in groups.values():
            try:
                record_points(histogram, values, contexts, attributes)
            except Exception:  # noqa: BLE001 - a faulty SDK must not stop the recording
                log.debug("could not record metric points", exc_info=True)


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
        self._queue_entry((record, value, attributes, context, False))

    def defer_points(
        self, add: AddPoints, value: Any, attributes: Any, context: Context | None = None
    ) -> None:
        """Queue ``add(points, value, attributes, context)``, which adds points to the
        batch's ``Points``, recorded with those of the other entries of its batch."""
        self._queue_entry((add, value, attributes, context, True))

    def _queue_entry(self, entry: _Entry) -> None:
        queue = self._queue
        queue.append(entry)
        if not self._wake.is_set():
            if self._thread is None and self._background:
                self._start()
            self._wake.set()
        if len(queue) > MAX_QUEUED:
            self.flush()

    def flush(self) -> None:
        """Make every queued recording now, in this thread, and wait for a batch another
        thread has taken from the queue and is still recording: when this returns, every
        point queued before it is in the SDK."""
        self._record_queued(yielding=False)
        with self._lock:  # the queue may be empty while that batch is on its way
            pass

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
        points = Points()
        while queue:
            # The lock spans pop and record, so a flush that takes it after finding the
            # queue empty knows no point is half-way to the SDK.
            with self._lock:
                for _ in range(BATCH_ENTRIES):
                    try:
                        record, value, attributes, context, grouped = queue.popleft()
                    except IndexError:
                        break
                    try:
                        if grouped:
                            record(points, value, attributes, context)
                        else:
                            record(value, attributes, context)
                    except Exception:  # noqa: BLE001 - a faulty SDK must not stop the recording
                        log.debug("could not record a metric point", exc_info=True)
                points.record()
            if yielding:
                time.sleep(0)  # release the GIL to a caller whose response has arrived


recorder = DeferredRecorder()
