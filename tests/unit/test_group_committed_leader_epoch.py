"""The leader epoch a group's commit carries (KIP-320's committed leader epoch), on the client's
side: a commit of a position names the epoch of the record before it -- the one the consumer's
next fetch from there names --, and a member that starts from the committed offset names it in
its first fetch, so that a leader whose log parts from the one read there (an unclean election
truncated it under the offset, then it grew back past it) says where, and the member reads on
from there instead of skipping what the new leader wrote below the offset. An offset whose
record's epoch the consumer does not know goes without one, as before the field.

A real GroupConsumer on a scripted coordinator that keeps the epochs committed, and broker 1
leading t-0 with records written in leader epoch 1 (tests/unit/builders_group_consumer.py); the
consumer service's assign (nodes/consumer_instance.py) on the same world. The coordinator's side
(the epoch stored, answered, loaded again from the log and from snapshots) is
tests/unit/test_coordinator_offsets_fuzz_failover.py's and test_coordinator_offsets_records.py's;
on real processes, tests/integration/test_group_committed_epoch.py."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from tests.unit.builders_group_consumer import (LOG_END_OFFSET, RECORDS_PER_FETCH_ANSWER, T0, BrokerRepliesReactor,
                                                OffsetsCoordinator, OnePartitionBroker,
                                                RestInstance, consumer_config)
from tests.unit.fakes import ScriptedCoordinatorLink, as_leader_wrote, make_batch


class _Broker(OnePartitionBroker):
    """``OnePartitionBroker`` that keeps the t-0 part of every FETCH and answers one at
    ``diverge_at`` naming ``diverge_epoch`` with where its log parts (``diverging``), as a
    leader elected uncleanly does."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[list] = []
        self.diverge_at: int | None = None
        self.diverge_epoch = -1
        self.diverging: list[int] = []

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            self.fetched += header["parts"]
            [[topic, partition, offset, _max, _epoch, last_epoch]] = header["parts"]
            if offset == self.diverge_at and last_epoch == self.diverge_epoch:
                entry = [topic, partition, 0, 1000, 1000, 0, list(self.diverging)]
                self.replies.append(lambda: callback({"parts": [entry]}, [b""], None))
                return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


@pytest.fixture
def world() -> Iterator[Callable[..., tuple[GroupConsumer, _Broker, OffsetsCoordinator]]]:
    made: list[GroupConsumer] = []

    def make(broker: _Broker | None = None, **kw: Any) -> tuple[GroupConsumer, _Broker, OffsetsCoordinator]:
        broker, coordinator = broker or _Broker(), OffsetsCoordinator()
        coordinator.uncommitted = -1
        reactor = BrokerRepliesReactor(broker)
        c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
            broker, reactor, ScriptedCoordinatorLink(coordinator), enable_auto_commit=False, **kw))
        made.append(c)
        return c, broker, coordinator
    yield make
    for c in made:
        c.close()


def _poll_until_records(c: GroupConsumer, max_records: int = 10) -> list[int]:
    for _ in range(20):
        got = [r.offset for r in c.poll(100, max_records=max_records)]
        if got:
            return got
    return []


def _commits(coordinator: OffsetsCoordinator) -> list:
    return [(tp, o, coordinator.committed_epochs.get(tp, -1)) for tp, o in sorted(coordinator.committed.items())]


def test_a_commit_of_the_position_carries_the_epoch_of_the_record_before_it(world: Any) -> None:
    c, broker, coordinator = world()
    coordinator.committed[T0] = 0
    c.assign([T0])
    assert _poll_until_records(c) == list(range(10))  # written in leader epoch 1
    c.commit()
    assert _commits(coordinator) == [(T0, 10, 1)]


