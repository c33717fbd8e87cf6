"""Observable instruments shared by every watcher of one kind on a meter, read once per
collection.

OpenTelemetry drops a second instrument of the same name on a meter, so the watchers of
one kind (``LlamaServerMetrics`` bridges, ``ProcessMetrics``, ``GpuMetrics``) on a meter
share one set of instruments, made with the first watcher. A collection calls each of
its observers once: the first one called reads every live watcher (``read``), and the
others report what it found, so a server is scraped (a process read, a GPU asked) once
per collection however many instruments report it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["SharedInstruments"]

W = TypeVar("W")  # a watcher
R = TypeVar("R")  # what one collection found

_lock = threading.Lock()


class SharedInstruments(Generic[W, R]):
    """Subclasses make their instruments in ``__init__`` and read their watchers in
    ``read``; ``of(meter)`` is each meter's one instance of the subclass."""

    _per_meter: ClassVar[weakref.WeakKeyDictionary[Any, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._per_meter = weakref.WeakKeyDictionary()

    def __init__(self, meter: Any) -> None:
        self.watchers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._round = threading.Lock()
        self._called: set[str] = set()  # the observers called in this collection so far
        self._found: list[R] = []

    @classmethod
    def watch(cls, meter: Any, watcher: W) -> None:
        """Have ``meter``'s instruments of this kind (made now, the first time) report
        ``watcher`` as long as it lives."""
        with _lock:
            shared = cls._per_meter.get(meter)
            if shared is None:
                shared = cls._per_meter[meter] = cls(meter)
            shared.watchers.add(watcher)

    def read(self, watchers: list[W]) -> list[R]:
        raise NotImplementedError

    def collecting(self, observer: str) -> list[R]:
        """What this collection found: read now by the first observer called in it (an
        observer called again starts the next collection)."""
        with self._round:
            if observer in self._called:
                self._called.clear()
            if not self._called:
                self._found = self.read(list(self.watchers))
            self._called.add(observer)
            return self._found
