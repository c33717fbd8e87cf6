"""How ``python -m tests`` runs a long command: its output (a compiler's thousands of
warnings, pip's notices) goes to a log file in the cache, not the terminal; on a failure
the log's last lines are shown with its path. On a terminal, one line shows how far along
the command is (cmake's ``[ 45%]``), rewritten in place."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TAIL_LINES = 30
_PERCENT = re.compile(rb"\[\s*(\d{1,3})%\]")


class StepFailed(RuntimeError):
    """A command failed: the message holds the last lines of its log and the log's path."""


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _percent(log: Path) -> str | None:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 4096))
            found = _PERCENT.findall(f.read())
    except OSError:
        return None
    return f"{int(found[-1])}%" if found else None


def run_logged(command: Sequence[str], log: Path, what: str) -> None:
    """Run ``command``, appending everything it prints to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    live = sys.stdout.isatty()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        start = time.monotonic()
        while process.poll() is None:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                if live:
                    done = _percent(log)
                    elapsed = time.monotonic() - start
                    shown = f"{done}, " if done else ""
                    print(f"\r      {what}: {shown}{elapsed / 60:.1f} min ", end="", flush=True)
        if live:
            print("\r\033[K", end="", flush=True)
    if process.returncode != 0:
        raise StepFailed(
            f"{what} failed (exit status {process.returncode}); the last lines of {log}:\n"
            f"{tail(log)}"
        )
