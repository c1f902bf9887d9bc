"""A leader's log truncated under the consumer's position: the consumer read records up to a
high watermark a leader reported, and a later leader (an unclean election, a leader that lost
its tail) holds less; the offsets from its new log end on are written again, with records the
consumer never saw.

The consumer names, in each fetch, the leader epoch of the last record it read, and the leader
answers where its log parts from the one read (KIP-320): the consumer reads on from there,
whatever ``auto_offset_reset`` says, and says so. Without that answer (a leader that does not
give it, a group's committed offset, which names no epoch), the leader answers OFFSET_OUT_OF_RANGE
and the policy applies -- except that ``latest`` reads on from the answer's high watermark: reset
to the log end as a LIST_OFFSETS answered it later, the consumer skipped the records the new
leader took meanwhile (and committed past them). ``earliest`` reads the log again. A position
the consumer never read up to (a seek past the log end) is reset by the policy.

A real Consumer on a ManualClock with one RecordingClient per endpoint (tests/unit/fakes.py),
broker 1 leading t-0 (tests/unit/test_consumer_fetch_positions.py's broker); a real GroupConsumer
on a scripted coordinator (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.consumer import FETCH_RETRY_BACKOFF_MS, Consumer
from fabric.client.consumer_positions import EPOCH_STARTS_KEPT
from fabric.client.group import GroupConsumer
from fabric.errors import RemoteError
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                consumer_config)
from tests.unit.fakes import FakeReactor, ScriptedCoordinatorLink, as_leader_wrote, make_batch
# ``make``: a Consumer reading t-0 from 0, its FETCH at 0 in flight (a pytest fixture)
from tests.unit.test_consumer_fetch_positions import _Broker, _offsets, make  # noqa: F401


def _read_then_truncated(c: Consumer, broker: _Broker, reactor: FakeReactor) -> None:
    """The consumer reads 0..49 (HW 50); the prefetch at 50 is answered out of range by a leader
    whose log (and HW) ends at 40; that leader then takes records 40..44 (HW 45)."""
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    assert broker.fetch_offset() == 50
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=40)


def test_with_latest_an_out_of_range_answer_under_the_position_read_goes_to_its_high_watermark(
        make: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A leader that does not say where its log parts answers out of range (its log ends at 40);
    it takes 40..44 before a LIST_OFFSETS would have answered."""
    policy = "latest"
    c, broker, reactor = make(policy)
    with caplog.at_level(logging.WARNING, logger="fabric.client.consumer"):
        _read_then_truncated(c, broker, reactor)
        got: list = []
        for _ in range(5):
            got += c.poll(0)
            broker.answer_list_offsets(45 if policy == "latest" else 0)  # the log end by now: 45
            offset = broker.fetch_offset()
            if offset is not None:
                broker.answer_fetch(45 - offset, hw=45)
            reactor.advance(FETCH_RETRY_BACKOFF_MS)
    assert _offsets(got) == [40, 41, 42, 43, 44], "records the new leader wrote after the truncation were skipped"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("t-0" in s and "50" in s and "40" in s and "truncated" in s for s in said), said


@pytest.mark.parametrize("policy", ["earliest", "none"])
def test_other_policies_still_apply_to_an_out_of_range_answer_under_the_position_read(make: Any,
                                                                                     policy: str) -> None:
    """Where the leader does not say where its log parts, the records written since the
    truncation may lie anywhere above it: ``earliest`` reads the log again from its start
    (nothing skipped), ``none`` raises."""
    c, broker, reactor = make(policy)
    _read_then_truncated(c, broker, reactor)
    if policy == "none":
        with pytest.raises(RemoteError) as raised:
            c.poll(0)
        assert raised.value.code == P.OFFSET_OUT_OF_RANGE
        return
    c.poll(0)
    assert broker.answer_list_offsets(0) == [-2]
    c.poll(0)
    assert c.position(T0) == 0 and broker.fetch_offset() == 0


