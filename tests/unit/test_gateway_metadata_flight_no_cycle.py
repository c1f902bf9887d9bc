"""A failed metadata fetch leaves no reference cycle behind (``MetadataFlight``).

The fetch's error was kept on its ``_Flight`` (for the waiters) while the error's traceback held
the frame of ``get``, whose local ``mine`` is that flight: flight -> error -> traceback -> frame
-> flight, a cycle that kept the error, its traceback's frames and what they refer to (the
fetch and everything its frames held) until a cyclic collection, which the gateway's tuned
collector (``nodes/run.py``) runs rarely. The collector is off while these run: what is not
freed by reference counting stays.
"""

from __future__ import annotations

import threading
import time
import weakref

import pytest

from fabric.errors import RequestTimeout
from nodes.gateway.metadata_flight import MetadataFlight


class Boom(RequestTimeout):
    """A fetch's error (a subclass: built-in exceptions take no weak references)."""


class Held:
    """Something only the failing fetch's frame refers to."""


def remembered(error: Exception, refs: list[weakref.ref]) -> Exception:
    refs.append(weakref.ref(error))
    return error


def test_a_failed_fetch_and_its_error_are_freed_without_a_collection(no_collector: None) -> None:
    flight = MetadataFlight(wait_ms_max=1000)
    refs: list[weakref.ref] = []

    def fetch() -> None:
        held = Held()
        refs.append(weakref.ref(held))
        raise remembered(Boom("no metadata"), refs)  # no local of its own refers to the error

    with pytest.raises(Boom):
        flight.get(fetch, time.monotonic())
    assert [r() for r in refs] == [None, None], "the failed fetch's error and frames are kept by a reference cycle"


def test_the_next_call_after_a_failed_fetch_fetches_again(no_collector: None) -> None:
    flight = MetadataFlight(wait_ms_max=1000)
    answers = iter([Boom("no metadata"), "md"])

    def fetch() -> str:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    with pytest.raises(Boom):
        flight.get(fetch, time.monotonic())
    assert flight.get(fetch, time.monotonic()) == "md"


def test_a_waiter_that_raises_the_failed_fetchs_error_leaves_no_cycle(no_collector: None) -> None:
    flight = MetadataFlight(wait_ms_max=10_000)
    refs: list[weakref.ref] = []
    fetching, fail = threading.Event(), threading.Event()
    outcome: dict[str, BaseException | None] = {}

    def fetch() -> None:
        fetching.set()
        assert fail.wait(10)
        raise remembered(Boom("no metadata"), refs)

    def fetcher() -> None:
        try:
            flight.get(fetch, time.monotonic())
        except Boom:
            outcome["fetcher"] = None

    def waiter() -> None:
        try:
            flight.get(fetch, time.monotonic() - 1)  # joins the fetch in flight (begun after this)
        except Boom:
            outcome["waiter"] = None

    a = threading.Thread(target=fetcher)
    a.start()
    assert fetching.wait(10)
    b = threading.Thread(target=waiter)
    b.start()
    deadline = time.monotonic() + 10
    while flight.waiting == 0:
        assert time.monotonic() < deadline, "the waiter never waited"
        time.sleep(0.001)
    fail.set()
    a.join(10)
    b.join(10)
    assert outcome == {"fetcher": None, "waiter": None}
    assert [r() for r in refs] == [None], "the error a waiter raised is kept by a reference cycle"
