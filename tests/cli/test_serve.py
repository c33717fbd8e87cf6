"""``serve`` cleans up after itself: the temporary folder that holds the server's log is
removed when serve stops (Ctrl-C, SIGTERM, a failed start, a crash) and the last message
says so; ``--log-dir DIR`` keeps the log, and the message says where. Each test runs the
real command in a subprocess with ``TMPDIR`` pointed at a folder of its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from llamatelemetry.testing import TinyModelFiles

from .test_commands import INTERRUPTIBLE, SCRIPT, free_port, interrupt, read_until, reap

REMOVED = "its log was removed with the temporary folder {} (--log-dir DIR keeps it)"


def serve(tmp: Path, *args: str) -> subprocess.Popen[str]:
    """``llamatelemetry serve ARGS`` on a free port, its temporary files under ``tmp``."""
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*INTERRUPTIBLE, str(SCRIPT), "serve", *args, "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp), "COLUMNS": "400"},
    )


def ready_log(process: subprocess.Popen[str]) -> tuple[str, Path]:
    """Wait until the server answers; serve's output so far and the log file it named."""
    ready = read_until(process, "Press Ctrl-C to stop.")
    url = re.search(r"ready at (\S+)", ready)
    log = re.search(r"^  log\s+(\S+)$", ready, re.MULTILINE)
    assert url and log, ready
    assert httpx.get(f"{url[1]}/health", trust_env=False).status_code == 200
    return ready, Path(log[1])


def leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.glob("llamatelemetry-*"))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_serve_removes_its_temporary_log_folder(
    tmp_path: Path, tiny_files: TinyModelFiles, stop: signal.Signals
) -> None:
    tmp = tmp_path / "tmp"
    process = serve(tmp, str(tiny_files.model.path), "--threads", "1")
    try:
        ready, log = ready_log(process)
        assert log.is_file() and log.parent.parent == tmp, ready
        assert leftovers(tmp) == [log.parent.name]
        if stop == signal.SIGINT:
            rest, err = interrupt(process)
        else:
            process.send_signal(stop)
            rest, err = process.communicate(timeout=30)
    finally:
        reap(process)
    assert process.returncode == 0, ready + rest + err
    assert "Traceback" not in rest + err
    assert f"✓ server stopped; {REMOVED.format(log.parent)}" in rest
    assert leftovers(tmp) == []


def test_serve_with_a_log_dir_keeps_the_log_and_says_where(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    tmp, logs = tmp_path / "tmp", tmp_path / "logs"
    process = serve(tmp, str(tiny_files.model.path), "--threads", "1", "--log-dir", str(logs))
    try:
        ready, log = ready_log(process)
        rest, err = interrupt(process)
    finally:
        reap(process)
    assert process.returncode == 0, ready + rest + err
    assert log.parent == logs
    assert f"✓ server stopped; its log is kept at {log}" in rest
    assert "listening on" in log.read_text()  # the server's own output, still there
    assert leftovers(tmp) == []


def test_a_failed_start_shows_the_log_tail_then_removes_the_folder(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    data = tiny_files.model.path.read_bytes()
    truncated = tmp_path / "truncated.gguf"  # a GGUF header, but not all of its tensors
    truncated.write_bytes(data[: len(data) // 2])
    tmp = tmp_path / "tmp"
    process = serve(tmp, str(truncated), "--threads", "1")
    try:
        out, err = process.communicate(timeout=60)
    finally:
        reap(process)
    assert process.returncode == 1, out + err
    assert out == "" and "Traceback" not in err
    assert "Error: llama-server exited" in err and "the server's log ends with:" in err
    assert "failed to load model" in err  # the tail, from the log
    assert err.rstrip().endswith(
        "the log was removed with its temporary folder (--log-dir DIR keeps it)"
    )
    assert leftovers(tmp) == []


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_crashed_server_shows_the_log_tail_then_removes_the_folder(
    tmp_path: Path, tiny_files: TinyModelFiles
) -> None:
    tmp = tmp_path / "tmp"
    process = serve(tmp, str(tiny_files.model.path), "--threads", "1")
    try:
        ready, log = ready_log(process)
        (server,) = children(process.pid)
        os.kill(server, signal.SIGKILL)
        rest, err = process.communicate(timeout=30)
    finally:
        reap(process)
    assert process.returncode == 1, ready + rest + err
    error = err[err.index("Error: ") :]
    assert error.startswith("Error: llama-server stopped unexpectedly; the end of its log:\n")
    assert str(log) not in error  # a path that no longer exists
    assert "srv" in error  # the server's own lines
    assert err.rstrip().endswith(
        "the log was removed with its temporary folder (--log-dir DIR keeps it)"
    )
    assert leftovers(tmp) == []


def test_a_router_removes_its_temporary_log_folder(
    tmp_path: Path, tiny_files: TinyModelFiles, llama_server_binary: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.gguf").symlink_to(tiny_files.model.path)
    tmp = tmp_path / "tmp"
    process = serve(tmp, str(models), "--threads", "1", "--backend", "binary",
                    "--server-path", str(llama_server_binary))  # fmt: skip
    try:
        ready, log = ready_log(process)
        assert log.parent.parent == tmp, ready
        rest, err = interrupt(process)
    finally:
        reap(process)
    assert process.returncode == 0, ready + rest + err
    assert f"✓ server stopped; {REMOVED.format(log.parent)}" in rest
    assert leftovers(tmp) == []
