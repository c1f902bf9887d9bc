"""A wait on a record's future from the producer's I/O thread (a delivery callback, an
``on_complete`` hook): only that thread completes the future, so a wait there for one not yet
done would wait for itself. It raises ``FabricError`` at once, as ``flush()`` there does;
before, it waited out its whole timeout (or for ever with None) and then said "no
acknowledgement yet". A future already done answers there as anywhere. Real accumulator and
futures; a plain thread plays the I/O thread (the accumulator's ``frees_space``, which the
producer wires to ``Sender.on_io_thread``)."""

from __future__ import annotations

import threading
from typing import Callable

import pytest

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import RecordFuture, RecordFutures, RecordMetadata
from fabric.clock import ManualClock
from fabric.errors import ClientTimeoutError, FabricError

WAIT_S = 2.0  # far above an answer at once, far below a test's budget


class _Rig:
    def __init__(self) -> None:
        self.io_thread: threading.Thread | None = None
        self.accumulator = RecordAccumulator(AccumulatorSettings(linger_ms=0), ManualClock(1000), wake=lambda: None,
                                             frees_space=lambda: threading.current_thread() is self.io_thread)

    def send(self, partition: int = 0) -> RecordFuture:
        return self.accumulator.append("t", partition, 1_700_000_000_000, None, b"v", None, 30)

    def on_io_thread(self, call: Callable[[], object]) -> dict:
        """What ``call`` returned (``value``) or raised (``error``) on the I/O thread; ``waiting``
        if it had not returned within ``WAIT_S``."""
        out: dict = {}

        def run() -> None:
            try:
                out["value"] = call()
            except Exception as e:  # what the test looks at
                out["error"] = e
        self.io_thread = threading.Thread(target=run, daemon=True)
        self.io_thread.start()
        self.io_thread.join(WAIT_S)
        if self.io_thread.is_alive():
            out["waiting"] = True
        return out


WAITS: dict[str, Callable[[RecordFuture], object]] = {
    "result(None)": lambda f: f.result(None),
    "result(timeout)": lambda f: f.result(WAIT_S * 2),
    "exception(None)": lambda f: f.exception(None),
    "many.result(None)": lambda f: RecordFutures([(f.batch, f.index, 1)]).result(None),
    "many.exception(None)": lambda f: RecordFutures([(f.batch, f.index, 1)]).exception(None),
    "many.outcomes(None)": lambda f: RecordFutures([(f.batch, f.index, 1)]).outcomes(None),
}


@pytest.mark.parametrize("wait", list(WAITS))
def test_a_wait_on_the_io_thread_for_a_future_not_done_raises_at_once(wait: str) -> None:
    rig = _Rig()
    future = rig.send()
    out = rig.on_io_thread(lambda: WAITS[wait](future))
    assert "waiting" not in out, f"{wait} on the I/O thread waited for the thread that would complete it"
    error = out.get("error")
    assert isinstance(error, FabricError) and not isinstance(error, ClientTimeoutError), out
    assert "I/O thread" in str(error)


def test_a_future_already_done_answers_on_the_io_thread() -> None:
    rig = _Rig()
    done, other = rig.send(partition=0), rig.send(partition=1)
    done.batch.complete(41, None)
    out = rig.on_io_thread(lambda: (done.result(None), done.exception(None),
                                    RecordFutures([(done.batch, done.index, 1)]).result(None)))
    assert out["value"] == (RecordMetadata("t", 0, 41), None, [RecordMetadata("t", 0, 41)])
    assert not other.done()


def test_a_wait_on_another_thread_still_waits_for_its_timeout() -> None:
    rig = _Rig()
    rig.io_thread = threading.Thread()  # the I/O thread is some other thread
    with pytest.raises(ClientTimeoutError):
        rig.send().result(0.05)
