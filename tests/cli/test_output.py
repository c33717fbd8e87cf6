"""Printing a command's ready lines while a Ctrl-C may come: the lines go out whole, once."""

from __future__ import annotations

import os
import signal

import pytest

from llamatelemetry.cli._output import signals_held


def test_a_ctrl_c_while_lines_are_printed_lands_after_them() -> None:
    printed = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            printed.append("Press Ctrl-C to stop.")  # not cut short by the signal
    assert printed == ["Press Ctrl-C to stop."]
    assert signal.getsignal(signal.SIGINT) is before


def test_no_signal_no_interrupt() -> None:
    with signals_held():
        pass
