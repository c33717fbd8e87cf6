"""``ProcessMetrics``: CPU time, memory and threads of llama-server processes, under
OpenTelemetry's process semantic conventions (``process.cpu.time``, ``process.memory.*``,
``process.thread.count``).

Read from ``/proc`` when a metric reader collects: no dependency, a few microseconds per
process. Each point carries ``process.pid`` and ``process.executable.name`` (and, for a
server, ``server.address``/``server.port``): one pipeline can watch many servers. Its
descendants (a router's model instances; the llama-server of a ``llamatelemetry serve``)
are watched too, each with ``process.parent_pid``. Without ``/proc`` (not Linux)
nothing is reported, and one line on the ``llamatelemetry.telemetry`` logger says so.

```python
watch = ProcessMetrics(manager, 12345)  # a ServerManager, or any process id
...
watch.close()
```
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from .. import _running
from .._closing import Closing
from .._version import __version__
from ._attributes import server_attributes
from ._shared_instruments import SharedInstruments

__all__ = ["ProcessMetrics", "ProcessFigures", "read_process"]

log = logging.getLogger("llamatelemetry.telemetry")

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_CHILDREN = 256  # descendants watched per process (a router's model instances), at most


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """One process's figures from ``/proc/<pid>/stat``."""

    pid: int
    parent: int
    name: str
    user_s: float
    system_s: float
    threads: int
    virtual_bytes: int
    resident_bytes: int


def read_process(pid: int, proc: Path = PROC) -> ProcessFigures | None:
    """A process's figures, or None when it is gone (or ``/proc`` cannot say)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (name) state ppid ...": the name may hold spaces and parentheses
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    try:
        return ProcessFigures(
            pid=pid,
            parent=int(fields[1]),
            name=head.partition("(")[2],
            user_s=int(fields[11]) / _TICKS,
            system_s=int(fields[12]) / _TICKS,
            threads=int(fields[17]),
            virtual_bytes=int(fields[20]),
            resident_bytes=int(fields[21]) * _PAGE,
        )
    except (IndexError, ValueError):
        return None


def children(pid: int, proc: Path = PROC) -> list[int]:
    """A process's direct children (``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """A process's children, theirs, and so on, ``MAX_CHILDREN`` at most."""
    found: list[int] = []
    waiting = [pid]
    while waiting and len(found) < MAX_CHILDREN:
        for child in children(waiting.pop(0), proc):
            if child not in found and child != pid:
                found.append(child)
                waiting.append(child)
    return found[:MAX_CHILDREN]


Target = Any  # a process id, or an object with ``pid`` (int or None) and perhaps ``url``


class _Instruments(SharedInstruments["ProcessMetrics", tuple[ProcessFigures, dict[str, Any]]]):
    """The watchers' instruments on one meter (see ``_shared_instruments``)."""

    def __init__(self, meter: Any) -> None:
        super().__init__(meter)
        meter.create_observable_counter(
            "process.cpu.time",
            callbacks=[self._cpu],
            unit="s",
            description="CPU time the process has used, by cpu.mode (user, system).",
        )
        for name, unit, description, field in _GAUGES:
            meter.create_observable_up_down_counter(
                name, callbacks=[self._observer(field)], unit=unit, description=description
            )

    def read(self, watchers: list[ProcessMetrics]) -> list[tuple[ProcessFigures, dict[str, Any]]]:
        return [read for watcher in watchers for read in watcher._read()]

    def _cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for figures, point in self.collecting("cpu"):
            observations.append(Observation(figures.user_s, {**point, "cpu.mode": "user"}))
            observations.append(Observation(figures.system_s, {**point, "cpu.mode": "system"}))
        return observations

    def _observer(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(figures, field), point)
                for figures, point in self.collecting(field)
            ]

        return observe


_GAUGES = (
    ("process.memory.usage", "By", "Resident memory of the process.", "resident_bytes"),
    ("process.memory.virtual", "By", "Virtual memory of the process.", "virtual_bytes"),
    ("process.thread.count", "{thread}", "Threads of the process.", "threads"),
)

_warned = False


class ProcessMetrics(Closing):
    """Observable instruments fed from ``/proc`` for each of ``targets``: process ids, or
    objects with a ``pid`` (None while stopped, read again at every collection, so a
    restarted server is followed) and a ``url`` (a ``ServerManager``), and their child
    processes (a router's model instances). ``started_servers``: also every
    ``ServerManager`` of this process, started before or after."""

    def __init__(
        self,
        *targets: Target,
        meter_provider: MeterProvider | None = None,
        started_servers: bool = False,
    ) -> None:
        for target in targets:
            if isinstance(target, bool) or not (
                (isinstance(target, int) and target > 0) or hasattr(target, "pid")
            ):
                raise TypeError(
                    f"a target is a process id (an int > 0) or has a pid, not {target!r:.60}"
                )
        self._targets = targets
        self._started_servers = started_servers
        self._closed = False
        global _warned
        if not PROC.is_dir() and not _warned:
            _warned = True
            log.warning("process figures are read from /proc, which this system lacks: none")
        meter = get_meter("llamatelemetry.process", __version__, meter_provider=meter_provider)
        _Instruments.watch(meter, self)

    def _processes(self) -> list[tuple[int, dict[str, Any]]]:
        """Each process to read now, with its server's attributes."""
        found: dict[int, dict[str, Any]] = {}
        targets: list[Target] = list(self._targets)
        if self._started_servers:
            targets += _running.servers()
        for target in targets:
            if isinstance(target, int):
                found.setdefault(target, {})
                continue
            pid = target.pid
            if isinstance(pid, int) and pid > 0:
                url = getattr(target, "url", None)
                found[pid] = server_attributes(url) if isinstance(url, str) else {}
        return list(found.items())

    def _read(self) -> list[tuple[ProcessFigures, dict[str, Any]]]:
        if self._closed:
            return []
        reads = []
        for pid, attributes in self._processes():
            figures = read_process(pid)
            if figures is None:
                log.debug("process %d is gone: no figures", pid)
                continue
            reads.append((figures, _point(figures, attributes)))
            for child in descendants(pid):
                kid = read_process(child)
                if kid is not None:
                    point = _point(kid, attributes)
                    point["process.parent_pid"] = kid.parent
                    reads.append((kid, point))
        return reads

    def close(self) -> None:
        """Stop reporting (OpenTelemetry has no way to remove the instruments themselves)."""
        self._closed = True


def _point(figures: ProcessFigures, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        **attributes,
        "process.pid": figures.pid,
        "process.executable.name": figures.name,
    }
