"""``Reactor.at_pass_end``: what the ZMTP publisher writes its pass's messages with. A function
given runs once, after the pass's after-pass hooks and due timers (what they publish goes out in
the same pass); one given while they run waits for the next pass; a pass with one waiting does
not wait in its poll; an operating error is logged and the others still run."""

from __future__ import annotations

import time

import pytest

from fabric.clock import ManualClock
from fabric.errors import LoomError
from fabric.reactor import Reactor


def test_it_runs_once_after_the_hooks_and_the_due_timers() -> None:
    reactor = Reactor(ManualClock())
    order: list[str] = []
    reactor.after_pass(lambda: order.append("hook"))
    reactor.call_later(0, lambda: (order.append("timer"), reactor.at_pass_end(lambda: order.append("end"))))
    reactor.run_once(0)
    assert order == ["hook", "timer", "end"]
    reactor.run_once(0)
    assert order == ["hook", "timer", "end", "hook"]  # once


def test_one_given_while_they_run_waits_for_the_next_pass_which_does_not_wait() -> None:
    reactor = Reactor(ManualClock())
    ran: list[int] = []

    def first() -> None:
        ran.append(1)
        reactor.at_pass_end(lambda: ran.append(2))
    reactor.at_pass_end(first)
    reactor.run_once(0)
    assert ran == [1]
    started = time.monotonic()
    reactor.run_once(5_000)  # nothing to poll for: only the waiting function keeps it short
    assert ran == [1, 2] and time.monotonic() - started < 2.5


def test_an_operating_error_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    reactor = Reactor(ManualClock())
    ran: list[str] = []

    def fails() -> None:
        raise LoomError("a full disk")
    reactor.at_pass_end(fails)
    reactor.at_pass_end(lambda: ran.append("next"))
    reactor.run_once(0)
    assert ran == ["next"] and "pass-end function" in caplog.text


def test_a_programmer_error_leaves_the_pass() -> None:
    reactor = Reactor(ManualClock())

    def broken() -> None:
        raise TypeError("a bug")
    reactor.at_pass_end(broken)
    with pytest.raises(TypeError):
        reactor.run_once(0)
