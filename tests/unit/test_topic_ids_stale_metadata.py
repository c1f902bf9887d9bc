"""A member whose metadata is older than the topic it is handed positions in: the group's
committed offset names the new topic (OFFSET_FETCH's ``topic_ids``) while the member's metadata
-- or the broker its metadata points to, not yet told of the deletion -- still names the topic
that was deleted. The position is an offset of the new topic: it must be read there, once the
metadata names it, never in the old topic (whose answer made it "read in" the old topic, so
that the newer metadata then started it again at ``auto_offset_reset``: with ``latest``, the
new topic's records from the committed offset on were skipped, and committed past).

A real GroupConsumer on the fake broker and scripted coordinator of
tests/unit/builders_group_consumer.py.
"""

from __future__ import annotations

from typing import Any, Callable

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from fabric.errors import RequestTimeout
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.builders_group_consumer import T0, OnePartitionBroker, SubscribedMember

NEW_ID = "id-t2"
COMMITTED = 500


def _poll(consumer: GroupConsumer, polls: int) -> list[int]:
    got: list[int] = []
    for _ in range(polls):
        got = [r.offset for r in consumer.poll(1000, max_records=10)]
        if got:
            break
    return got


class _SilentCoordinator:
    """The coordinator's endpoint while it is silent: every METADATA ask times out (in the
    member's next reactor pass). Its metadata would name the new topic -- the coordinator's
    OFFSET_FETCH named it -- so the member's metadata comes from the broker's stale copy only."""

    def __init__(self, broker: OnePartitionBroker) -> None:
        self.broker = broker

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        assert command == P.METADATA, command
        self.broker.replies.append(lambda: callback(None, [], RequestTimeout("metadata timed out")))
        return len(self.broker.replies)

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_committed_offset_of_the_new_topic_is_not_read_in_the_old_one_by_a_member_with_stale_metadata() -> None:
    m = SubscribedMember(auto_offset_reset="latest")
    silent = _SilentCoordinator(m.broker)
    m.consumer._client_factory = lambda endpoint: silent if endpoint == m.broker.metadata.coordinator else m.broker
    try:
        # t was deleted and made again (NEW_ID), and the group committed 500 in the new topic; the
        # member's metadata, and the broker it points to, still name the old topic (the
        # coordinator, silent, is not heard)
        m.coordinator.topic_ids["t"] = NEW_ID
        m.coordinator.committed[T0] = COMMITTED
        before = _poll(m.consumer, 5)
        assert before == [], f"records of the deleted topic were returned at the new topic's offsets: {before}"
        m.broker.make_topic_again(NEW_ID)  # the broker learns of it; the member's metadata follows
        got = _poll(m.consumer, 40)
        assert got[:1] == [COMMITTED], \
            f"the new topic's committed offset {COMMITTED} was lost: the member read from {got[:1]} " \
            f"(position {m.consumer.position(T0)})"
    finally:
        m.consumer.close()


def test_partitions_of_one_topic_read_in_two_ids_with_stale_metadata_name_the_older_one() -> None:
    """t-0 starts at the group's committed offset of the new topic (NEW_ID, which the member's
    metadata does not name yet); t-1, with nothing committed, was started in the topic the
    stale metadata names (a broker's stale copy still serving it). A commit of both names one
    id for t: it must be the old one -- refused -- not the new one, which the coordinator takes
    for t-1's position too (an offset of the deleted topic, committed for the new one)."""
    m = SubscribedMember()
    try:
        c = m.consumer
        c.metadata = ClusterMetadata(2, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                                     {"t": TopicInfo("t", tuple(PartitionInfo("t", p, 1, 1, (1,), (1,)) for p in range(2)),
                                                     {}, "id-t")}, coordinator="tcp://coordinator")
        t1 = ("t", 1)
        c.positions = {T0: COMMITTED, t1: 1000}
        c._positioned_from_outside([T0], {"t": NEW_ID})  # as the assignment's committed offsets do
        c._read_in[t1] = "id-t"  # as a fetch of the metadata's topic does
        assert c._commit_topic_ids({T0: COMMITTED, t1: 1000}) == {"t": "id-t"}, \
            "a position of the old topic was offered as the new topic's"
    finally:
        m.consumer.close()
