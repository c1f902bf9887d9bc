"""A send naming a partition beyond the count in the producer's metadata: the partition may have
been added since the last refresh (metadata is refreshed every few seconds). The producer asks
for fresh metadata and takes the record when that shows the partition, as Kafka's producer
waits for metadata before it refuses a partition -- rather than failing it at once with
``unknown_topic_or_partition``, which the gateway now reports as failed for good (the
partition "gone"). A partition the fresh metadata does not have either is still refused.
Driven through a real ``Producer`` (tests/unit/driven_producer.py)."""

from __future__ import annotations

import threading
import time

import pytest

from fabric.errors import TopicNotInMetadataError
from tests.unit.driven_producer import driven_metadata, driven_producer


def _refreshed_later(p, partitions: int) -> threading.Event:  # noqa: ANN001
    """The sender's refreshes, each answered (at version 2: the cluster's metadata now) shortly
    after it is asked for; set the event returned to stop answering."""
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            if p.metadata.take_wanted():
                p.metadata.update(driven_metadata(version=2, partitions=partitions))
            time.sleep(0.005)
    threading.Thread(target=answer, daemon=True).start()
    return stop


def test_a_send_to_a_partition_added_since_the_last_refresh_waits_for_fresh_metadata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, max_block_ms=3000)  # metadata: 3 partitions
    try:
        p.metadata.take_wanted()
        t = _refreshed_later(p, partitions=5)  # partitions added: the cluster has 5 now
        f = p.send("t", b"v", partition=4)
        assert f.partition == 4
        t.set()
    finally:
        p.sender.stop()


def test_send_many_to_a_partition_added_since_the_last_refresh_waits_for_fresh_metadata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, max_block_ms=3000)
    try:
        p.metadata.take_wanted()
        t = _refreshed_later(p, partitions=5)
        futures = p.send_many("t", [b"a", b"b"], partition=3)
        assert [futures[0].partition, futures[1].partition] == [3, 3]
        t.set()
    finally:
        p.sender.stop()


def test_a_partition_fresh_metadata_lacks_too_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, max_block_ms=3000)
    try:
        p.metadata.take_wanted()
        t = _refreshed_later(p, partitions=3)  # the refresh shows the same 3
        started = time.monotonic()
        with pytest.raises(TopicNotInMetadataError):
            p.send("t", b"v", partition=7)
        assert time.monotonic() - started < 2, "waited the whole max_block_ms after the refresh answered"
        t.set()
    finally:
        p.sender.stop()
