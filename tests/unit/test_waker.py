"""fabric.waker through a real Reactor: a wake from another thread ends a blocked poll and
runs the handler on the reactor's thread; wakes coalesce; a wake during the handler is not
lost; wake after close is a no-op; the pipe fallback (no eventfd) behaves the same. A waker
never closed closes its descriptors when collected (once: not again after a close), and not in
the interpreter's exit handlers (a daemon thread may still poll it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fabric.reactor import Reactor
from fabric.waker import Waker
from tests.harness import ROOT
from tests.unit.fakes import descriptor_open

BLOCK_MS = 5000


@pytest.fixture(params=["eventfd", "pipe"])
def waker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Waker:
    if request.param == "pipe":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd here")
    w = Waker()
    yield w
    w.close()


def test_a_wake_from_another_thread_ends_a_blocked_poll_and_runs_the_handler_on_the_reactor(waker: Waker) -> None:
    reactor = Reactor()
    ran: list[int] = []
    reactor.add_waker(waker, lambda: ran.append(threading.get_ident()))
    threading.Timer(0.05, waker.wake).start()
    t0 = time.monotonic()
    reactor.run_once(BLOCK_MS)
    assert ran == [threading.get_ident()]
    assert time.monotonic() - t0 < BLOCK_MS / 1000 / 2  # woken, not timed out


def test_wakes_coalesce_into_one_call(waker: Waker) -> None:
    reactor = Reactor()
    ran: list[int] = []
    reactor.add_waker(waker, lambda: ran.append(1))
    for _ in range(100_000):  # more than a pipe would hold
        waker.wake()
    reactor.run_once(BLOCK_MS)
    assert ran == [1]
    reactor.run_once(0)
    assert ran == [1]  # nothing left pending
    waker.wake()
    reactor.run_once(BLOCK_MS)
    assert ran == [1, 1]  # and the next wake is not swallowed


def test_a_wake_during_the_handler_brings_one_more_call(waker: Waker) -> None:
    reactor = Reactor()
    ran: list[int] = []

    def handler() -> None:
        ran.append(1)
        if len(ran) == 1:
            waker.wake()  # as another thread's wake racing the handler would
    reactor.add_waker(waker, handler)
    waker.wake()
    reactor.run_once(BLOCK_MS)
    reactor.run_once(BLOCK_MS)
    assert ran == [1, 1]


def test_removed_and_closed_it_is_neither_polled_nor_written(waker: Waker) -> None:
    reactor = Reactor()
    ran: list[int] = []
    reactor.add_waker(waker, lambda: ran.append(1))
    reactor.remove_waker(waker)
    waker.close()
    waker.wake()  # a no-op: never a write to a closed (maybe reused) descriptor
    reactor.run_once(10)
    assert ran == []
    waker.close()  # twice is fine


@pytest.mark.parametrize("kind", ["eventfd", "pipe"])
def test_a_waker_dropped_without_close_gives_its_descriptors_back(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner dropped without its close (a Sender a test or an application never closed) held
    a descriptor for ever: a process making many ran past select's 1024 and, in time, its limit."""
    if kind == "pipe":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd here")
    w = Waker()
    fds = {w.fd, w._write_fd}
    assert all(descriptor_open(fd) for fd in fds)
    del w  # no cycle: freed at once
    assert not any(descriptor_open(fd) for fd in fds)


def test_close_then_collection_closes_once() -> None:
    """The descriptor number is free for reuse after close: the collection must not close it again."""
    w = Waker()
    fd = w.fd
    devnull = os.open(os.devnull, os.O_RDONLY)
    w.close()
    reused = os.dup2(devnull, fd)  # its next owner, whatever the next open would take
    os.close(devnull)
    try:
        del w
        assert descriptor_open(reused), "the collection closed the descriptor's next owner"
    finally:
        if descriptor_open(reused):
            os.close(reused)


def test_a_waker_alive_at_the_exit_keeps_its_descriptors_through_the_exit_handlers() -> None:
    """A daemon thread (a producer's I/O thread) may still poll a waker while the interpreter's
    exit handlers run: they must not close its descriptors under it (the exit closes them)."""
    script = textwrap.dedent("""
        import atexit, os, sys, weakref
        assert not weakref.finalize._registered_with_atexit  # else check would run before it
        def check():  # runs after the exit handlers registered later: weakref.finalize's
            try:
                os.fstat(WAKER.fd)
                sys.stdout.write("open")
            except OSError:
                sys.stdout.write("closed")
        atexit.register(check)
        from fabric.waker import Waker
        WAKER = Waker()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "open"), done.stderr
