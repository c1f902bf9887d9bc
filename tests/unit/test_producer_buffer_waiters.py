"""Appends waiting for buffer space (``append`` and ``append_many``, several at once) each go on
as soon as released batches leave room for them -- none waits out ``max_block_ms`` because a
release came while it was between looking at the buffer and waiting (``release`` wakes the
waiters only when there are some)."""

from __future__ import annotations

import threading
from collections import deque
import time

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.clock import ManualClock
from fabric.records import pack_values
from tests.harness import wait_until

RECORD_BYTES = 100
WAIT_S = 10  # far below max_block_ms: an append left waiting fails the test, not the wait


def test_every_append_waiting_for_space_goes_on_as_batches_are_released_one_by_one() -> None:
    clock = ManualClock(1000)
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=0, batch_records_max=1, buffer_bytes_max=10 * RECORD_BYTES,
                                                max_block_ms=60_000), clock, wake=lambda: None)
    for _ in range(10):
        acc.append("t", 0, 1, None, b"v", None, RECORD_BYTES)
    queued: list[int] = []

    def one(n: int) -> None:
        acc.append("t", n % 3, 1, None, b"v", None, RECORD_BYTES)
        queued.append(1)

    def many(n: int) -> None:
        values = [b"v"] * 3
        acc.append_many("t", n % 3, 1, values, RECORD_BYTES, lambda a, b: pack_values(values[a:b], 1, 1))
        queued.append(3)

    threads = [threading.Thread(target=one if n % 4 else many, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    wait_until(lambda: acc._space_waiters == len(threads), WAIT_S, 0.001, "every append waiting for space")
    full = 10 * RECORD_BYTES
    taken: deque = deque()
    for _ in range(10 + 18):  # one record's room at a time: a waiter takes it at once
        if not any(t.is_alive() for t in threads):
            break
        taken += acc.take_ready(clock.now_ms())
        acc.release(taken.popleft())
        wait_until(lambda: acc.buffered_bytes == full or not any(t.is_alive() for t in threads), WAIT_S, 0.001,
                   "a waiting append to take the room released")
    deadline = time.monotonic() + WAIT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "an append was left waiting after room was released"
    assert sum(queued) == 9 * 1 + 3 * 3
    assert acc._space_waiters == 0
