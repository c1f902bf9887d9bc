"""What a leader does with a batch from a producer whose dedup state it no longer holds.

A producer's batch reaches the old leader and the follower; its reply is lost; meanwhile more
than PRODUCERS_MAX other producers write to the partition, so the follower's table evicts the
producer. The follower is elected, and the producer's retry of the same batch arrives. Taken
at any sequence, as an unknown producer's batch was, it was appended a second time: a
duplicate the idempotent producer promises never to create. Each PRODUCE part now says whether
an earlier send of its batch may be in a log (the fourth element: 1 when an earlier send got no
answer, or one with a base offset), and a table that may have forgotten producers whose
batches are in the log (an eviction; a rebuild at open that began reading past the log start)
refuses an unknown producer's possibly written batch with unknown_producer_id (Kafka's
answer) -- until the log start passes them (tests/unit/test_forgotten_producers_below_an_offset.py). A batch no broker can have written is taken as before. The client fails the refused
batch with that error rather than write it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from fabric import protocol as P
from fabric.errors import UnknownProducerIdError
from nodes.broker import tail_recovery
from nodes.broker import producers as producers_module
from nodes.broker.messages import ProduceInput
from nodes.broker.partition import Partition
from nodes.broker.producers import ProducerStateTable
from fabric.errors import RequestTimeout
from tests.unit.fakes import drop_producer_snapshots, make_batch
from tests.unit.builders_sender import LEADER

BATCH_MAX = 1024 * 1024
TABLE_MAX = 8          # PRODUCERS_MAX, lowered so that the test evicts with a few producers
PID, EPOCH = 7, 0


def _replica(broker_id: int) -> Partition:
    return Partition("t", 0, broker_id, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)


def _elected_follower_that_evicted_us(monkeypatch: pytest.MonkeyPatch, ours: bytes) -> Partition:
    """Our batch is in the log of both replicas; TABLE_MAX other producers wrote after it; the
    old leader died and the follower (whose table evicted us) leads at epoch 2."""
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", TABLE_MAX)
    leader, follower = _replica(1), _replica(2)
    leader.become_leader(1, [1, 2], [1, 2], now_ms=0)
    follower.become_follower(1, 1, [1, 2], [1, 2])
    (result,), _ = leader.append_as_leader([ours], BATCH_MAX, [False])
    assert result[1] == 0
    for other in range(100, 100 + TABLE_MAX):  # other producers, one batch each
        leader.append_as_leader([make_batch(1, pid=other, epoch=0, seq=0)], BATCH_MAX, [False])
    follower.append_as_follower(leader.read(0, BATCH_MAX, leader.log_end_offset))  # replicated
    assert follower.log_end_offset == leader.log_end_offset
    assert follower.producers.forgot_producers
    follower.become_leader(2, [1, 2], [2], now_ms=0)
    return follower


def test_a_retry_to_a_new_leader_that_evicted_the_producer_is_not_written_twice(monkeypatch) -> None:
    ours = make_batch(3, pid=PID, epoch=EPOCH, seq=0, tag="ours")
    new_leader = _elected_follower_that_evicted_us(monkeypatch, ours)
    end_before = new_leader.log_end_offset
    (retry,), written = new_leader.append_as_leader([ours], BATCH_MAX, [True])  # the producer's retry
    assert new_leader.log_end_offset == end_before, f"the retried batch was appended again at {retry[0]}"
    assert retry[1] == P.UNKNOWN_PRODUCER_ID and not written
    # a caller of the partition that does not say is taken as possibly written: refused the same way
    (unsaid,), _ = new_leader.append_as_leader([ours], BATCH_MAX)
    assert unsaid[1] == P.UNKNOWN_PRODUCER_ID and new_leader.log_end_offset == end_before


def test_an_evicted_producers_first_send_is_taken_at_its_sequence(monkeypatch) -> None:
    """A batch never sent before cannot be in the log: refusing it would only cost the
    producer its id and fail a batch (its next batches continue at sequence 3)."""
    new_leader = _elected_follower_that_evicted_us(monkeypatch, make_batch(3, pid=PID, epoch=EPOCH, seq=0))
    end_before = new_leader.log_end_offset
    (result,), written = new_leader.append_as_leader([make_batch(2, pid=PID, epoch=EPOCH, seq=3, tag="next")],
                                                     BATCH_MAX, [False])
    assert result == (end_before, 0, "") and len(written) == 1
    # and from now on the producer is known: its retry is recognised, not refused
    (again,), _ = new_leader.append_as_leader([make_batch(2, pid=PID, epoch=EPOCH, seq=3, tag="next")], BATCH_MAX)
    assert again == (end_before, 0, "duplicate")


def test_a_table_that_never_forgot_takes_an_unknown_producers_retry() -> None:
    """Nothing evicted: an unknown producer wrote nothing here that is still in the log (a
    truncation cut every batch the table remembered of it), so its retry is written."""
    t = ProducerStateTable()
    t.update(1, 0, 0, 1, base_offset=0)
    assert not t.forgot_producers
    assert t.check(PID, EPOCH, 5, 2, possibly_written=True) is None


def test_an_evicted_producers_retry_is_refused_at_any_sequence(monkeypatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 1)
    t = ProducerStateTable()
    t.update(PID, EPOCH, 0, 1, base_offset=0)
    t.update(8, 0, 0, 1, base_offset=1)  # evicts PID
    assert t.forgot_producers
    for seq in (0, 1, 77):
        with pytest.raises(Exception) as e:
            t.check(PID, EPOCH, seq, 1, possibly_written=True)
        assert getattr(e.value, "code", None) == P.UNKNOWN_PRODUCER_ID
        assert t.check(PID, EPOCH, seq, 1, possibly_written=False) is None
    t.truncate()  # the log was emptied: what the table learns next is all there is
    assert not t.forgot_producers


def _open(directory: Path) -> Partition:
    engine = SegmentEngine(str(directory / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX))
    return Partition("t", 0, 1, engine, str(directory))


@pytest.mark.parametrize("scan_records, forgot", [(100, False), (4, True)])
def test_a_rebuild_at_open_that_read_only_the_tail_may_have_forgotten_producers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_records: int, forgot: bool) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", scan_records)
    part = _open(tmp_path)
    part.become_leader(1, [1], [1], now_ms=0)
    ours = make_batch(3, pid=PID, epoch=EPOCH, seq=0, tag="ours")
    part.append_as_leader([ours], BATCH_MAX, [False])
    for other in range(100, 103):
        part.append_as_leader([make_batch(3, pid=other, epoch=0, seq=0)], BATCH_MAX, [False])
    part.close()
    drop_producer_snapshots(tmp_path)  # as before producer-state snapshots
    reopened = _open(tmp_path)
    assert reopened.producers.forgot_producers is forgot
    reopened.become_leader(2, [1], [1], now_ms=0)
    end_before = reopened.log_end_offset
    (retry,), _ = reopened.append_as_leader([ours], BATCH_MAX, [True])
    if forgot:  # our batch lies before the tail read at open
        assert retry[1] == P.UNKNOWN_PRODUCER_ID and reopened.log_end_offset == end_before
    else:
        assert retry == (0, 0, "duplicate")
    reopened.close()


def test_the_part_says_whether_the_batch_may_be_written_already() -> None:
    data = make_batch(1)
    assert ProduceInput.decode(["t", 0, 3, 0], data) == ProduceInput("t", 0, 3, data, False)
    assert ProduceInput.decode(["t", 0, 3, 1], data).possibly_written is True
    assert ProduceInput.decode(["t", 0, 3], data).possibly_written is False  # a client from before the field
    assert ProduceInput.decode(["t", 0], data).leader_epoch == -1
    # the flags' second bit: the batch follows one its client has no answer for yet
    assert ProduceInput.decode(["t", 0, 3, 2], data) == ProduceInput("t", 0, 3, data, False, True)
    assert ProduceInput.decode(["t", 0, 3, 3], data) == ProduceInput("t", 0, 3, data, True, True)
    assert ProduceInput.decode(("t", 0, 3, 3), data).flags == 3  # (the checked path)
    for bad in (["t", 0, 3, "1"], ["t", 0, 3, 1, 9], ["t", 0, 3, True], ["t", 0, 3, 4], ["t", 0, 3, -1]):
        assert ProduceInput.decode(bad, data) is None


def test_the_client_fails_a_refused_retry_and_says_a_first_send_is_unwritten(make_sender_rig) -> None:  # noqa: ANN001
    """The sender says whether each batch may be written already; a retry refused with unknown_producer_id fails
    with UnknownProducerIdError (not retried: it may be in the log) and the producer starts over
    under a new id, so its later batches are taken."""
    rig = make_sender_rig()
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(PID)
    rig.sender.run_pass()
    [first] = rig.produce_requests()
    assert first[1]["parts"] == [["t", 0, 3, 0]]
    rig.client(LEADER).answer_last(P.PRODUCE, None, err=RequestTimeout("no reply"))  # the reply was lost
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    retry = rig.produce_requests()[-1]
    assert retry[1]["parts"] == [["t", 0, 3, 1]] and retry[2] == first[2], "the same batch, possibly written"
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.UNKNOWN_PRODUCER_ID, "forgotten"]]})
    error = futures[0].exception(0)
    assert isinstance(error, UnknownProducerIdError) and error.code == P.UNKNOWN_PRODUCER_ID
    assert rig.sender.producer_id == -1, "the producer starts over under a new id"
    later = rig.send("b")
    rig.sender.run_pass()
    rig.grant_producer_id(PID + 1)
    rig.sender.run_pass()
    assert rig.produce_requests()[-1][1]["parts"] == [["t", 0, 3, 0]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[9, 0, ""]]})
    assert later[0].result(0).offset == 9


@pytest.mark.parametrize("answer, possibly_written", [
    ({"results": [[-1, P.NOT_LEADER, "leader is broker 2"]]}, 0),             # refused before any write
    ({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]}, 0),
    ({"results": [[5, P.NOT_LEADER, "leadership changed before the write was replicated"]]}, 1),  # written
    ({"results": [[5, P.REQUEST_TIMED_OUT, "acks=all not met"]]}, 1),
    (None, 1),                                                                 # no reply
])
def test_a_retry_says_possibly_written_unless_every_earlier_send_was_refused_unwritten(
        make_sender_rig, answer: dict | None, possibly_written: int) -> None:  # noqa: ANN001
    rig = make_sender_rig()
    rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(PID)
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, answer, err=None if answer else RequestTimeout("no reply"))
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    assert rig.produce_requests()[-1][1]["parts"] == [["t", 0, 3, possibly_written]]
    if possibly_written:  # it stays so, whatever the later answers
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_LEADER, "leader is broker 2"]]})
        rig.reactor.advance(100)
        rig.sender.run_pass()
        assert rig.produce_requests()[-1][1]["parts"] == [["t", 0, 3, 1]]
