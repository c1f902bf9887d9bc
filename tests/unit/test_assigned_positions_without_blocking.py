"""An assigned group consumer's first ``poll`` does not wait for the group's committed offsets.

A partition ``assign()``ed to a consumer with a group id, never seeked, starts at the group's
committed offset (as Kafka's; ``auto_offset_reset`` only where nothing is committed). ``poll``
looked those offsets up with a blocking call, retried for up to 10 s while the coordinator was
away or loading, whatever the poll's timeout: ``poll(0)`` held the application for seconds. The
OFFSET_FETCH now goes out and its answer is taken up by a later pass, as Kafka's poll does since
KIP-266; meanwhile the partitions are neither fetched nor reset to ``auto_offset_reset``.

A real GroupConsumer and CoordinatorLink on a ManualClock, a fake broker leading t-0 (log end
1000) and a coordinator client that answers on the consumer's next reactor pass and holds
OFFSET_FETCH until the test releases it (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from tests.unit.builders_group_consumer import T0, HeldWorld

T1 = ("t", 1)


class _World(HeldWorld):
    """Group g has committed 30 for t-0; OFFSET_FETCH is held."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(P.OFFSET_FETCH, **{"auto_offset_reset": "latest", "enable_auto_commit": False, **kw})
        self.coordinator.committed[T0] = 30

    def lookups(self) -> int:
        return self.client.sent(P.OFFSET_FETCH)

    def offsets(self, timeout_ms: int = 1000) -> list[int]:
        return [r.offset for r in self.consumer.poll(timeout_ms, max_records=5)]


@pytest.fixture
def world() -> Iterator[_World]:
    w = _World()
    yield w
    w.close()


def test_poll_0_returns_at_once_while_the_committed_offsets_are_looked_up(world: _World) -> None:
    c = world.consumer
    c.assign([T0])
    started = world.clock.now_ms()
    assert c.poll(0) == []
    assert world.clock.now_ms() - started < 1000, "poll(0) waited for the committed offsets"
    assert c.poll(500) == [] and world.clock.now_ms() - started < 2000, "poll(500) outlasted its timeout"
    assert world.lookups() == 1, "a second lookup while the first is on its way"
    assert c.position(T0) is None, "the partition was reset to auto_offset_reset while its commit was looked up"
    world.client.release()
    assert world.offsets() == [30, 31, 32, 33, 34]


@pytest.mark.parametrize("enable_auto_commit", [True, False])
def test_a_lookup_that_times_out_is_tried_again_and_polls_still_return_at_their_timeout(enable_auto_commit: bool) -> None:
    w = _World(enable_auto_commit=enable_auto_commit)
    try:
        w.consumer.assign([T0])
        deadline = w.clock.now_ms() + 30_000
        while w.clock.now_ms() < deadline and w.lookups() < 2:
            before = w.clock.now_ms()
            assert w.consumer.poll(1000) == []
            assert w.clock.now_ms() - before <= 1100, "a poll outlasted its timeout"
        assert w.lookups() == 2, "the lookup that timed out was not tried again"
        assert w.consumer.position(T0) is None
        w.client.release()
        assert w.offsets() == [30, 31, 32, 33, 34]
    finally:
        w.close()


def test_a_lookup_error_that_retrying_cannot_cure_is_raised_from_poll() -> None:
    w = _World()

    def refusing(command: bytes, header: dict) -> dict:
        raise RemoteError(P.MALFORMED_REQUEST, "the group id is not one")
    w.client.answer = refusing
    w.client.holding = False
    try:
        w.consumer.assign([T0])
        with pytest.raises(RemoteError) as e:
            w.consumer.poll(1000)
        assert e.value.code == P.MALFORMED_REQUEST
        with pytest.raises(RemoteError):
            w.consumer.poll(1000)  # and the next poll tries again
        assert w.lookups() == 2
        assert w.consumer.position(T0) is None, "a failed lookup reset the partition"
    finally:
        w.close()


def test_a_partition_seeked_while_its_commit_is_looked_up_keeps_the_seek(world: _World) -> None:
    c = world.consumer
    c.assign([T0])
    c.poll(0)
    c.seek(T0, 5)
    world.client.release()
    assert world.offsets() == [5, 6, 7, 8, 9]


def test_a_partition_assigned_meanwhile_is_looked_up_after_the_lookup_on_its_way(world: _World) -> None:
    c = world.consumer
    c.assign([T0])
    c.poll(0)
    c.assign([T0, T1])
    c.poll(0)
    world.client.release()
    c.maintain()  # (maintain: no records fetched, which would move the positions)
    c.maintain()
    fetched = [sorted(map(tuple, h["partitions"])) for cmd, h in world.client.calls if cmd == P.OFFSET_FETCH]
    assert fetched == [[T0], [T1]]
    assert c.position(T0) == 30 and c.position(T1) == 0  # the fake coordinator answers 0 for nothing committed


def test_a_commit_made_while_the_lookup_is_on_its_way_wins_over_its_answer(world: _World) -> None:
    """The application commits an offset of a partition it has not read yet (it keeps its
    positions elsewhere): the lookup sent before that commit answers the offset before it."""
    c = world.consumer
    c.assign([T0])
    c.poll(0)
    c.commit({T0: 50})
    world.client.release()
    assert world.offsets() == [50, 51, 52, 53, 54]


def test_maintain_positions_an_assigned_consumer_without_waiting(world: _World) -> None:
    """A host that polls only when its own client asks (the consumer service) moves the lookup
    along with ``maintain``."""
    c = world.consumer
    c.assign([T0])
    started = world.clock.now_ms()
    c.maintain()
    assert world.clock.now_ms() - started < 1000 and world.lookups() == 1
    world.client.release()
    c.maintain()
    c.maintain()
    assert c.position(T0) == 30
