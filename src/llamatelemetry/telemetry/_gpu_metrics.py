"""``GpuMetrics``: NVIDIA GPUs as OpenTelemetry instruments, under the hardware semantic
conventions (``hw.gpu.utilization``, ``hw.gpu.memory.*``, ``hw.power``, ``hw.energy``,
``hw.temperature``), read through NVML when a metric reader collects.

Needs the ``gpu`` extra and an NVIDIA driver; without either (or with no device, or with
access refused) one line on the ``llamatelemetry.gpu`` logger says so and nothing is
reported, and nothing else changes. A device that stops answering mid-run is said once and
left out from then on.

```python
gpus = GpuMetrics()  # setup_telemetry(gpu=True) makes one on its meter provider
...
gpus.close()
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from .._closing import Closing
from .._nvml import GpuReading, Gpus
from .._version import __version__
from ._shared_instruments import SharedInstruments

__all__ = ["GpuMetrics", "GPU_INSTRUMENTS"]

# (instrument, kind, unit, description, the GpuReading field it reports)
GPU_INSTRUMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("hw.gpu.utilization", "gauge", "1", "Share of the last sample period the GPU was busy.",
     "utilization"),
    ("hw.gpu.memory.usage", "updowncounter", "By", "GPU memory in use.", "memory_used"),
    ("hw.gpu.memory.limit", "updowncounter", "By", "GPU memory in all.", "memory_total"),
    ("hw.power", "gauge", "W", "Power the GPU draws.", "power_w"),
    ("hw.energy", "counter", "J", "Energy the GPU has used since its driver was loaded.",
     "energy_j"),
    ("hw.temperature", "gauge", "Cel", "Temperature of the GPU.", "temperature_c"),
    ("hw.gpu.clock.sm", "gauge", "Hz", "Clock of the GPU's streaming multiprocessors "
     "(not in the conventions).", "sm_clock_hz"),
)  # fmt: skip


class _Instruments(SharedInstruments["GpuMetrics", tuple[GpuReading, dict[str, Any]]]):
    """The watchers' instruments on one meter (see ``_shared_instruments``)."""

    def __init__(self, meter: Any) -> None:
        super().__init__(meter)
        create = {
            "gauge": meter.create_observable_gauge,
            "counter": meter.create_observable_counter,
            "updowncounter": meter.create_observable_up_down_counter,
        }
        for name, kind, unit, description, field in GPU_INSTRUMENTS:
            create[kind](
                name, callbacks=[self._observer(name, field)], unit=unit, description=description
            )

    def read(self, watchers: list[GpuMetrics]) -> list[tuple[GpuReading, dict[str, Any]]]:
        seen: dict[str, tuple[GpuReading, dict[str, Any]]] = {}
        for watcher in watchers:
            for reading, point in watcher._read():
                seen.setdefault(reading.uuid, (reading, point))  # a device once
        return list(seen.values())

    def _observer(
        self, name: str, field: str
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        task = {"hw.gpu.task": "general"} if name == "hw.gpu.utilization" else {}

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for reading, point in self.collecting(name):
                value = getattr(reading, field)
                if value is not None:
                    observations.append(Observation(value, {**point, **task}))
            return observations

        return observe


class GpuMetrics(Closing):
    """Observable instruments fed by NVML for every NVIDIA device of this machine, each
    point with ``hw.id`` (the device's UUID), ``hw.name``, ``hw.vendor``, ``hw.type``
    ("gpu") and ``hw.driver_version``. ``gpus``: an open ``Gpus`` to read (its owner
    closes it); by default one of its own, closed with it."""

    def __init__(self, *, meter_provider: MeterProvider | None = None, gpus: Gpus | None = None):
        self._own = gpus is None
        self._gpus = Gpus() if gpus is None else gpus
        self._closed = False
        meter = get_meter("llamatelemetry.gpu", __version__, meter_provider=meter_provider)
        _Instruments.watch(meter, self)

    @property
    def why(self) -> str | None:
        """Why there are no figures (no driver, no device, ...); None when there are."""
        return self._gpus.why

    def _read(self) -> list[tuple[GpuReading, dict[str, Any]]]:
        if self._closed:
            return []
        driver = self._gpus.driver_version
        return [
            (reading, {
                "hw.id": reading.uuid,
                "hw.name": reading.name,
                "hw.vendor": "NVIDIA",
                "hw.type": "gpu",
                **({"hw.driver_version": driver} if driver else {}),
            })
            for reading in self._gpus.read()
        ]  # fmt: skip

    def close(self) -> None:
        """Stop reporting (OpenTelemetry has no way to remove the instruments themselves)."""
        self._closed = True
        if self._own:
            self._gpus.close()