@pytest.mark.parametrize("how", ["another offset", "sought"])
def test_an_offset_whose_records_epoch_is_not_known_is_committed_without_one(world: Any, how: str) -> None:
    """An application's own offset past what it took, or a position sought to: which epoch the
    record before it was of is not known here; naming the epoch of the last record read, a leader
    whose epoch 1 ended below the offset would send the member that starts there back."""
    c, broker, coordinator = world()
    coordinator.committed[T0] = 0
    c.assign([T0])
    assert _poll_until_records(c) == list(range(10))
    if how == "sought":
        c.seek(T0, 500)
        c.commit()
        assert _commits(coordinator) == [(T0, 500, -1)]
    else:
        c.commit({T0: 30})  # fetched (buffered), not taken
        assert _commits(coordinator) == [(T0, 30, -1)]
    sent = [h for cmd, h in c._link.calls if cmd == P.OFFSET_COMMIT]
    assert sent and all(len(e) == 3 for h in sent for e in h["offsets"]), "an unknown epoch is sent as before the field"


def _take_up_to(c: GroupConsumer, position: int, max_records: int = 10) -> None:
    for _ in range(200):
        c.poll(100, max_records=max_records)
        if (c.position(T0) or 0) >= position:
            return
    raise AssertionError(f"position {c.position(T0)} never reached {position}")


def test_an_offset_below_the_position_carries_the_epoch_its_record_was_taken_in(world: Any) -> None:
    """An application's own offset, below its position (records handed on and done, a REST
    client's commit of what it was given): the epoch of the record before it, as taken -- it went
    without one, so a member starting there after an unclean election skipped what the new
    leader wrote below it. Records 0-49 of epoch 1, 50-99 of epoch 3."""
    c, broker, coordinator = world()
    broker.epoch_of = lambda offset: 1 if offset < 50 else 3
    coordinator.committed[T0] = 0
    c.assign([T0])
    _take_up_to(c, 60)
    for offset, epoch in ((30, 1), (50, 1), (51, 3), (c.position(T0), 3), (0, -1)):
        coordinator.committed.clear()
        coordinator.committed_epochs.clear()
        c.commit({T0: offset})
        assert _commits(coordinator) == [(T0, offset, epoch)], offset


def test_an_offset_in_the_oldest_of_more_epochs_than_are_kept_goes_without_one(world: Any) -> None:
    """Past EPOCH_STARTS_KEPT the oldest epochs read share one entry under the newest of them:
    an offset there is committed without an epoch (naming a newer one than its record's, a leader
    whose log parts there would not say so); one in a later epoch still carries it. A new epoch
    every 50 records: 1 to 20."""
    c, broker, coordinator = world()
    broker.epoch_of = lambda offset: offset // 50 + 1
    coordinator.committed[T0] = 0
    c.assign([T0])
    _take_up_to(c, 1000)
    for offset, epoch in ((10, -1), (960, 20), (901, 19)):
        coordinator.committed.clear()
        coordinator.committed_epochs.clear()
        c.commit({T0: offset})
        assert _commits(coordinator) == [(T0, offset, epoch)], offset


@pytest.mark.parametrize("how", ["subscribed", "assigned"])
def test_a_member_starting_at_a_committed_offset_names_its_epoch_in_its_first_fetch(world: Any, how: str) -> None:
    c, broker, coordinator = world()
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
    c.subscribe(["t"]) if how == "subscribed" else c.assign([T0])
    assert _poll_until_records(c) == list(range(900, 910))
    assert broker.fetched[0][2] == 900 and broker.fetched[0][5] == 3, broker.fetched[0]


@pytest.mark.parametrize("how", ["subscribed", "assigned"])
def test_a_leader_whose_log_parts_below_the_committed_offset_sends_the_member_back_there(
        world: Any, how: str) -> None:
    """The group committed 900 after a record of epoch 3; the leader (elected uncleanly) holds
    epoch 3 up to 850 only, and has written its own records from there: it answers [3, 850], and
    the member reads from 850 -- with ``latest`` too, the policy that would skip the most."""
    c, broker, coordinator = world(auto_offset_reset="latest")
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
    broker.diverge_at, broker.diverge_epoch, broker.diverging = 900, 3, [3, 850]
    c.subscribe(["t"]) if how == "subscribed" else c.assign([T0])
    assert _poll_until_records(c) == list(range(850, 860)), "records the new leader wrote below the commit were skipped"
    assert [p[2] for p in broker.fetched[:2]] == [900, 850] and broker.fetched[1][5] == 3


