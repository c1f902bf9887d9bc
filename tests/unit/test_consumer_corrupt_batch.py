"""A batch that is not what its header says, in the middle of one ``poll``: the positions moved
past every run of the poll before any was unpacked, so the error left the good records before it
and the corrupt batch itself behind the positions -- never returned, and committed by the next
auto-commit (skipped by the group). Now, as Kafka's consumer does, ``poll`` returns the records
before the corrupt batch and raises at the next poll, its position at the corrupt batch."""

from __future__ import annotations

import msgpack
import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.errors import RemoteError
from fabric.records import build_batch, view_batches
from tests.unit.fakes import RecordingClient, as_leader_wrote

TS = 1_700_000_000_000


def _good(n: int) -> bytes:
    return build_batch([(TS, None, b"v%d" % i, None) for i in range(n)])


def _corrupt() -> bytes:
    return bytes(B.build(msgpack.packb([[TS, None, b"v", None]] * 2), 3, TS, TS))  # its header says 3


def _consumer_with(*views: tuple[int, bytes]) -> Consumer:
    """A consumer of t-0 and t-1 at offset 0 with these (partition, batch) runs fetched."""
    consumer = Consumer("tcp://127.0.0.1:1", client_factory=lambda endpoint: RecordingClient())
    consumer.assign([("t", 0), ("t", 1)])
    for tp in consumer.assignment():
        consumer.seek(tp, 0)
    _fetched(consumer, *views)
    return consumer


def _fetched(consumer: Consumer, *views: tuple[int, bytes]) -> None:
    for p, data in views:
        view = view_batches("t", p, data)
        assert view is not None
        consumer._buffer.append(view)
        consumer._buffered_records += len(view)


def test_a_poll_returns_the_records_before_a_corrupt_batch_and_raises_at_the_next() -> None:
    consumer = _consumer_with((0, _good(3)), (1, _corrupt()))
    try:
        records = consumer.poll(0)
        assert [(r.partition, r.offset) for r in records] == [(0, 0), (0, 1), (0, 2)]
        assert consumer.position(("t", 0)) == 3
        assert consumer.position(("t", 1)) == 0, "the corrupt batch is behind the position: skipped"
        _fetched(consumer, (1, _corrupt()))  # fetched again from its position
        with pytest.raises(RemoteError) as e:
            consumer.poll(0)
        assert e.value.code == P.CORRUPT_MESSAGE
        assert consumer.position(("t", 1)) == 0
    finally:
        consumer.close()


def test_runs_after_a_corrupt_batch_are_not_skipped_either() -> None:
    consumer = _consumer_with((1, _corrupt()), (0, _good(3)))
    try:
        with pytest.raises(RemoteError):
            consumer.poll(0)
        assert consumer.position(("t", 1)) == 0 and consumer.position(("t", 0)) == 0, \
            "records fetched after the corrupt batch were skipped"
    finally:
        consumer.close()


def _run_from(consumer: Consumer, p: int, data: bytes) -> None:
    """``data`` fetched again from ``p``'s position (a give-back dropped what was buffered)."""
    tp = ("t", p)
    if not any((v.topic, v.partition) == tp for v in consumer._buffer):
        view = view_batches("t", p, data, start_offset=consumer.position(tp) or 0)
        assert view is not None
        consumer._buffer.append(view)
        consumer._buffered_records += len(view)


@pytest.mark.parametrize("max_bytes", [None, 1_000_000, 150])
def test_good_batches_fetched_before_a_corrupt_one_in_one_run_are_returned(max_bytes: int | None) -> None:
    """One fetch answer (one run) of five good batches, then a corrupt one. Its records were
    unpacked at once, and the first poll raised with the position at the run's start: the good
    records were never returned (fetched again, the run raised again), nor was the position at
    the corrupt batch. With max_bytes, the position stopped where a piece the corrupt batch was
    in began (a record of the good batches)."""
    data = b"".join(as_leader_wrote(_good(20), base, 0) for base in range(0, 100, 20))
    data += as_leader_wrote(_corrupt(), 100, 0)
    consumer = _consumer_with((0, data))
    try:
        got: list[int] = []
        for _ in range(100):
            _run_from(consumer, 0, data)
            try:
                got += [r.offset for r in consumer.poll(0, max_bytes=max_bytes)]
            except RemoteError as e:
                assert e.code == P.CORRUPT_MESSAGE
                break
        assert got == list(range(100))
        assert consumer.position(("t", 0)) == 100  # at the corrupt batch: sought past, the reading goes on
    finally:
        consumer.close()
