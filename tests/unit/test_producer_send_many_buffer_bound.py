"""``send_many`` against a bounded buffer: a run of records that a batch could hold but the
free buffer cannot is queued up to the record that does not fit, which then waits for space
(``max_block_ms``) and raises ``BufferExhaustedError`` as ``send`` would -- it used to spin
for ever, waiting for a space that a run bigger than the whole buffer never has."""

from __future__ import annotations

import threading
import time

import pytest

from fabric.errors import BufferExhaustedError
from tests.unit.driven_producer import driven_producer


@pytest.mark.parametrize("values", [[b"x" * 150] * 100, [b"x" * (150 + i % 3) for i in range(100)]],
                         ids=["fixed-size", "mixed-size"])
def test_a_run_bigger_than_the_buffer_queues_what_fits_then_raises(monkeypatch: pytest.MonkeyPatch,
                                                                    values: list) -> None:
    p = driven_producer(monkeypatch, max_block_ms=100, buffer_bytes_max=10_000)  # batches of up to 1,000
    outcome: list = []

    def call() -> None:
        try:
            p.send_many("t", values)
        except BufferExhaustedError as e:
            outcome.append(e)
    caller = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    caller.start()
    caller.join(5)
    try:
        assert not caller.is_alive(), "send_many did not return"
        assert len(outcome) == 1 and time.monotonic() - started < 5
        queued = len(outcome[0].futures)  # type: ignore[attr-defined]
        assert queued > 50 and p.accumulator.buffered_bytes <= 10_000
        assert p.accumulator.buffered_bytes + len(values[queued]) + 24 > 10_000  # the next one did not fit
    finally:
        p.accumulator.close()  # a caller still waiting gives up
        caller.join(5)
        p.sender.stop()
