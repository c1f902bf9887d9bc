"""A group's committed offset past where an unclean election truncated its partition's log, on a
real cluster: the member that starts from it reads the records the new leader wrote from the
truncation point on (KIP-320's committed leader epoch).

Three brokers (the offsets topic keeps its leader on the third through both failures), the topic
on two of them, unclean leader election on, min.insync.replicas 1. Records a0..a9 reach both
replicas; the follower stops, leaves the ISR, and the leader takes b0..b19 (offsets 10..29). A
member of group ``g`` reads them and commits 30 -- with the leader epoch of b19. The leader is
SIGKILLed and the follower started again: elected uncleanly, its log ends at 10, and it takes
c0..c24 (offsets 10..34): its log grows back past the committed 30. A new member starts from the
committed offset; its first fetch names the committed epoch, the new leader answers that its log
parts from it at 10, and the member reads c0..c24. Committed without the epoch, the offset 30 is
within the new log: the member read c20..c24 only and never c0..c19, each acknowledged.

And where the new log stays below the committed offset, the member sent back to 10 commits what
it reads there, below 30 in a newer epoch, and the next member starts from that commit."""

from __future__ import annotations

from typing import Callable

import pytest

from fabric.client import Admin, GroupConsumer
from fabric.client.group_admin import GroupAdmin
from tests.harness import Cluster, wait_until
# its topic, and helpers that write to and read its partition 0
from tests.integration.test_consumer_log_truncated import TOPIC, _log_end, _produce, _read, _replicated

pytestmark = pytest.mark.timeout(240)

TP = (TOPIC, 0)


def _member(bootstrap: str, how: str, reset: str) -> GroupConsumer:
    """A consumer of group ``g`` holding partition 0: by subscription (the join's OFFSET_FETCH)
    or assigned (the assigned consumer's lookup of the committed offset)."""
    c = GroupConsumer(bootstrap, group_id="g", auto_offset_reset=reset, enable_auto_commit=False)
    if how == "subscribed":
        c.subscribe([TOPIC])
    else:
        c.assign([TP])
    return c


def _committed_30_then_truncated_to_10(cluster: Cluster, admin: Admin, how: str) -> int:
    """a0..a9 on both replicas, b0..b19 on the leader alone, read by a member that commits 30
    (with b19's epoch); the leader killed and the follower elected uncleanly, its log ending at
    10. Returns the new leader's id."""
    a = [b"a%d" % i for i in range(10)]
    leader, follower = _replicated(cluster, admin, a)
    first = _member(cluster.bootstrap, how, "earliest")
    try:
        got = _read(first, lambda got: len(got) >= 10, "the first member to read a0..a9")
        first.commit()  # (the offsets topic is made now, on three live brokers)
        cluster.stop(f"broker-{follower}")
        wait_until(lambda: tuple(admin.metadata().partition(TOPIC, 0).isr) == (leader,), 30,
                   what="the stopped follower to leave the ISR")
        b = [b"b%d" % i for i in range(20)]
        _produce(cluster.bootstrap, b)
        got += _read(first, lambda got: len(got) >= 20, "the first member to read b0..b19")
        assert [r.value for r in got] == a + b
        first.commit()
    finally:
        first.close()
    assert GroupAdmin(admin).committed("g")[TP] == 30

    cluster.kill(f"broker-{leader}")
    cluster.start_node(f"broker-{follower}")
    wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == follower, 60,
               what="the follower to be elected (uncleanly)")
    [held] = _log_end(cluster, follower)
    assert held == 10, f"the new leader's log ends at {held}, not at a0..a9's end"
    return follower


@pytest.mark.parametrize("how", ["subscribed", "assigned"])
def test_a_member_starting_from_a_commit_past_a_truncation_reads_what_the_new_leader_wrote_there(
        cluster_factory: Callable[..., Cluster], how: str) -> None:
    cluster = cluster_factory(3, overrides={"replication": {"unclean_leader_election": True},
                                            "topics": {"min_insync_replicas": 1}})
    with Admin(cluster.bootstrap) as admin:
        _committed_30_then_truncated_to_10(cluster, admin, how)
        c_values = [b"c%d" % i for i in range(25)]
        _produce(cluster.bootstrap, c_values)  # offsets 10..34: past the committed 30

        second = _member(cluster.bootstrap, how, "latest")  # (where the policy would skip most)
        try:
            got = _read(second, lambda got: any(r.value == b"c24" for r in got), "the second member to read c24")
            assert [(r.offset, r.value) for r in got] == [(10 + i, v) for i, v in enumerate(c_values)], \
                "records the new leader wrote below the committed offset were skipped"
        finally:
            second.close()


def test_a_member_sent_back_below_the_committed_offset_commits_what_it_reads_there(
        cluster_factory: Callable[..., Cluster]) -> None:
    """The new leader takes only c0..c4 (10..14): the member that starts from the committed 30
    is sent back to 10, reads them and commits 15 -- below 30, in the new leader's epoch. The
    coordinator took it (within one log an offset lower down is never of a newer epoch: 30 was
    read on a log since cut under it). Refused as going backward, the committed offset stayed at
    30, past the log: every next member was sent back to 10 again, and ``reset-offsets`` clamped
    it to the log end, past records the new leader wrote below it (the group nemesis's unclean
    mode, seed 107). A third member starts at 15 and reads c5.. only."""
    cluster = cluster_factory(3, overrides={"replication": {"unclean_leader_election": True},
                                            "topics": {"min_insync_replicas": 1}})
    with Admin(cluster.bootstrap) as admin:
        _committed_30_then_truncated_to_10(cluster, admin, "subscribed")
        _produce(cluster.bootstrap, [b"c%d" % i for i in range(5)])  # offsets 10..14: below the committed 30
        second = _member(cluster.bootstrap, "subscribed", "latest")
        try:
            got = _read(second, lambda got: any(r.value == b"c4" for r in got), "the second member to read c4")
            assert [(r.offset, r.value) for r in got] == [(10 + i, b"c%d" % i) for i in range(5)]
            second.commit()
        finally:
            second.close()
        assert GroupAdmin(admin).committed("g")[TP] == 15
        _produce(cluster.bootstrap, [b"c%d" % i for i in range(5, 10)])
        third = _member(cluster.bootstrap, "subscribed", "latest")
        try:
            got = _read(third, lambda got: any(r.value == b"c9" for r in got), "the third member to read c9")
            assert [(r.offset, r.value) for r in got] == [(10 + i, b"c%d" % i) for i in range(5, 10)]
        finally:
            third.close()
