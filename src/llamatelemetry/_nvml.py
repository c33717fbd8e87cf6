"""NVIDIA GPUs through NVML (``nvidia-ml-py``, the ``gpu`` extra): what each device is
doing now, for the telemetry's ``hw.*`` instruments and ``bench``'s per-level figures.

Nothing here is asked until a caller opens ``Gpus()``: importing costs nothing and probes
nothing. Every way of having no figures (the package missing, no driver, a driver with no
device, access refused) is one line on the ``llamatelemetry.gpu`` logger and an empty
list of devices; a reading a device does not support is left out; a device that stops
answering (lost, unplugged) is said once and dropped. Nothing raises to the caller.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuReading", "Gpus"]

log = logging.getLogger("llamatelemetry.gpu")

_INSTALL = "pip install 'llamatelemetry[gpu]'"
# NVML's codes for a device gone: lost, unplugged, or another fatal error of it
_GONE = {"NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_GPU_NOT_FOUND", "NVML_ERROR_UNKNOWN"}


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device's figures at one moment; None: the device does not say (or refused)."""

    index: int
    uuid: str
    name: str
    utilization: float | None  # of the last sample period, 0..1
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes
    power_w: float | None
    energy_j: float | None  # since the driver was loaded
    temperature_c: float | None
    sm_clock_hz: float | None


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    name: str
    refused: set[str]  # readings this device does not support or refused: not asked again


_lock = threading.Lock()  # NVML's init and shutdown (counted by the library), one at a time
_said: set[str] = set()  # the lines said once per process


def _say(line: str, level: int = logging.WARNING) -> None:
    if line not in _said:
        _said.add(line)
        log.log(level, "%s", line)


def _code_name(nvml: Any, error: BaseException) -> str:
    value = getattr(error, "value", None)
    for name in dir(nvml):
        if name.startswith("NVML_ERROR_") and getattr(nvml, name) == value:
            return name
    return "NVML_ERROR_UNKNOWN"


class Gpus:
    """The NVIDIA devices of this machine, opened once (``devices`` empty, and ``why``
    saying why, when there are none to read); ``read()`` their figures now."""

    def __init__(self) -> None:
        self.why: str | None = None
        self.driver_version: str | None = None
        self._devices: list[_Device] = []
        self._nvml: Any = None
        self._open = False
        try:
            import pynvml
        except ImportError:
            self.why = f"GPU figures need nvidia-ml-py ({_INSTALL})"
            _say(f"{self.why}: no GPU figures")
            return
        self._nvml = pynvml
        try:
            with _lock:
                pynvml.nvmlInit()
            self._open = True
            self.driver_version = str(pynvml.nvmlSystemGetDriverVersion())
            count = pynvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = str(pynvml.nvmlDeviceGetUUID(handle))
                name = str(pynvml.nvmlDeviceGetName(handle))
                self._devices.append(_Device(index, handle, uuid, name, set()))
        except pynvml.NVMLError as exc:
            self.why = self._reason(exc)
            _say(f"{self.why}: no GPU figures")
            self._devices = []
            self.close()
            return
        if not self._devices:
            self.why = "the NVIDIA driver reports no GPU"
            _say(f"{self.why}: no GPU figures")

    def _reason(self, exc: BaseException) -> str:
        code = _code_name(self._nvml, exc)
        if code in ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"):
            return f"no NVIDIA driver ({exc})"
        if code == "NVML_ERROR_NO_PERMISSION":
            return f"the NVIDIA driver refused access ({exc})"
        return f"the NVIDIA driver could not be read ({exc})"

    @property
    def devices(self) -> list[tuple[int, str, str]]:
        """(index, UUID, name) of each device still answering."""
        return [(d.index, d.uuid, d.name) for d in self._devices]

    def read(self) -> list[GpuReading]:
        """Every device's figures now; a device that stopped answering is said once and
        left out from then on."""
        readings = []
        for device in list(self._devices):
            try:
                readings.append(self._read(device))
            except _Gone as gone:
                self._devices.remove(device)
                _say(f"GPU {device.index} ({device.name}) stopped answering ({gone}): its "
                     "figures end")  # fmt: skip
        return readings

    def _read(self, device: _Device) -> GpuReading:
        nvml = self._nvml

        def ask(name: str, call: Any, *args: Any) -> Any:
            if name in device.refused:
                return None
            try:
                return call(device.handle, *args)
            except nvml.NVMLError as exc:
                code = _code_name(nvml, exc)
                if code in _GONE:
                    raise _Gone(str(exc)) from None
                device.refused.add(name)  # not supported, or refused: not asked again
                level = logging.WARNING if code == "NVML_ERROR_NO_PERMISSION" else logging.INFO
                _say(f"GPU {device.index} ({device.name}) gives no {name} ({exc})", level)
                return None

        rates = ask("utilization", nvml.nvmlDeviceGetUtilizationRates)
        memory = ask("memory", nvml.nvmlDeviceGetMemoryInfo)
        power = ask("power", nvml.nvmlDeviceGetPowerUsage)
        energy = ask("energy", nvml.nvmlDeviceGetTotalEnergyConsumption)
        temperature = ask("temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        clock = ask("SM clock", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        return GpuReading(
            index=device.index,
            uuid=device.uuid,
            name=device.name,
            utilization=None if rates is None else rates.gpu / 100.0,
            memory_used=None if memory is None else int(memory.used),
            memory_total=None if memory is None else int(memory.total),
            power_w=None if power is None else power / 1000.0,
            energy_j=None if energy is None else energy / 1000.0,
            temperature_c=None if temperature is None else float(temperature),
            sm_clock_hz=None if clock is None else clock * 1e6,
        )

    def close(self) -> None:
        """Let NVML go (once every ``Gpus`` of the process has closed)."""
        with _lock:
            if not self._open:
                return
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - a driver gone meanwhile
                log.debug("nvmlShutdown failed", exc_info=True)


class _Gone(Exception):
    """A device that stopped answering."""
