"""A stand-in NVIDIA driver for the GPU figures' tests (``tests/data/fake_nvml.c``, built
with the machine's C compiler), and a way to run code against it: a fresh interpreter
whose ``LD_LIBRARY_PATH`` finds it, as the real ``nvidia-ml-py`` finds the real driver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).parent / "data" / "fake_nvml.c"


def build_fake_nvml(folder: Path) -> Path:
    """``folder/libnvidia-ml.so.1``, compiled from the stand-in's source."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc) to build the stand-in NVIDIA driver")
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / "libnvidia-ml.so.1"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
         "-Wl,-soname,libnvidia-ml.so.1", "-o", str(library), str(SOURCE)],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


def run_python(code: str, driver: Path | None, **env: str) -> tuple[Any, str]:
    """Run ``code`` in a fresh interpreter (with the stand-in driver when ``driver`` is
    given); what it printed last, as JSON, and its log (stderr)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML_")}
    environment.pop("LD_LIBRARY_PATH", None)
    if driver is not None:
        environment["LD_LIBRARY_PATH"] = str(driver)
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr
