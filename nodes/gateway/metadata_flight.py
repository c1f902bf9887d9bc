"""One metadata fetch in flight per gateway process.

The gateway's request threads each hold their own clients (a blocking client is not
thread-safe), and each asked the cluster for metadata on its own: with the coordinator's process
dead, N concurrent requests made N fetches at once, each waiting on the dead coordinator. A
request thread that needs metadata while another thread's fetch is in flight now waits for
that fetch instead of starting its own, and its answer -- or its error -- is everybody's.

Freshness: a caller names how fresh an answer it needs, ``since_s`` (monotonic s): the answer
of a fetch *begun* at or after it. ``since_s`` is the call (``GatewayAgent.metadata``: a topic
made or deleted by an earlier request is seen, as when each request fetched its own) or up to
a max age before it (produce). A caller may take the fetch in flight when it began after an
earlier ``join_since_s`` (produce: any begun after a topic was deleted here -- its answer is
newer than any it would trust). A fetch in flight that began earlier is waited for all the
same (one at a time), and a fetch is then begun for everyone who waited for it and needs a newer one.
An error ends every wait on the fetch that raised it: the cluster did not answer while they
waited (it is not stale data); the next call begins a fetch again. A fetch whose thread was
stopped (a BaseException) told nothing: one of its waiters begins the next at once.

A waiter waits at most ``wait_ms_max`` from the fetch's start (a fetch's own asks end well
before: each has its timeout); past it the fetch counts as hung: its waiters raise
``RequestTimeout`` and the next call begins a fetch of its own beside it. A caller with a
deadline of its own (``Admin.list_offsets``'s) waits no longer than that, and one whose fetch
is cut short by its deadline does not hand that timeout to a waiter with more time: that one
fetches again. A fetch that asks for metadata again (the gateway's fetch goes through an
``Admin`` that shares this flight) runs at once.

Thread-safe: the state is under one condition's lock; a fetch runs in the caller's thread,
outside the lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from fabric.errors import RequestTimeout


class _Flight:
    """One fetch: when it began, and once done, its answer or its error."""

    __slots__ = ("started_s", "deadline_s", "thread", "done", "answer", "error", "interrupted")

    def __init__(self, started_s: float, deadline_s: float | None) -> None:
        self.started_s = started_s
        self.deadline_s = deadline_s  # the fetch's own bound (monotonic s), None: its asks' timeouts
        self.thread = threading.current_thread()
        self.done = False
        self.answer: Any = None
        self.error: Exception | None = None
        self.interrupted = False  # its thread was stopped (a BaseException): the cluster said nothing


class MetadataFlight:
    def __init__(self, wait_ms_max: int) -> None:
        """``wait_ms_max``: how long after a fetch began its waiters wait at most (more than
        the fetch's own asks can take); past it the fetch is taken for hung."""
        self.wait_ms_max = wait_ms_max
        self._cond = threading.Condition()
        self._flight: _Flight | None = None   # the fetch in flight
        self._latest: _Flight | None = None   # the fetch begun last of those that answered
        self.waiting = 0  # threads waiting for a fetch now

    def get(self, fetch: Callable[[], Any], since_s: float, join_since_s: float | None = None,
            deadline_s: float | None = None) -> Any:
        """The answer of a fetch begun at or after ``since_s`` (monotonic s): the latest
        answer when its fetch began by then; else the fetch in flight's, waited for, when it
        began by then (or by ``join_since_s``, when earlier); else ``fetch()``'s, run in this
        thread (``fetch`` bounded by ``deadline_s``, monotonic s, when given) -- once the fetch
        in flight (begun earlier) has ended, whose error is raised here too, but for a timeout
        at a deadline earlier than ``deadline_s``. Raises what ``fetch`` raises, and
        ``RequestTimeout`` when the fetch waited for has not ended ``wait_ms_max`` after it
        began or by ``deadline_s``."""
        join_since_s = since_s if join_since_s is None else min(join_since_s, since_s)
        with self._cond:
            while True:
                latest = self._latest
                if latest is not None and latest.started_s >= since_s:
                    return latest.answer
                flight = self._flight
                if flight is None or self._hung(flight) or flight.thread is threading.current_thread():
                    break
                self._wait(flight, deadline_s)
                if flight.interrupted:
                    continue  # no answer of the cluster to share: this one asks it
                if flight.error is not None:
                    if isinstance(flight.error, RequestTimeout) and _later(deadline_s, flight.deadline_s):
                        continue  # cut short by the deadline of the request that fetched: this one has more time
                    error, flight = flight.error, None
                    try:
                        raise error
                    finally:  # the error's traceback holds this frame: no local of it may hold the error
                        del error
                if flight.started_s >= join_since_s:
                    return flight.answer
            again = flight is not None and flight.thread is threading.current_thread()
            if not again:
                mine = self._flight = _Flight(time.monotonic(), deadline_s)
        if again:
            return fetch()  # asked again from within this thread's fetch: it is the one in flight
        try:
            answer = fetch()
        except Exception as e:
            self._end(mine, None, e)  # kept on the flight for its waiters
            # the error's traceback holds this frame: flight -> error -> frame -> flight was a
            # reference cycle, which kept the error and its frames until a cyclic collection
            mine = None  # type: ignore[assignment]
            raise
        except BaseException:  # the thread is being stopped: its waiters fetch again, not stopped too
            self._end(mine, None, RequestTimeout("the metadata fetch in flight was interrupted"), interrupted=True)
            raise
        self._end(mine, answer, None)
        return answer

    def _hung(self, flight: _Flight) -> bool:
        return time.monotonic() - flight.started_s >= self.wait_ms_max / 1000

    def _wait(self, flight: _Flight, deadline_s: float | None) -> None:
        """Until ``flight`` ends, at most ``wait_ms_max`` from its start and until
        ``deadline_s`` (the lock held)."""
        hung_s = flight.started_s + self.wait_ms_max / 1000
        until_s = hung_s if deadline_s is None else min(hung_s, deadline_s)
        self.waiting += 1
        try:
            while not flight.done:
                left_s = until_s - time.monotonic()
                if left_s > 0:
                    self._cond.wait(left_s)
                elif until_s < hung_s:
                    raise RequestTimeout("no metadata by the call's deadline: the fetch in flight (another "
                                         "request's) has not ended")
                else:
                    raise RequestTimeout(f"the metadata fetch in flight (another request's) did not end within "
                                         f"{self.wait_ms_max} ms")
        finally:
            self.waiting -= 1

    def _end(self, flight: _Flight, answer: Any, error: Exception | None, interrupted: bool = False) -> None:
        with self._cond:
            flight.done, flight.answer, flight.error, flight.interrupted = True, answer, error, interrupted
            if self._flight is flight:
                self._flight = None
            if error is None and (self._latest is None or flight.started_s > self._latest.started_s):
                self._latest = flight  # a hung fetch ending late does not replace a newer answer
            self._cond.notify_all()


def _later(deadline_s: float | None, than_s: float | None) -> bool:
    """Whether ``deadline_s`` (None: none) comes after ``than_s``."""
    return than_s is not None and (deadline_s is None or deadline_s > than_s)
