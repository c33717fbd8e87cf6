"""The machine's NVIDIA GPUs during each run (``bench --gpu``): utilisation and memory
sampled every ``interval`` seconds on a thread of their own (NVML's calls block: the event
loop that times the requests never waits for them), and the energy counter read when the
run starts and ends, for the energy per output token."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .._nvml import GpuReading, Gpus

__all__ = ["GpuSummary", "GpuWatch"]


@dataclass(frozen=True)
class GpuSummary:
    """What the GPUs did during one run (None: no device said it)."""

    devices: tuple[str, ...]  # each device's name, in index order
    samples: int  # readings of every device, the run's first and last included
    utilization_mean: float | None  # over the samples and the devices, 0..1
    memory_peak_bytes: int | None  # the most the devices held together at one sample
    power_mean_w: float | None  # over the samples, the devices summed
    energy_j: float | None  # the devices' energy counters, last reading less first

    def energy_per_output_token(self, output_tokens: int) -> float | None:
        if self.energy_j is None or output_tokens <= 0:
            return None
        return self.energy_j / output_tokens

    def to_dict(self, output_tokens: int) -> dict[str, object]:
        def rounded(value: float | None, digits: int = 6) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "devices": list(self.devices),
            "samples": self.samples,
            "utilization_mean": rounded(self.utilization_mean, 4),
            "memory_peak_bytes": self.memory_peak_bytes,
            "power_mean_w": rounded(self.power_mean_w, 3),
            "energy_j": rounded(self.energy_j),
            "energy_per_output_token_j": rounded(self.energy_per_output_token(output_tokens)),
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(readings: list[list[GpuReading]]) -> GpuSummary | None:
    """One run's summary from its readings (each: every device at one moment)."""
    readings = [each for each in readings if each]
    if not readings:
        return None
    names = tuple(r.name for r in sorted(readings[0], key=lambda r: r.index))
    usage = [r.utilization for each in readings for r in each if r.utilization is not None]
    memory = [
        sum(r.memory_used for r in each if r.memory_used is not None)
        for each in readings
        if any(r.memory_used is not None for r in each)
    ]
    power = [
        sum(r.power_w for r in each if r.power_w is not None)
        for each in readings
        if any(r.power_w is not None for r in each)
    ]
    first = {r.uuid: r.energy_j for r in readings[0] if r.energy_j is not None}
    last = {r.uuid: r.energy_j for r in readings[-1] if r.energy_j is not None}
    both = first.keys() & last.keys()  # a device lost meanwhile has no end: left out
    energy = sum(max(last[u] - first[u], 0.0) for u in both) if both else None
    return GpuSummary(
        devices=names,
        samples=len(readings),
        utilization_mean=_mean(usage),
        memory_peak_bytes=max(memory) if memory else None,
        power_mean_w=_mean(power),
        energy_j=energy if len(readings) > 1 else None,
    )


class GpuWatch:
    """Samples the GPUs from `start` until `stop`; ``why`` says why there are none to
    sample (no driver, no device, ...), and then each run's summary is None."""

    def __init__(self, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self._interval = interval
        self._gpus = Gpus()
        self._readings: list[list[GpuReading]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def why(self) -> str | None:
        return self._gpus.why

    def start(self) -> None:
        self._readings = [self._gpus.read()]
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llamatelemetry-gpu", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._readings.append(self._gpus.read())
            next_at += self._interval

    def stop(self) -> GpuSummary | None:
        """Stop sampling; the run's summary, its last reading taken now."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._readings.append(self._gpus.read())
        readings, self._readings = self._readings, []
        return summarize(readings)

    def close(self) -> None:
        if self._thread is not None:
            self.stop()
        self._gpus.close()
