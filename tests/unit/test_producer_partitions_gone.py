"""A topic deleted and re-created under its name with fewer partitions: batches queued or in
flight for a partition that fresh metadata no longer has fail at once with
``UnknownTopicOrPartitionError`` -- not retried to their delivery timeout as if a leader had
moved -- and the partitions that remain keep their order and their idempotent sequences. The
sender is built from its real parts (tests/unit/builders_sender.py); real ``Partition`` leaders
judge the sequences. The producer's own part (the sticky partition, keyed partitioning) is
driven through a real ``Producer`` (tests/unit/driven_producer.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.errors import DeliveryTimeoutError, UnknownTopicOrPartitionError
from fabric.records import partition_for_key
from nodes.broker.partition import Partition
from tests.unit.builders_sender import BATCH_BYTES_MAX, COORDINATOR, LEADER, Rig, sender_metadata
from tests.unit.driven_producer import answer, driven_metadata, driven_producer, send_pass


@pytest.fixture
def rig(make_sender_rig: Callable[..., Rig]) -> Rig:
    r = make_sender_rig()  # idempotent, delivery_timeout_ms 1000
    r.metadata.update(sender_metadata(version=1, partitions=2, topic_id="old"))
    return r


def _leader(partition: int) -> Partition:
    p = Partition("t", partition, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_BYTES_MAX)), None)
    p.become_leader(1, [1], [1], now_ms=0)
    return p


def _serve(rig: Rig, leaders: dict[int, Partition | None], answer: bool = True) -> list:
    """The last PRODUCE as the leaders take it (None: a partition the broker does not have);
    answers it unless ``answer`` is False (lost: the broker wrote it, no reply came)."""
    _, header, payloads, _ = rig.produce_requests()[-1]
    results = []
    for (topic, partition, _epoch, maybe), data in zip(header["parts"], payloads):
        leader = leaders[partition]
        if leader is None:
            results.append([-1, P.UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{partition} is not on this broker"])
        else:
            results.append(list(leader.append_as_leader([data], BATCH_BYTES_MAX, [bool(maybe)])[0][0]))
    if answer:
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": results})
    return results


def _start(rig: Rig) -> None:
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()


def _assert_gone(futures: list, rig: Rig) -> None:
    for f in futures:
        error = f.exception(0)
        assert isinstance(error, UnknownTopicOrPartitionError), repr(error)
        assert not isinstance(error, DeliveryTimeoutError) and "t-1" in error.message, error


def test_a_batch_refused_for_a_partition_fresh_metadata_lacks_fails_at_once(rig: Rig) -> None:
    kept_leader = _leader(0)
    gone = rig.send("g", partition=1)
    kept = rig.send("k", partition=0)
    _start(rig)
    _serve(rig, {0: kept_leader, 1: None})  # t-1 is gone on the broker: retriable, metadata refreshed
    assert [f.result(0).offset for f in kept] == [0, 1]
    assert not gone[0].done()
    rig.refresh_metadata(sender_metadata(version=2, partitions=1, topic_id="new"))
    rig.reactor.advance(100)  # the retry backoff, far below delivery_timeout_ms
    rig.sender.run_pass()
    _assert_gone(gone, rig)
    assert rig.accumulator.buffered_bytes == 0
    # the failed batch was numbered: the producer starts over under a new id, and the partition
    # that remains takes its next batches
    after = rig.send("a", partition=0)
    rig.sender.run_pass()
    rig.grant_producer_id(8)
    rig.sender.run_pass()
    assert _serve(rig, {0: kept_leader})[0][1] == 0
    assert [f.result(0).offset for f in after] == [2, 3]


def test_a_request_in_flight_when_metadata_drops_its_partition_fails_that_partition_only(rig: Rig) -> None:
    """The refresh arrives with the request in flight; the broker had written the surviving
    partition's batch and its answer is lost with the request: the batch goes again under its
    old numbers and is recognised as the retry it is (written once)."""
    kept_leader = _leader(0)
    gone = rig.send("g", partition=1)
    kept = rig.send("k", partition=0)
    _start(rig)
    _serve(rig, {0: kept_leader, 1: None}, answer=False)
    assert kept_leader.log_end_offset == 2
    rig.refresh_metadata(sender_metadata(version=2, partitions=1, topic_id="old"))  # fewer partitions
    rig.reactor.advance(100)
    rig.sender.run_pass()
    _assert_gone(gone, rig)
    assert not kept[0].done()
    rig.grant_producer_id(8)
    rig.sender.run_pass()
    _, header, _, _ = rig.produce_requests()[-1]
    assert [p[:2] for p in header["parts"]] == [["t", 0]]
    assert _serve(rig, {0: kept_leader})[0][:2] == [0, 0], "the retry was recognised"
    assert [f.result(0).offset for f in kept] == [0, 1]
    assert kept_leader.log_end_offset == 2, "written twice"


def test_a_partition_count_that_shrinks_and_grows_back_takes_the_partition_again(rig: Rig) -> None:
    kept_leader = _leader(0)
    gone = rig.send("g", partition=1)
    _start(rig)
    _serve(rig, {0: kept_leader, 1: None})
    rig.refresh_metadata(sender_metadata(version=2, partitions=1, topic_id="b"))
    rig.reactor.advance(100)
    rig.sender.run_pass()
    _assert_gone(gone, rig)
    rig.refresh_metadata(sender_metadata(version=3, partitions=2, topic_id="b"))  # partitions added again
    back = rig.send("b", partition=1)
    kept = rig.send("k", partition=0)
    rig.sender.run_pass()
    rig.grant_producer_id(8)
    rig.sender.run_pass()
    new_leader = _leader(1)
    assert [r[1] for r in _serve(rig, {0: kept_leader, 1: new_leader})] == [0, 0]
    assert [f.result(0).offset for f in back] == [0, 1]
    assert [f.result(0).offset for f in kept] == [0, 1]


def test_a_topic_recreated_with_more_partitions_takes_the_batch_under_its_new_id(rig: Rig) -> None:
    futures = rig.send("a", partition=1)
    _start(rig)
    assert rig.produce_requests()[-1][1]["topic_ids"] == {"t": "old"}
    _serve(rig, {1: None})  # the broker's t-1 is the new topic's: another id
    rig.refresh_metadata(sender_metadata(version=2, partitions=3, topic_id="new"))  # the retry left before it
    _serve(rig, {1: None})
    rig.reactor.advance(100)
    rig.sender.run_pass()
    assert rig.produce_requests()[-1][1]["topic_ids"] == {"t": "new"}
    _serve(rig, {1: _leader(1)})
    assert [f.result(0).offset for f in futures] == [0, 1]


def test_a_topic_missing_from_metadata_is_waited_for_not_failed_as_unknown(rig: Rig) -> None:
    """Deleted and not (yet) made again: it may be re-created, as a leader may be elected; the
    batch waits for it up to the delivery timeout, as Kafka's producer waits for metadata."""
    futures = rig.send("a", partition=1)
    _start(rig)
    _serve(rig, {1: None})
    md = sender_metadata(version=2)
    rig.refresh_metadata(type(md)(md.version, md.cluster, md.brokers, {}, md.coordinator))
    rig.reactor.advance(100)
    rig.sender.run_pass()
    assert not futures[0].done()
    rig.reactor.advance(1000)
    rig.sender.run_pass()
    assert isinstance(futures[0].exception(0), DeliveryTimeoutError)