def test_a_member_assigned_again_names_the_committed_epoch_not_the_one_it_read_before(world: Any) -> None:
    c, broker, coordinator = world()
    coordinator.committed[T0] = 0
    c.assign([T0])
    assert _poll_until_records(c) == list(range(10))  # epoch 1
    c.assign([])
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 7
    c.assign([T0])
    broker.fetched.clear()
    assert _poll_until_records(c) == list(range(900, 910))
    assert broker.fetched[0][2] == 900 and broker.fetched[0][5] == 7


def test_seek_with_a_leader_epoch_names_it_and_without_one_names_none(world: Any) -> None:
    c, broker, coordinator = world()
    coordinator.committed[T0] = 0
    c.assign([T0])
    assert _poll_until_records(c) == list(range(10))
    c.seek(T0, 400, leader_epoch=5)
    broker.fetched.clear()
    assert _poll_until_records(c) == list(range(400, 410))
    assert [p[5] for p in broker.fetched if p[2] == 400] == [5]
    c.seek(T0, 600)
    broker.fetched.clear()
    assert _poll_until_records(c) == list(range(600, 610))
    assert [p[5] for p in broker.fetched if p[2] == 600] == [-1]


def _recording_fetches(rig: RestInstance) -> list[list]:
    """The t-0 parts of the FETCHes the instance's broker is sent from now on."""
    fetched: list[list] = []
    forward = rig.broker.request

    def recording(command: bytes, header: dict, *args: Any, **kw: Any) -> int:
        if command == P.FETCH:
            fetched.extend(header["parts"])
        return forward(command, header, *args, **kw)
    rig.broker.request = recording  # type: ignore[method-assign]
    return fetched


def test_the_consumer_services_assign_starts_at_the_committed_offset_naming_its_epoch() -> None:
    """A REST instance assigned t-0 seeks to the group's committed offset itself
    (``committed_starts``, then ``seek(..., committed=True)``): with the commit's epoch."""
    coordinator = OffsetsCoordinator()
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
    rig = RestInstance(coordinator)
    fetched = _recording_fetches(rig)
    rig.request("subscribe", topics=[])
    rig.request("assign", partitions=[["t", 0]])
    assert rig.fetch_records() == list(range(900, 910))
    assert fetched[0][2] == 900 and fetched[0][5] == 3, fetched[0]


def test_a_member_sent_back_below_the_committed_offset_commits_nothing_there_and_the_new_epoch_at_it(
        world: Any) -> None:
    """The leader sends the member back from the committed 900 (epoch 3) to 850. A member's commit
    below the group's committed offset is refused (never backward), whole: ``commit()`` of the
    positions leaves the partition out until its position is back at the committed offset -- it
    neither raises nor keeps the member's other partitions from being committed -- and there
    commits the epoch it read now: left at epoch 3, each member starting there was sent back to
    850 again (and equal to the offset the member started at, the commit was taken for done)."""
    c, broker, coordinator = world(auto_offset_reset="latest")
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
    broker.diverge_at, broker.diverge_epoch, broker.diverging = 900, 3, [3, 850]
    c.subscribe(["t"])
    assert _poll_until_records(c) == list(range(850, 860))
    c.commit()  # refused by the coordinator if sent: 860 < 900
    assert _commits(coordinator) == [(T0, 900, 3)]
    for start in range(860, 900, 10):
        assert _poll_until_records(c) == list(range(start, start + 10))
    c.commit()
    assert _commits(coordinator) == [(T0, 900, 1)], "the commit at the offset kept the epoch the logs part from"
    assert _poll_until_records(c) == list(range(900, 910))
    c.commit()
    assert _commits(coordinator) == [(T0, 910, 1)]


