"""The GPU devices a llama.cpp build can put a model on, asked before a launch that wants
one: a CPU build given ``gpu_layers`` (or a ``main_gpu`` past the last device) is refused
with the reason, instead of running on the CPU, slowly and silently.

The binary says with ``llama-server --list-devices`` (a few milliseconds); the embedded
server with ``xllamacpp.get_device_info()``. Only asked when the options name a GPU.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from ._options import ServerOptions

__all__ = ["check_gpu_options", "gpu_devices"]

logger = logging.getLogger("llamatelemetry.server")

LIST_SECONDS = 30.0


def gpu_devices(backend: str, binary: Path | None) -> list[str] | None:
    """Each GPU device as llama.cpp names it ("CUDA0: NVIDIA H100 ..."), in its order;
    None when the build could not be asked."""
    if backend == "embedded":
        try:
            import xllamacpp  # type: ignore[import-untyped]

            kinds = xllamacpp.ggml_backend_dev_type
            wanted = {kinds.GGML_BACKEND_DEVICE_TYPE_GPU, kinds.GGML_BACKEND_DEVICE_TYPE_IGPU}
            return [
                f"{d['name']}: {d['description']}"
                for d in xllamacpp.get_device_info()
                if d.get("type") in wanted
            ]
        except Exception:  # noqa: BLE001 - an xllamacpp without the call: not known
            logger.debug("xllamacpp could not list its devices", exc_info=True)
            return None
    if binary is None:
        return None
    try:
        listed = subprocess.run(
            [str(binary), "--list-devices"], capture_output=True, text=True,
            timeout=LIST_SECONDS, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        logger.debug("%s --list-devices failed", binary, exc_info=True)
        return None
    lines = listed.stdout.splitlines()
    if listed.returncode != 0 or not any(line.startswith("Available devices") for line in lines):
        return None  # an older build without the flag: not known
    start = next(i for i, line in enumerate(lines) if line.startswith("Available devices")) + 1
    return [
        line.strip()
        for line in lines[start:]
        if line.startswith((" ", "\t")) and line.strip() and line.strip() != "(none)"
    ]


def check_gpu_options(options: ServerOptions, devices: list[str] | None, what: str) -> None:
    """Refuse options that name a GPU this build does not have (``devices``: its GPUs,
    None: not known, then nothing is refused); ``what`` names the build in the reason."""
    if devices is None or not options.asks_gpu:
        return
    asked = ", ".join(f"{name}={value!r}" for name, value in options.gpu_placement())
    if not devices:
        raise ValueError(
            f"{asked} put the model on a GPU, but {what} has no GPU device (a CPU build): "
            "drop them, or use a llama-server built for your GPU (for NVIDIA: cmake "
            "-DGGML_CUDA=ON) with backend='binary'"
        )
    seen = f"{what} has {len(devices)} GPU device(s): " + "; ".join(devices)
    if options.main_gpu is not None and options.main_gpu >= len(devices):
        raise ValueError(f"main_gpu={options.main_gpu} is past the last GPU: {seen}")
    if len(options.tensor_split) > len(devices):
        raise ValueError(f"tensor_split gives shares to {len(options.tensor_split)} GPUs: {seen}")
