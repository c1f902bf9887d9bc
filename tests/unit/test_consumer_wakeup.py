"""``Consumer.wakeup`` (any thread, as Kafka's): a poll waiting for records returns at once with
none instead of at its timeout, and a wakeup with no poll waiting ends the next one; the poll
after that waits as usual. A consumer service stopping answers its instances' long polls so."""

from __future__ import annotations

import threading
import time

from fabric.client.consumer import Consumer

POLL_MS = 20_000


def test_a_waiting_poll_returns_at_once_and_the_next_waits_again() -> None:
    c = Consumer("127.0.0.1:1")  # nothing assigned: a poll only waits
    try:
        got: list = []
        poll = threading.Thread(target=lambda: got.append(c.poll(POLL_MS)), daemon=True)
        started = time.monotonic()
        poll.start()
        c.wakeup()
        poll.join(5)
        assert got == [[]] and time.monotonic() - started < 5
        c.wakeup()  # no poll waiting: the next one returns at once
        started = time.monotonic()
        assert c.poll_batch(POLL_MS) == [] and time.monotonic() - started < 5
        started = time.monotonic()
        assert c.poll(300) == [] and time.monotonic() - started >= 0.25  # the wakeup was taken
    finally:
        c.close()