class _NewLeader(_Broker):
    """``_Broker`` whose records are of leader epoch 3 until it answers the divergence, and of
    epoch 5 after it (an unclean election's new leader: its own records, written from where the
    logs part on)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_epoch = 3

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            [[topic, partition, offset, _max, _epoch, last_epoch]] = header["parts"]
            if offset == self.diverge_at and last_epoch == self.diverge_epoch:
                entry = [topic, partition, 0, 1000, 1000, 0, list(self.diverging)]

                def diverging() -> None:
                    self.record_epoch = NEW_EPOCH  # what it answers from now on is the new leader's log
                    callback({"parts": [entry]}, [b""], None)
                self.replies.append(diverging)
                return len(self.replies)
            else:
                self.fetched += header["parts"]
                data = as_leader_wrote(make_batch(RECORDS_PER_FETCH_ANSWER), offset, self.record_epoch)
                entry = [topic, partition, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, None]
                self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
                return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


NEW_EPOCH = 5


@pytest.mark.parametrize("committed_by", ["another member", "this member"])
def test_a_member_sent_back_below_the_committed_offset_commits_the_new_leaders_records_it_reads_there(
        committed_by: str) -> None:
    """The group's committed offset 900 (epoch 3: another member's, or this member's own commit
    after it read 850..899) is past where the new leader's log parts from the one read (850).
    Sent back there, the member reads the new leader's records (epoch 5) and commits them: the
    coordinator takes a commit below the committed offset that names a newer epoch. Left out of
    the commits until the position was back at 900, the committed offset stayed past the new
    leader's log: each next owner was sent back again, and a reset clamped it to the log end,
    past the records below it (the group nemesis's unclean mode, seed 107)."""
    broker, coordinator = _NewLeader(), OffsetsCoordinator()
    coordinator.uncommitted = -1
    reactor = BrokerRepliesReactor(broker)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(coordinator), enable_auto_commit=False, auto_offset_reset="latest"))
    broker.diverge_at, broker.diverge_epoch, broker.diverging = 900, 3, [3, 850]
    try:
        if committed_by == "this member":
            coordinator.committed[T0] = 900 - RECORDS_PER_FETCH_ANSWER
            c.buffered_records_max = RECORDS_PER_FETCH_ANSWER  # no fetch at 900 before 850..899 are taken
            c.subscribe(["t"])  # reads one fetch's answer, 850..899, and commits 900
            assert _poll_until_records(c, RECORDS_PER_FETCH_ANSWER) == list(range(850, 900))
            c.commit()
        else:
            coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
            c.subscribe(["t"])
        assert _commits(coordinator) == [(T0, 900, 3)]
        assert _poll_until_records(c) == list(range(850, 860))
        c.commit()
        assert _commits(coordinator) == [(T0, 860, NEW_EPOCH)], "the new leader's records read were not committed"
        assert _poll_until_records(c) == list(range(860, 870))
        c.commit()
        assert _commits(coordinator) == [(T0, 870, NEW_EPOCH)]
    finally:
        c.close()


