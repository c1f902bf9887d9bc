"""Calls into the producer from a delivery callback, which runs on the producer's I/O thread:
nothing there may wait for that thread, which is busy running the callback. A send to a
partition beyond the count the producer holds (added since its last metadata refresh) is
queued, and the I/O thread checks it against fresh metadata once the callback returns;
a send that would have to wait for a topic's metadata or for buffer space fails at once, as
does ``flush()``; ``close()`` closes without waiting. Before, each of them blocked for
``max_block_ms`` (or for ever) and then failed. Real processes (three brokers)."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from fabric import protocol as P
from fabric.client import Admin, Producer
from fabric.errors import BufferExhaustedError, FabricError, TopicNotInMetadataError
from tests.harness import Cluster

pytestmark = pytest.mark.timeout(90)

CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)
MAX_BLOCK_MS = 6000
NOT_BLOCKED_S = MAX_BLOCK_MS / 2000  # far above a send that does not wait, far below one that does


def _topic(cluster: Cluster, name: str, partitions: int = 1) -> str:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=3)
        cluster.wait_topic_ready(admin, name)
    return name


def _in_callback(p: Producer, topic: str, call: Callable[[], object], value: bytes = b"first") -> dict:
    """Run ``call`` in the delivery callback of ``value`` sent to partition 0 of ``topic``;
    returns what it returned (``value``) or raised (``error``), and how long it took."""
    out: dict = {}
    done = threading.Event()

    def on_delivery(_md: object, _err: object) -> None:
        started = time.monotonic()
        try:
            out["value"] = call()
        except Exception as e:  # what the test looks at
            out["error"] = e
        out["took_s"] = time.monotonic() - started
        done.set()
    p.send(topic, value, partition=0, on_delivery=on_delivery)
    assert done.wait(60), "the delivery callback did not run"
    return out


def test_a_send_from_a_callback_to_a_partition_added_meanwhile_is_delivered(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-grown")
    with Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS) as p:
        p.send(topic, b"zero", partition=0).result(30)  # the producer's metadata: one partition

        def grow_and_send() -> object:
            # the I/O thread is here: the producer's metadata cannot be refreshed meanwhile
            with Admin(cluster.bootstrap) as admin:
                admin.alter_topic(topic, partitions=2)
                cluster.wait_topic_ready(admin, topic)
            assert len(p.metadata.current.topics[topic].partitions) == 1
            started = time.monotonic()
            future = p.send(topic, b"second", partition=1)
            many = p.send_many(topic, [b"third", b"fourth"], partition=1)
            return future, many, time.monotonic() - started
        out = _in_callback(p, topic, grow_and_send)
        assert "error" not in out, repr(out.get("error"))
        future, many, send_s = out["value"]
        assert send_s < NOT_BLOCKED_S, f"send() blocked the I/O thread for {send_s:.1f} s"
        md = future.result(30)
        assert (md.partition, md.offset) == (1, 0)
        assert [(md.partition, md.offset) for md in many.result(30)] == [(1, 1), (1, 2)]


def test_a_send_from_a_callback_to_a_partition_no_metadata_has_fails_its_future(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-beyond")
    with Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS) as p:
        out = _in_callback(p, topic, lambda: p.send(topic, b"v", partition=7))
        assert "error" not in out, repr(out.get("error"))
        assert out["took_s"] < NOT_BLOCKED_S, f"send() blocked the I/O thread for {out['took_s']:.1f} s"
        error = out["value"].exception(30)
        assert isinstance(error, TopicNotInMetadataError), repr(error)
        assert error.code == P.UNKNOWN_TOPIC_OR_PARTITION and "partition 7" in str(error), error
        assert p.send(topic, b"after", partition=0).result(30).partition == 0  # the producer goes on


def test_a_send_from_a_callback_to_a_topic_not_in_metadata_fails_at_once(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-known")
    with Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS) as p:
        out = _in_callback(p, topic, lambda: p.send("cb-never-made", b"v"))
        assert isinstance(out.get("error"), TopicNotInMetadataError), out
        assert "I/O thread" in str(out["error"]), out["error"]
        assert out["took_s"] < NOT_BLOCKED_S, f"send() blocked the I/O thread for {out['took_s']:.1f} s"


def test_a_send_from_a_callback_into_a_full_buffer_fails_at_once(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-full")
    # the record whose callback runs holds 600 of the 1000 bytes until the callback returns
    with Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS, buffer_bytes_max=1000) as p:
        out = _in_callback(p, topic, lambda: p.send(topic, b"x" * 576, partition=0), value=b"x" * 576)
        assert isinstance(out.get("error"), BufferExhaustedError), out
        assert "I/O thread" in str(out["error"]), out["error"]
        assert out["took_s"] < NOT_BLOCKED_S, f"send() blocked the I/O thread for {out['took_s']:.1f} s"
        assert p.send(topic, b"x" * 576, partition=0).result(30).partition == 0  # space once it returned


def test_flush_from_a_callback_raises_at_once(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-flush")
    with Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS) as p:

        def send_and_flush() -> object:
            p.send(topic, b"queued", partition=0)
            return p.flush(timeout=MAX_BLOCK_MS / 1000)
        out = _in_callback(p, topic, send_and_flush)
        error = out.get("error")
        assert isinstance(error, FabricError) and "I/O thread" in str(error), out
        assert out["took_s"] < NOT_BLOCKED_S, f"flush() blocked the I/O thread for {out['took_s']:.1f} s"
        p.flush(30)  # from the application's thread it works


def test_close_from_a_callback_closes_without_waiting(cluster: Cluster) -> None:
    topic = _topic(cluster, "cb-close")
    p = Producer(cluster.bootstrap, max_block_ms=MAX_BLOCK_MS)
    try:
        out = _in_callback(p, topic, p.close)
        assert "error" not in out, repr(out.get("error"))
        p.sender.join(10)
        assert not p.sender.is_alive(), "the I/O thread did not stop"
        with pytest.raises(FabricError, match="closed"):
            p.send(topic, b"late", partition=0)
    finally:
        p.close()