# -- the producer: partitions chosen at send() -------------------------------------------------
def test_keyless_and_keyed_sends_after_a_refresh_go_to_partitions_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, linger_ms=60_000)  # the sticky partition's batch stays open
    try:
        assert p.send("t", b"v").partition == 1  # the sticky partition: round-robin starts at 1
        assert p.send("t", b"v", key=b"k-5").partition == partition_for_key(b"k-5", 3) != 0
        p.metadata.update(driven_metadata(version=2, partitions=1, topic_id="new"))
        assert p.send("t", b"v").partition == 0, "the sticky partition is chosen again from the new count"
        p.accumulator.sticky.clear()  # as when the batch closes
        assert p.accumulator.sticky_partition("t", 3) == 0, "a thread that read the older metadata"
        assert p.send("t", b"v", key=b"k-5").partition == 0
        many = p.send_many("t", [b"v", b"w"], [None, b"k-5"])
        assert [many[0].partition, many[1].partition] == [0, 0]
    finally:
        p.sender.stop()


def test_a_keyless_record_sent_before_the_refresh_fails_at_once_and_the_next_one_is_delivered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch)
    try:
        first = p.send("t", b"v")
        assert send_pass(p) == [("t", 1)]
        answer(p, [[-1, P.UNKNOWN_TOPIC_OR_PARTITION, "t-1 is not on this broker"]])
        p.metadata.update(driven_metadata(version=2, partitions=1, topic_id="new"))
        p.sender.run_pass()
        error = first.exception(0)
        assert isinstance(error, UnknownTopicOrPartitionError) and "t-1" in error.message, repr(error)
        after = p.send("t", b"w")
        assert send_pass(p) == [("t", 0)]
        answer(p, [[9, 0, ""]])
        assert after.result(0).offset == 9
    finally:
        p.sender.stop()


def test_a_batch_whose_request_got_no_answer_fails_gone_saying_it_may_have_been_written(rig: Rig) -> None:
    """A batch of a partition gone whose earlier send may be in a log (its request lost with its
    answer) fails saying so, as every other error of such a batch does: the application must not
    read "unknown partition" as "never written" (the deleted topic's log may have held it)."""
    written = _leader(1)
    gone = rig.send("g", partition=1)
    _start(rig)
    _serve(rig, {0: _leader(0), 1: written}, answer=False)  # written, the answer lost
    assert written.log_end_offset == 2
    rig.refresh_metadata(sender_metadata(version=2, partitions=1, topic_id="new"))
    rig.reactor.advance(100)
    rig.sender.run_pass()
    _assert_gone(gone, rig)
    assert "may have been written" in gone[0].exception(0).message, gone[0].exception(0).message


def test_a_batch_never_sent_fails_gone_without_saying_it_may_have_been_written(rig: Rig) -> None:
    gone = rig.send("g", partition=1)
    rig.refresh_metadata(sender_metadata(version=2, partitions=1, topic_id="new"))  # before any send
    for _ in range(3):
        rig.sender.run_pass()
        if rig.client(COORDINATOR).unanswered:
            rig.grant_producer_id(7)
        rig.reactor.advance(100)
    _assert_gone(gone, rig)
    assert "may have been written" not in gone[0].exception(0).message