class _TwoLogs(_Broker):
    """Leader of t-0 whose log is first the one the consumer reads -- by default epoch 1 at 0..49,
    epoch 3 at 50..99 (``epoch_starts``: (first offset, epoch), oldest first) -- and, from the
    answer to the fetch at ``switch_at`` (100) on, another's (an unclean election): by default
    epoch 1 at 0..44, epoch 2 at 45..59, epoch 4 from 60. A fetch naming an epoch the log ends
    below its offset is answered where the logs part, as a real leader does."""

    def __init__(self, first: list[tuple[int, int]] | None = None, second: list[tuple[int, int]] | None = None,
                 switch_at: int = 100) -> None:
        super().__init__()
        self.epoch_starts = first or [(0, 1), (50, 3)]
        self.second = second or [(0, 1), (45, 2), (60, 4)]
        self.switch_at, self.switched = switch_at, False

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command != P.FETCH:
            return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        self.fetched += header["parts"]
        [[topic, partition, offset, _max, _epoch, last_epoch]] = header["parts"]
        if offset == self.switch_at and not self.switched:
            self.epoch_starts, self.switched = self.second, True
        shared = [(start, e) for start, e in self.epoch_starts if e <= last_epoch]
        if last_epoch >= 0 and shared:
            epoch = shared[-1][1]
            end = next((start for start, e in self.epoch_starts if e > epoch), 1000)
            if not (epoch == last_epoch and end >= offset):  # as Partition.divergence
                entry = [topic, partition, 0, 1000, 1000, 0, [epoch, end]]
                self.replies.append(lambda: callback({"parts": [entry]}, [b""], None))
                return len(self.replies)
        if offset >= self.switch_at and not self.switched:
            return 0  # no records past the first log's end: a long poll
        start, epoch = [(s, e) for s, e in self.epoch_starts if s <= offset][-1]
        end = next((s for s, _ in self.epoch_starts if s > offset), offset + 50)
        data = as_leader_wrote(make_batch(min(end - offset, RECORDS_PER_FETCH_ANSWER)), offset, epoch)
        entry = [topic, partition, 0, 1000, 1000, 0, None]
        self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
        return len(self.replies)


def test_a_divergence_found_by_a_prefetch_above_the_position_leaves_the_positions_epoch(world: Any) -> None:
    """The consumer returned 0..49 (epoch 1) and holds 50..99 (epoch 3) fetched ahead; the leader,
    elected uncleanly, answers the fetch at 100 naming 3 with [2, 60] -- its epoch 2 ends at 60,
    above the position 50. The position stays, and its epoch is still 1, the epoch of record 49
    as read: named at 50, the leader answers that its epoch 1 ends at 45, and the member reads
    the leader's 45..49. Given the answer's epoch 2 (of the records fetched ahead, not of the
    one before the position), the leader took 50 for shared and its 45..49 were skipped -- and a
    commit of 50 named epoch 2, sending no member starting there back either."""
    c, broker, coordinator = world(_TwoLogs())
    coordinator.committed[T0] = 0
    c.assign([T0])
    assert _poll_until_records(c, max_records=50) == list(range(50))
    assert c.position(T0) == 50
    got = _poll_until_records(c, max_records=10)
    assert [p[2:6:3] for p in broker.fetched][:5] == [[0, -1], [50, 1], [100, 3], [50, 1], [45, 1]], broker.fetched
    assert got == list(range(45, 55)), "the leader's records below the position were skipped"
    c.commit()
    assert _commits(coordinator) == [(T0, 55, 2)]


def test_a_committed_epoch_the_leader_never_had_reads_on_where_its_older_epoch_ends_above_the_offset(
        world: Any) -> None:
    """The group committed 900 after a record of epoch 3, which the leader never had: its epoch 2
    ends at 950, above the offset, so it answers [2, 950] at 900. The member reads on from 900
    naming 2 (which the leader takes): naming the committed 3 again, it was answered the same,
    forever."""
    c, broker, coordinator = world()
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 900, 3
    broker.diverge_at, broker.diverge_epoch, broker.diverging = 900, 3, [2, 950]
    c.subscribe(["t"])
    assert _poll_until_records(c) == list(range(900, 910))
    assert [p[2:6:3] for p in broker.fetched[:2]] == [[900, 3], [900, 2]]