def test_a_seek_past_the_log_end_is_still_reset_by_the_policy(make: Any) -> None:
    """Never read up to: an application's seek past the end is not a truncation (Kafka: the
    reset policy)."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    c.seek(T0, 5000)
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=50)  # the prefetch at 50: not read after the seek
    c.poll(0)
    assert broker.fetch_offset() == 5000
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=50)
    c.poll(0)
    assert broker.answer_list_offsets(0) == [-2]
    assert c.position(T0) == 0


def test_a_give_back_after_a_truncation_returns_the_records_still_in_the_log(make: Any) -> None:
    """The poll returned 0..49, the truncation moved the position to 40, then the records are
    given back (a consumer service's client never got them): they go out again from 0."""
    c, broker, reactor = make("latest")
    _read_then_truncated(c, broker, reactor)
    assert c.position(T0) == 40
    c.give_back([(T0, 0)])
    assert c.position(T0) == 0
    c.poll(0)
    assert broker.fetch_offset() == 0



# -- the leader says where the logs part (KIP-320) -------------------------------------------------
def _fetch_part(broker: _Broker) -> list:
    """The t-0 part of the one FETCH in flight."""
    [(c, i)] = broker._open(P.FETCH)
    [part] = c.sent[i][1]["parts"]
    return part


def _answer_epochs(broker: _Broker, runs: list[tuple[int, int]], hw: int) -> None:
    """Answer the FETCH in flight with batches written in these leader epochs: ``runs`` is
    (epoch, records) from its offset on."""
    [(c, i)] = broker._open(P.FETCH)
    [[_, _, offset, *_]] = c.sent[i][1]["parts"]
    data = b""
    for epoch, n in runs:
        data += as_leader_wrote(make_batch(n, tag=f"e{epoch}-"), offset, epoch)
        offset += n
    c.unanswered.remove(i)
    c.sent[i][3]({"parts": [["t", 0, 0, hw, hw, 0, None]]}, [data], None)


def _answer_diverging(broker: _Broker, epoch: int, end: int, hw: int) -> None:
    """Answer the FETCH in flight: the leader's log parts from the consumer's at ``end`` (the end
    of ``epoch`` in its log), no records."""
    [(c, i)] = broker._open(P.FETCH)
    c.unanswered.remove(i)
    c.sent[i][3]({"parts": [["t", 0, 0, hw, hw, 0, [epoch, end]]]}, [b""], None)


@pytest.mark.parametrize("policy", ["latest", "earliest", "none"])
def test_a_fetch_names_the_epoch_of_the_last_record_read_and_a_divergence_moves_the_position_back(
        make: Any, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    """The consumer read 0..39 (written in leader epoch 0) and 40..49 (epoch 1); its prefetch at
    50 names epoch 1 as the epoch of its last record. A leader elected uncleanly (epoch 0's log
    ends at 40 there, its own epoch 2 began at 40 and has 40..44 by now) answers where the logs
    part: [0, 40]. The consumer reads on from 40 -- the records written since the truncation --
    whatever the policy."""
    c, broker, reactor = make(policy)
    assert _fetch_part(broker)[5:] in ([], [-1])  # nothing read yet: no epoch to check
    _answer_epochs(broker, [(0, 40), (1, 10)], hw=50)
    with caplog.at_level(logging.WARNING, logger="fabric.client.consumer"):
        assert _offsets(c.poll(0, max_records=100)) == list(range(50))
        assert _fetch_part(broker)[2] == 50 and _fetch_part(broker)[5] == 1
        _answer_diverging(broker, 0, 40, hw=45)
        got: list = []
        for _ in range(5):
            got += c.poll(0)
            offset = broker.fetch_offset()
            if offset is not None and offset < 45:
                assert _fetch_part(broker)[5] == 0, "fetched again with the epoch the logs were found to share"
                broker.answer_fetch(45 - offset, hw=45)
            reactor.advance(FETCH_RETRY_BACKOFF_MS)
    assert _offsets(got) == [40, 41, 42, 43, 44], "records the new leader wrote after the truncation were skipped"
    assert broker.answer_list_offsets(0) == [], "a divergence is no reset"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("t-0" in s and "50" in s and "40" in s for s in said), said


def test_a_divergence_past_the_position_keeps_it_and_drops_what_the_prefetch_buffered(make: Any) -> None:
    """The poll returned 0..9 and 10..49 are buffered; the prefetch at 50 (last epoch 1) is
    answered [1, 45]: the leader's log parts from what was fetched at 45. 10..44 are still the
    leader's records; 45..49 are not: the buffer is dropped and 10.. fetched again."""
    c, broker, reactor = make("latest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    _answer_diverging(broker, 1, 45, hw=45)
    got = c.poll(0)
    assert got == [] and c.position(T0) == 10
    assert broker.fetch_offset() == 10 and _fetch_part(broker)[5] == 1


def test_a_divergence_into_an_older_epoch_goes_back_to_where_the_consumer_began_reading_a_newer_one(
        make: Any) -> None:
    """The consumer read 0..29 of epoch 2, then 30..49 of epoch 4 (a leader elected with a log
    ending at 30). A leader elected uncleanly later, which never held epoch 4, has epoch 2 up to
    60 (records 30..59 that the epoch 4 leader never had) and answers [2, 60]. Its records 30..49
    are not the ones read (those were epoch 4's): the consumer goes back to 30, where it began
    reading epoch 4. Kept at 50 (below the answer's end), it skipped the new leader's 30..49."""
    c, broker, reactor = make("latest")
    _answer_epochs(broker, [(2, 30), (4, 20)], hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    assert _fetch_part(broker)[2] == 50 and _fetch_part(broker)[5] == 4
    _answer_diverging(broker, 2, 60, hw=70)
    assert c.poll(0) == [] and c.position(T0) == 30, "the new leader's 30..49 were skipped"
    assert broker.fetch_offset() == 30 and _fetch_part(broker)[5] == 2


def test_a_position_a_reset_looked_up_names_no_epoch_of_the_records_read_before(make: Any) -> None:
    """The poll returned 0..49 (epoch 1); then, outside any poll (a consumer service's pass), the
    prefetch at 50 is answered out of range -- retention moved the log start to 600 -- at the
    position that poll set, so the reset may still be given back; ``latest`` then finds the log
    end, 1000. Nothing was read before 1000: its first fetch names no epoch, and neither does a
    commit of it. Naming 1, the epoch of record 49, a leader whose epoch 1 ended below its log
    start sent the consumer back there (out of range again: reset past what was written
    meanwhile), and a member starting at a commit of 1000 was sent back to read again what the
    reset skipped."""
    c, broker, reactor = make("latest")
    _answer_epochs(broker, [(1, 50)], hw=1000)
    assert _offsets(c.poll(0, max_records=50)) == list(range(50))
    assert broker.fetch_offset() == 50
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=600)
    assert c.position(T0) is None
    c.poll(0)
    assert broker.answer_list_offsets(1000) == [-1]
    c.poll(0)
    assert c.position(T0) == 1000 and broker.fetch_offset() == 1000
    assert _fetch_part(broker)[5] == -1, "named the epoch of a record read before the reset"
    assert c._read_epoch_before(T0, 1000) == -1


def test_the_epochs_read_are_kept_bounded_and_a_divergence_never_goes_back_too_short(make: Any) -> None:
    """Eighteen epochs read, one record each (epoch 1 at 0 .. epoch 18 at 17): past the bound the
    oldest starts merge -- a divergence into epoch 1 ([1, 100]: the leader never had 2..18) goes
    back to 0, not 1 (one record delivered again), never to a start past 1 (records skipped)."""
    c, broker, reactor = make("latest")
    _answer_epochs(broker, [(e, 1) for e in range(1, 19)], hw=18)
    assert _offsets(c.poll(0, max_records=100)) == list(range(18))
    assert len(c._epoch_starts[T0]) == EPOCH_STARTS_KEPT
    _answer_diverging(broker, 1, 100, hw=100)
    assert c.poll(0) == [] and c.position(T0) == 0


# -- a committed offset the log was truncated under ------------------------------------------------
TRUNCATED_TO = 40  # the log end the out-of-range answer reports
GROWN_TO = 45      # ... and where the new leader's log has grown by the time the consumer asks again


class _TruncatedBroker(OnePartitionBroker):
    """Leader of t-0 whose log was truncated to TRUNCATED_TO under the group's committed offset
    (an unclean election): a FETCH past it is out of range, and once that is answered the log
    takes records up to GROWN_TO (then LIST_OFFSETS answers GROWN_TO for the log end)."""

    def __init__(self) -> None:
        super().__init__()
        self.end = TRUNCATED_TO

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            [[topic, partition, offset, *_]] = header["parts"]
            if offset > self.end:
                entry = [topic, partition, P.OFFSET_OUT_OF_RANGE, self.end, self.end, 0, None]
                data = b""
                self.end = GROWN_TO
            elif offset < self.end:
                entry = [topic, partition, 0, self.end, self.end, 0, None]
                data = as_leader_wrote(make_batch(self.end - offset), offset, 1)
            else:
                return 0  # a long poll at the log end: answered only when records come (never here)
            self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
            return len(self.replies)
        if command == P.LIST_OFFSETS:
            [[topic, partition, spec]] = header["parts"]
            found = [topic, partition, 0, 0 if spec == -2 else self.end]
            self.replies.append(lambda: callback({"parts": [found]}, [], None))
            return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


@pytest.mark.parametrize("mode", ["subscribed", "assigned"])
def test_with_latest_a_committed_offset_the_log_was_truncated_under_goes_to_the_high_watermark(mode: str) -> None:
    """The group committed 50 (the coordinator takes no offset past the HW it knows: the log held
    it then); the log was truncated to 40 and took 40..44 since the out-of-range answer. The
    member reads 40..44: reset to latest it went to 45, past them."""
    policy = "latest"
    broker = _TruncatedBroker()
    reactor = BrokerRepliesReactor(broker)
    coordinator = OffsetsCoordinator()
    coordinator.committed[T0] = 50
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(coordinator), auto_offset_reset=policy, enable_auto_commit=False))
    try:
        c.subscribe(["t"]) if mode == "subscribed" else c.assign([T0])
        got: list[int] = []
        for _ in range(20):
            got += [r.offset for r in c.poll(100)]
            if got:
                break
        assert got == list(range(TRUNCATED_TO, GROWN_TO)), "the records taken after the truncation were skipped"
    finally:
        c.close()


def test_a_divergence_naming_no_epoch_moves_nothing(make: Any) -> None:
    """[-1, log start]: the leader has no epoch as old as the one read (retention took them):
    that says nothing of where the logs part. Taken as a truncation to the log start, the whole
    log was read again."""
    c, broker, reactor = make("latest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    _answer_diverging(broker, -1, 0, hw=60)
    c.poll(0)
    assert c.position(T0) == 50 and broker.fetch_offset() == 50 and _fetch_part(broker)[5] == -1


@pytest.mark.parametrize("how", ["assigned again", "sought"])
def test_a_fetch_names_no_epoch_of_records_read_before_the_partition_was_given_up_or_sought(make: Any,
                                                                                          how: str) -> None:
    """Records 0..49 (epoch 1) fetched, 0..9 taken; the partition is given up and assigned again
    (a rebalance: it starts at the committed offset, 2000, read in a later epoch) or sought. The
    fetch there named epoch 1, the epoch of records read before -- and the leader, whose epoch 1
    ends at 855, said the logs part there: the position went back from 2000 to 855, and 855..1999
    came again (the group nemesis, seed 49)."""
    c, broker, reactor = make("latest")
    broker.answer_fetch(50, hw=5000)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    if how == "assigned again":
        c.assign([])
        c.assign([T0])
    c.seek(T0, 2000)
    c.poll(0)
    if broker.fetch_offset() == 50:  # the prefetch sent before: not read after the seek
        broker.answer_fetch(error=P.NOT_LEADER)
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        c.poll(0)
    assert broker.fetch_offset() == 2000 and _fetch_part(broker)[5] == -1


class _RecordingBroker(OnePartitionBroker):
    """``OnePartitionBroker`` that keeps the t-0 part of every FETCH."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[list] = []

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            self.fetched += header["parts"]
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


def test_a_group_consumer_starting_at_a_committed_offset_names_no_epoch_of_records_read_before() -> None:
    """An assigned group consumer reads t-0 (records of epoch 1, some buffered), gives it up and is
    assigned it again: it starts at the group's committed offset (900). Its fetch there named
    epoch 1 -- the epoch of the records buffered before -- which a leader whose epoch 1 ended
    earlier answers as a divergence, moving the position back."""
    broker = _RecordingBroker()
    reactor = BrokerRepliesReactor(broker)
    coordinator = OffsetsCoordinator()
    coordinator.uncommitted = -1
    coordinator.committed[T0] = 0
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(coordinator), enable_auto_commit=False))
    try:
        c.assign([T0])
        got: list[int] = []
        for _ in range(20):
            got += [r.offset for r in c.poll(100, max_records=10)]
            if got:
                break
        assert got == list(range(10))
        c.assign([])
        coordinator.committed[T0] = 900
        c.assign([T0])
        broker.fetched.clear()
        for _ in range(20):
            if [r.offset for r in c.poll(100, max_records=10)]:
                break
        assert broker.fetched and broker.fetched[0][2] == 900
        assert broker.fetched[0][5] == -1, "the fetch at the committed offset named the epoch of records read before"
    finally:
        c.close()
