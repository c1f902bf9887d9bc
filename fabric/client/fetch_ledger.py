"""The gateway's record of one consumer instance's fetches (``FetchLedger``), which lets the
instance undo a fetch whose answer was lost (nodes/consumer_instance.py): what
``fabric.client.services.ConsumerInstance`` sends with each request when it has one.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from fabric import protocol as P
from fabric.errors import RemoteError

# a fetch of an instance waits this long for the one before it: as long as the consumer service
# lets a fetch wait behind other work before it answers "timed out" (half its ``budget_ms``,
# fabric.client.services.CALL_TIMEOUT_MS)
FETCH_TURN_WAIT_MS = 5_000


class FetchLedger:
    """Which fetches of one consumer instance its caller got the answer to, so that the
    instance can undo a fetch whose answer was lost (a timeout, a dropped connection, a reply
    that did not decode): its records went nowhere, and the positions are past them.

    Each fetch is numbered (``fetch_id``, from 1). While the last fetch handed out has no
    answer -- it settled without it, or it is still on its way (another thread's) -- every
    request to the instance says so: ``answered``, the id of the last fetch whose answer
    arrived (0: none), and ``lost``, the id of the last one settled without it. Before it
    serves the request, the instance seeks the partitions of the last fetch it ran back to
    where that fetch began if its id is in ``(answered, lost]`` (nodes/consumer_instance.py). A
    fetch still on its way when the request goes out is above ``lost``: never undone while its
    answer may still come, and above ``answered``: the request does not confirm its records
    (they stay out of the auto-commits).

    One fetch is on its way at a time (``turn``): the instance undoes only the last fetch it
    ran, so a fetch lost while a later one ran after it would be skipped.

    Thread-safe: the gateway's request threads share one per instance.
    """

    def __init__(self) -> None:
        self._turn = threading.Lock()  # held by the fetch on its way
        self._lock = threading.Lock()
        self._issued = 0     # the last fetch id handed out
        self._answered = 0   # the last fetch id whose answer arrived
        self._lost = 0       # the last fetch id that settled without its answer

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the fetch on its way to end. Raises RemoteError(request_timed_out) after
        FETCH_TURN_WAIT_MS."""
        if not self._turn.acquire(timeout=FETCH_TURN_WAIT_MS / 1000):
            raise RemoteError(P.REQUEST_TIMED_OUT, "the instance's previous fetch is still under way")
        try:
            yield
        finally:
            self._turn.release()

    def begin(self) -> int:
        """The id of a fetch about to be sent."""
        with self._lock:
            self._issued += 1
            return self._issued

    def settle(self, fetch_id: int, answered: bool) -> None:
        """Fetch ``fetch_id`` ended: with its answer in hand, or without (lost)."""
        with self._lock:
            if answered:
                self._answered = max(self._answered, fetch_id)
            else:
                self._lost = max(self._lost, fetch_id)

    def settled(self) -> dict[str, int]:
        """What a request says: ``{answered, lost}`` while the last fetch handed out has no
        answer (lost, or on its way), else nothing."""
        with self._lock:
            return {"answered": self._answered, "lost": self._lost} if self._issued > self._answered else {}
