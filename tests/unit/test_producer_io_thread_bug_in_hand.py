"""A bug that stops the producer's I/O thread fails every record waiting -- also those of the
batches the pass that met the bug held in hand: taken from their partition's queue for a
request not yet sent, or a reply's batches not yet handled. (They were in no queue when the
thread failed what was left, so their futures were never completed: ``result()`` without a
timeout, ``flush()`` and an ``on_complete`` hook waited for ever.)"""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.client.futures import BatchState
from fabric.client.producer import Producer
from fabric.client.sender import Sender
from fabric.errors import MAY_HAVE_BEEN_WRITTEN, FabricError
from fabric.metadata import ClusterMetadata
from tests.unit.driven_producer import answer, driven_producer, send_pass

NOWHERE = "127.0.0.1:9"  # nothing listens: the requests wait for a connection, unanswered
BUG = TypeError("a bug in the I/O thread's pass")


def _md() -> ClusterMetadata:
    return ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": "tcp://127.0.0.1:9",
        "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"t": {"configs": {}, "partitions": [[1, 3, [1], [1]]] * 2}}})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies loudly
def test_a_bug_while_a_request_is_being_made_fails_the_batches_already_taken_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = BatchState.build

    def build(self: BatchState, **kw: object) -> bytes:
        if self.partition == 1:  # partition 0's batch is taken for the request before this one is built
            raise BUG
        return real_build(self, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(BatchState, "build", build)
    p = Producer(NOWHERE, linger_ms=60_000, idempotent=False)
    try:
        p.metadata.update(_md())
        first = p.send("t", b"a", partition=0)
        second = p.send("t", b"b", partition=1)
        p.sender.wake()
        p.accumulator.close_all()  # both batches ready: one pass takes them
        p.sender.wake()
        for f in (first, second):
            with pytest.raises(FabricError) as e:
                f.result(5)  # (a ClientTimeoutError: never completed)
            assert e.value.__cause__ is BUG, e.value
    finally:
        p.sender.stop()


def test_a_bug_while_a_reply_is_handled_fails_its_batches_not_yet_handled_as_possibly_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass ends as ``Sender.run`` ends it on a bug: ``failure`` set, then ``_shut_down``."""
    p = driven_producer(monkeypatch)

    def split(self: Sender, b: BatchState) -> list:
        raise BUG
    monkeypatch.setattr(Sender, "_split", split)
    try:
        refused = [p.send("t", b"a%d" % i, partition=0) for i in range(2)]
        written = p.send("t", b"b", partition=1)
        parts = send_pass(p)
        assert parts == [("t", 0), ("t", 1)]
        with pytest.raises(TypeError):  # partition 0's batch is refused as too large: split, which meets the bug
            answer(p, [[-1, P.RECORD_TOO_LARGE, "big"], [0, 0, ""]])
        p.sender.failure = FabricError("the producer's I/O thread stopped")
        p.sender.failure.__cause__ = BUG
        p.sender._shut_down()
        for f in refused + [written]:
            assert f.done()
            assert f.exception(0).__cause__ is BUG
        assert MAY_HAVE_BEEN_WRITTEN in str(written.exception(0))  # answered written, the answer never read
    finally:
        p.sender.stop()
