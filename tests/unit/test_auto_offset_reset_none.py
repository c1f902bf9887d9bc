"""``auto_offset_reset="none"``: a partition with nothing to start from raises, as Kafka's
NoOffsetForPartitionException -- it was taken for "latest", and the consumer started at the log
end, skipping every record before it, where the application asked never to be moved silently.

A real Consumer / GroupConsumer on a ManualClock, a fake broker leading t-0 (log end 1000) and
a scripted coordinator that answers -1 for nothing committed (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.errors import RemoteError
from tests.unit.builders_group_consumer import T0, HeldWorld, consumer_config


def _group(**kw: object) -> HeldWorld:
    w = HeldWorld(P.JOIN_GROUP, auto_offset_reset="none", enable_auto_commit=False, **kw)
    w.client.holding = False
    w.coordinator.uncommitted = -1
    return w


def _raises_no_position(poll) -> None:  # noqa: ANN001
    with pytest.raises(RemoteError) as e:
        poll()
    assert e.value.code == P.OFFSET_OUT_OF_RANGE and "auto_offset_reset" in e.value.message


@pytest.mark.parametrize("mode", ["subscribe", "assign"])
def test_a_group_consumer_with_nothing_committed_raises_until_the_application_seeks(mode: str) -> None:
    w = _group()
    c = w.consumer
    try:
        c.subscribe(["t"]) if mode == "subscribe" else c.assign([T0])
        for _ in range(2):  # and the next poll raises again
            _raises_no_position(lambda: c.poll(1000))
        assert c.position(T0) is None
        c.seek(T0, 7)
        assert [r.offset for r in c.poll(1000, max_records=3)] == [7, 8, 9]
    finally:
        w.close()


@pytest.mark.parametrize("mode", ["subscribe", "assign"])
def test_a_group_consumer_starts_at_the_committed_offset(mode: str) -> None:
    w = _group()
    w.coordinator.committed[T0] = 30
    c = w.consumer
    try:
        c.subscribe(["t"]) if mode == "subscribe" else c.assign([T0])
        records = []
        for _ in range(5):
            records += c.poll(1000, max_records=3)
            if records:
                break
        assert [r.offset for r in records] == [30, 31, 32]
    finally:
        w.close()


def test_a_consumer_without_a_group_raises_for_a_partition_never_seeked() -> None:
    w = _group()
    c = Consumer("127.0.0.1:1", **{k: v for k, v in consumer_config(w.broker, w.reactor, None).items()
                                   if k not in ("coordinator", "heartbeat_factory")} | {"auto_offset_reset": "none"})
    try:
        c.assign([T0])
        _raises_no_position(lambda: c.poll(1000))
        c.seek_to_beginning([T0])  # an explicit reset is still taken
        assert [r.offset for r in c.poll(1000, max_records=2)] == [0, 1]
    finally:
        c.close()
        w.close()


def test_an_out_of_range_answer_read_after_records_were_taken_loses_none_of_them() -> None:
    """A prefetch's out-of-range answer can be read in the pass that follows the taking of
    records (their positions already advanced): raised there, it took those records with it.
    The error waits for the next poll, which raises before it takes anything."""
    w = _group()
    w.broker.out_of_range_from = 50  # what the first fetch answers (0..49) is all there is
    c = Consumer("127.0.0.1:1", **{k: v for k, v in consumer_config(w.broker, w.reactor, None).items()
                                   if k not in ("coordinator", "heartbeat_factory")} | {"auto_offset_reset": "none"})
    try:
        c.assign([T0])
        c.seek(T0, 0)
        returned: list[int] = []
        with pytest.raises(RemoteError) as e:
            for _ in range(20):
                returned += [r.offset for r in c.poll(1000, max_records=10)]
        assert e.value.code == P.OFFSET_OUT_OF_RANGE
        assert returned == list(range(0, 50)) and c.position(T0) == 50, "records taken by a poll that raised"
    finally:
        c.close()
        w.close()
