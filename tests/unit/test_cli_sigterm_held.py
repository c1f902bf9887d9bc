"""SIGTERM during `loom consume` ends it as Ctrl-C does, but never between a record's line
written and counted: the count ("Processed a total of N messages") said one line fewer than
were printed when the signal landed there."""

from __future__ import annotations

import os
import signal

import pytest

from nodes import cli_data


def test_a_sigterm_while_a_line_is_written_is_raised_once_it_is_counted() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        cli_data._sigterm_as_interrupt()
        counted = []
        with pytest.raises(cli_data.Terminated):
            with cli_data._sigterm_held():
                os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: held, not raised
                counted.append(1)
        assert counted == [1]
        with pytest.raises(cli_data.Terminated):  # outside a held line: at once
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    finally:
        signal.signal(signal.SIGTERM, before)
        cli_data._SIGTERM.update(held=False, pending=False)
