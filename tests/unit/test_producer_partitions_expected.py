"""A partition that a send on the producer's I/O thread (a delivery callback) named beyond the
count the producer holds: the thread cannot wait for a refresh while it runs the callback, so
the record is queued and the sender judges it by metadata answered after the send
(``Sender.expect_partition``). An answer to a request sent before (it may predate the
partition) does not fail it; metadata that shows the partition sends it; two answers without it
fail it with ``TopicNotInMetadataError``, as the send would have raised. The sender is built
from its real parts (tests/unit/builders_sender.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fabric import protocol as P
from fabric.errors import TopicNotInMetadataError
from tests.unit.builders_sender import COORDINATOR, LEADER, Rig, sender_metadata


@pytest.fixture
def rig(make_sender_rig: Callable[..., Rig]) -> Rig:
    r = make_sender_rig()  # idempotent, delivery_timeout_ms 1000; topic t has 1 partition
    r.sender.run_pass()
    r.grant_producer_id(7)
    r.sender.run_pass()
    return r


def _send_expected_with_a_refresh_in_flight(rig: Rig) -> list:
    """A refresh asked for before the send is still unanswered when it comes."""
    rig.metadata.want_refresh()
    rig.sender.run_pass()
    rig.sender.expect_partition(("t", 1))
    futures = rig.send("a", partition=1)
    rig.sender.run_pass()
    return futures


def _answer_refresh(rig: Rig, partitions: int, version: int) -> None:
    md = sender_metadata(version, partitions=partitions)
    rig.client(COORDINATOR).answer_last(P.METADATA, {"metadata": md.to_wire()})
    rig.sender.run_pass()  # asks for the next refresh while the partition is not known


def test_an_answer_that_may_predate_the_send_does_not_fail_it_and_fresh_metadata_sends_it(rig: Rig) -> None:
    futures = _send_expected_with_a_refresh_in_flight(rig)
    _answer_refresh(rig, partitions=1, version=2)
    assert not futures[0].done(), f"failed by an answer to a request sent before: {futures[0].exception(0)!r}"
    _answer_refresh(rig, partitions=2, version=3)  # the partition was added
    _, header, _, _ = rig.produce_requests()[-1]
    assert [p[:2] for p in header["parts"]] == [["t", 1]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[0, 0, ""]]})
    assert [f.result(0).offset for f in futures] == [0, 1]


def test_two_answers_without_the_partition_fail_it_as_the_send_would_have(rig: Rig) -> None:
    futures = _send_expected_with_a_refresh_in_flight(rig)
    _answer_refresh(rig, partitions=1, version=2)
    _answer_refresh(rig, partitions=1, version=3)
    for f in futures:
        error = f.exception(0)
        assert isinstance(error, TopicNotInMetadataError) and "no partition 1" in str(error), repr(error)
    assert rig.accumulator.buffered_bytes == 0
    assert not rig.produce_requests(), "sent to a partition no metadata has"