def test_a_divergence_below_the_position_into_an_epoch_the_consumer_did_not_read_names_the_one_it_read_there(
        world: Any) -> None:
    """The consumer took 0..49 (epoch 1) and 50..99 (epoch 3) -- all of them, nothing fetched
    ahead -- before the leader, elected uncleanly, answers the fetch at 100 naming 3 with [2, 60]:
    its epoch 2 ends at 60, and the consumer began reading 3 at 50, so the position goes back to
    50. Record 49 was read in epoch 1: the leader's epoch 1 ends at 45, so named there (as a
    follower does, KIP-279) the leader sends the member back to 45. Naming the answer's 2, which
    the consumer never read, at 50, the leader took 50 for shared: its 45..49 were skipped, and a
    commit of 50 named 2, so no member starting there was sent back either."""
    c, broker, coordinator = world(_TwoLogs())
    coordinator.committed[T0] = 0
    c.buffered_records_max = RECORDS_PER_FETCH_ANSWER  # no fetch at 100 before 50..99 are taken
    c.assign([T0])
    assert _poll_until_records(c, max_records=50) == list(range(50))
    assert _poll_until_records(c, max_records=50) == list(range(50, 100))
    got = _poll_until_records(c, max_records=10)
    assert [p[2:6:3] for p in broker.fetched][2:5] == [[100, 3], [50, 1], [45, 1]], broker.fetched
    assert got == list(range(45, 55)), "the leader's records below where the consumer was sent back were skipped"
    c.commit()
    assert _commits(coordinator) == [(T0, 55, 2)]


def test_an_offset_read_after_a_divergence_went_back_past_the_merged_epochs_carries_its_epoch(world: Any) -> None:
    """Twenty epochs read (1 to 20, 50 records each, from 0): the oldest share one entry, and an
    offset in it goes without an epoch. Then a leader elected uncleanly, whose log has epoch 1 up
    to 40 and its own epoch 21 from there, sends the consumer back to 0, below every epoch read:
    those entries go, the shared one with them, and what the consumer takes from the new leader
    -- epoch 1 at 0..39 -- is committed with its epoch. Taken for the shared entry still, it went
    without one: a member starting there after the next unclean election skipped what that
    leader wrote below it, and a member whose position was sent back below the group's committed
    offset never committed those records (``_without_below_commits``)."""
    first = [(50 * i, i + 1) for i in range(20)]
    c, broker, coordinator = world(_TwoLogs(first, [(0, 1), (40, 21)], switch_at=1000))
    coordinator.committed[T0] = 0
    c.buffered_records_max = RECORDS_PER_FETCH_ANSWER  # no fetch at 1000 before 950..999 are taken
    c.assign([T0])
    _take_up_to(c, 1000, max_records=RECORDS_PER_FETCH_ANSWER)
    c.commit({T0: 10})
    assert _commits(coordinator) == [(T0, 10, -1)], "an offset in the merged epochs named one"
    assert _poll_until_records(c) == list(range(10))  # sent back to 0 (the leader: [1, 40])
    c.commit({T0: 5})
    assert _commits(coordinator) == [(T0, 5, 1)]


class _Truncated(_Broker):
    """Leader of t-0 that does not say where logs part (an older broker): epoch 1 at 0..49, epoch
    3 at 50..99 (high watermark 100), and from its answer to the fetch at 100 on, a log that ends
    at 40 (out of range past it, nothing new at it)."""

    truncated = False

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command != P.FETCH:
            return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        self.fetched += header["parts"]
        [[topic, partition, offset, *_]] = header["parts"]
        if offset >= 100 or (self.truncated and offset > 40):
            self.truncated = True
            entry = [topic, partition, P.OFFSET_OUT_OF_RANGE, 40, 40, 0, None]
            self.replies.append(lambda: callback({"parts": [entry]}, [b""], None))
            return len(self.replies)
        if self.truncated:
            return 0  # a long poll at the log end
        epoch = 1 if offset < 50 else 3
        data = as_leader_wrote(make_batch(10), offset, epoch)
        entry = [topic, partition, 0, 100, 100, 0, None]
        self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
        return len(self.replies)


