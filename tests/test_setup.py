"""``python -m tests``, the README's first step before pytest: quiet, and clear on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from . import llama_server, models
from ._setup_log import TAIL_LINES, StepFailed, run_logged

ROOT = Path(__file__).resolve().parents[1]
NOISY = (
    "import sys\n"
    "for i in range(2000): print(f'warning {i}', file=sys.stderr if i % 2 else sys.stdout)\n"
)


def test_a_step_sends_what_it_prints_to_its_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "cache" / "build.log"
    run_logged([sys.executable, "-c", NOISY], log, "compiling")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    lines = log.read_text().splitlines()
    assert lines[-1] == "warning 1999" and sum(line.startswith("warning") for line in lines) == 2000


def test_a_failed_step_shows_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    failing = NOISY + "print('error: the real reason', file=sys.stderr); sys.exit(3)\n"
    with pytest.raises(StepFailed) as caught:
        run_logged([sys.executable, "-c", failing], log, "compiling")
    message = str(caught.value)
    assert message.startswith(f"compiling failed (exit status 3); the last lines of {log}:")
    shown = message.splitlines()[1:]
    assert len(shown) == TAIL_LINES and shown[-1] == "error: the real reason"


def test_python_m_tests_says_what_it_has_in_a_few_lines() -> None:
    """Run after ``python -m tests`` (the README's order): everything is cached, so it
    says so and lists its three steps, each one line."""
    if models.smollm2_path().is_file() is False or llama_server.cached() is None:
        pytest.skip("nothing to check before python -m tests has run once (it builds)")
    done = subprocess.run(
        [sys.executable, "-m", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert len(lines) < 40
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        "[1/3] model",
        "[2/3] llama-server",
        "[3/3] fleet",
    ]