def test_a_truncation_under_the_position_names_the_epoch_read_before_where_it_reads_on(world: Any) -> None:
    """The consumer took 0..49 (epoch 1) and 50..99 (epoch 3); the leader's log ends at 40 (out of
    range at 100, no word of where the logs part), and with ``latest`` it reads on from 40.
    Record 39 was read in epoch 1: the fetch at 40 and a commit of 40 name 1, as a commit of 39
    does. Naming 3, the epoch of record 99 -- gone --, a leader whose log parts below 40 in an
    epoch older than 3 would take 40 for shared, and its records below it were skipped."""
    c, broker, coordinator = world(_Truncated(), auto_offset_reset="latest")
    coordinator.committed[T0] = 0
    c.buffered_records_max = 10  # nothing fetched ahead at 100 before 90..99 are taken
    c.assign([T0])
    _take_up_to(c, 100)
    assert c.position(T0) == 100
    for _ in range(5):
        c.poll(100)
        if c.position(T0) == 40:
            break
    assert c.position(T0) == 40
    c.commit({T0: 39})
    assert _commits(coordinator) == [(T0, 39, 1)]
    c.commit({T0: 40})
    assert _commits(coordinator) == [(T0, 40, 1)], "the epoch of a record gone named at the position"



def test_records_given_back_keep_the_epochs_of_those_before_them() -> None:
    """A consumer service's instance returns 0..9, then only 10 of 10..19 (its client's byte
    limit: 11..19 stay buffered, the position moved back to 11). Records 0..10 were taken, in
    epoch 1: the client's commit of 11 -- or of 5 -- carries it, and the fetches after it name it.
    Forgotten with the give-back, the commit of what the client was given went without one (a
    member starting there after an unclean election skipped what the new leader wrote below it),
    and the fetch named none: a leader whose log parts below 11 was not asked, and the instance
    read on past what it wrote there."""
    coordinator = OffsetsCoordinator()
    coordinator.committed[T0] = 0
    rig = RestInstance(coordinator)
    fetched = _recording_fetches(rig)
    assert rig.fetch_records() == list(range(10))
    assert rig.fetch(max_bytes=1) == [10]
    fetched.clear()
    for offset in (11, 5):
        rig.request("commit", offsets=[["t", 0, offset]])
        assert _commits(coordinator) == [(T0, offset, 1)], offset
        coordinator.committed[T0] = 0
    assert rig.fetch() == list(range(11, 21))
    assert rig.fetch(max_records=100) == list(range(21, 121))  # past what was buffered at the cut
    assert fetched and all(p[5] == 1 for p in fetched) and all(p[2] > 11 for p in fetched), fetched


def test_records_given_back_to_the_committed_offset_they_started_at_name_its_epoch(world: Any) -> None:
    """A member starts at the group's committed 100 (epoch 3), takes 100..109, and gives them all
    back (a consumer service's client lost the answer, a poll outlasted its caller): at 100 again,
    nothing read before it, it names the committed epoch as it did -- in its next fetch, and in a
    commit of 100 (its client's commit of where it is). Forgotten, the fetch was not checked, and
    the commit overwrote the group's epoch with none: a member starting there after an unclean
    election skipped what the new leader wrote below it."""
    c, broker, coordinator = world()
    coordinator.committed[T0], coordinator.committed_epochs[T0] = 100, 3
    c.subscribe(["t"])
    assert _poll_until_records(c) == list(range(100, 110))
    c.give_back([(T0, 100)])
    assert c.position(T0) == 100
    c.commit({T0: 100})
    assert _commits(coordinator) == [(T0, 100, 3)]
    broker.fetched.clear()
    assert _poll_until_records(c) == list(range(100, 110))
    assert [p[5] for p in broker.fetched if p[2] == 100] == [3], broker.fetched
