"""A new replica opens without an fsync, and its topic id is made durable before its first
durable write.

A 1,000-partition topic's creation spent ~7 fsyncs per replica on files with nothing in them
(the new log's index, segment, directory and checkpoint; the topic id and its directory; a
leader's epoch checkpoint) -- about 10 s of each broker's reactor on this machine's disk. Now
a new log is flushed with its first data (engines/segment.py), a leader checkpoints its epoch
with its first batch of it (nodes/broker/partition.py), and ``partition.metadata`` is written
without fsync and synced before the replica's first durable write (Kafka's
``maybeFlushMetadataFile``), so no record can outlive the id that says which topic it
belongs to. A real Broker (no peers) over the
segment engine; fsyncs are recorded by the path of the synced descriptor (SyncRecorder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from engines import batch as B
from engines.api import EngineError
from fabric.records import build_batch
from nodes.broker import partition_dirs
from nodes.broker.node import Broker
from nodes.broker.partition_dirs import PartitionDirs
from tests.harness import wait_until
from tests.unit.builders_broker import CLUSTER, NEW_ID, OLD_ID, md, new_broker, write
from tests.unit.builders_segment import SyncRecorder

THIRD_ID = "33333333-3333-4333-8333-333333333333"


def follower_md(version: int) -> dict:
    """Broker 2 leads t-0 (replicas 2, 1): broker 1 holds a follower replica."""
    doc = md(version, {"t": NEW_ID}, cluster_id=CLUSTER)
    doc["brokers"].append([2, "127.0.0.1", 9, 10, True])
    doc["topics"]["t"]["partitions"] = [[2, version, [2, 1], [2, 1]]]
    return doc


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = new_broker(tmp_path)
    yield b
    b.close()


def test_a_new_follower_replica_opens_without_an_fsync_and_syncs_its_id_before_its_first_batch(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.apply_metadata(md(1, {}, cluster_id=CLUSTER))  # joins the cluster: meta.properties
    syncs = SyncRecorder(monkeypatch)
    broker.apply_metadata(follower_md(2))
    part = broker.partitions[("t", 0)]
    assert part.role == "follower" and broker.dirs.topic_id(("t", 0)) == NEW_ID
    assert syncs.paths == [], "opening an empty replica fsynced"
    data = bytearray(build_batch([(1_700_000_000_000, None, b"v", None)]))
    B.set_leader_epoch(data, 1)
    assert part.append_as_follower(bytes(data)) == 1
    part.engine.flush()
    metadata = syncs.first("/t-0/partition.metadata")
    assert syncs.paths[metadata + 1].endswith("/t-0"), "the id's name was not made durable"
    assert syncs.paths[metadata + 2] == str(broker.data_dir), "the partition directory's name was not made durable"
    assert metadata < syncs.first(".log") and metadata < syncs.first("leader-epoch-checkpoint.tmp")
    syncs.clear()
    B.set_base_offset(data, 1)
    assert part.append_as_follower(bytes(data)) == 1
    part.engine.flush()
    assert syncs.paths and not any(p.endswith("partition.metadata") for p in syncs.paths), "synced the id twice"


def test_a_new_leader_writes_nothing_until_its_first_batch_and_then_its_id_first(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.apply_metadata(md(1, {}, cluster_id=CLUSTER))
    syncs = SyncRecorder(monkeypatch)
    broker.apply_metadata(md(2, {"t": NEW_ID}, cluster_id=CLUSTER))
    assert broker.partitions[("t", 0)].is_leader
    assert syncs.paths == [], "becoming leader of an empty replica fsynced"
    write(broker, "t", 1)
    broker.partitions[("t", 0)].engine.flush()
    metadata = syncs.first("/t-0/partition.metadata")
    assert metadata < syncs.first("leader-epoch-checkpoint.tmp") < syncs.first(".log")
    syncs.clear()
    write(broker, "t")
    assert not any(p.endswith("partition.metadata") or "leader-epoch" in p for p in syncs.paths)


def test_an_id_that_cannot_be_synced_fails_the_write_and_is_tried_again(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.apply_metadata(follower_md(1))
    part = broker.partitions[("t", 0)]
    real = partition_dirs.sync_file
    calls: list[str] = []

    def failing_once(path):  # noqa: ANN001, ANN202
        calls.append(str(path))
        if len(calls) == 1:
            raise EngineError(f"sync {path}: disk gone")
        return real(path)
    monkeypatch.setattr(partition_dirs, "sync_file", failing_once)
    data = bytearray(build_batch([(1_700_000_000_000, None, b"v", None)]))
    B.set_leader_epoch(data, 1)
    with pytest.raises(EngineError, match="disk gone"):
        part.append_as_follower(bytes(data))
    assert part.log_end_offset == 0
    assert part.append_as_follower(bytes(data)) == 1
    assert len(calls) == 2, "the id was not synced again after the failure"
    B.set_base_offset(data, 1)
    assert part.append_as_follower(bytes(data)) == 1 and len(calls) == 2


def test_a_replica_that_cannot_be_opened_is_opened_later_and_the_others_now(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage error opening one new replica (a full disk) used to drop it from the replicas
    to open -- and, in a later pass, every one after it -- until the next metadata change."""
    real = broker.core.open_partition
    failures = [("t", 0)]

    def full_disk_once(topic, partition, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if (topic, partition) in failures:
            failures.remove((topic, partition))
            raise EngineError(f"{topic}-{partition}: no space left on device")
        return real(topic, partition, *args, **kw)
    monkeypatch.setattr(broker.core, "open_partition", full_disk_once)
    broker.apply_metadata(md(1, {"t": NEW_ID, "u": OLD_ID}, cluster_id=CLUSTER))
    assert ("u", 0) in broker.partitions and ("t", 0) not in broker.partitions
    wait_until(lambda: broker.reactor.run_once(50) or ("t", 0) in broker.partitions, 5, 0.01,
               what="the replica that failed to open, opened again")
    assert broker.partitions[("t", 0)].is_leader and not failures


def test_after_a_restart_the_id_is_made_durable_again_before_the_first_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which files a killed (or closed) process wrote without fsync the next one cannot know:
    the restarted broker syncs each replica's id before its first write too."""
    first = new_broker(tmp_path)
    first.apply_metadata(md(1, {}, cluster_id=CLUSTER))
    first.apply_metadata(md(2, {"t": NEW_ID}, cluster_id=CLUSTER))  # a new replica, nothing written
    first.close()
    syncs = SyncRecorder(monkeypatch)
    again = new_broker(tmp_path)
    try:
        again.apply_metadata(md(3, {"t": NEW_ID}, cluster_id=CLUSTER))
        assert again.partitions[("t", 0)].is_leader
        write(again, "t", 1)
        again.partitions[("t", 0)].engine.flush()
        metadata = syncs.first("/t-0/partition.metadata")
        assert syncs.paths[metadata + 1].endswith("/t-0") and metadata < syncs.first(".log")
    finally:
        again.close()


def test_one_data_directory_fsync_covers_every_replica_created_before_it(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data directory holds every partition directory's name: its fsync at one replica's
    first write covers all created before it (1,000 fsyncs fewer after a 1,000-partition
    create), and a replica created after it needs another."""
    broker.apply_metadata(md(1, {}, cluster_id=CLUSTER))
    broker.apply_metadata(md(2, {"t": NEW_ID, "u": OLD_ID}, cluster_id=CLUSTER))
    syncs = SyncRecorder(monkeypatch)
    write(broker, "t", 1)
    write(broker, "u", 1)
    data_dir = str(broker.data_dir)
    assert syncs.paths.count(data_dir) == 1, syncs.paths
    broker.apply_metadata(md(3, {"t": NEW_ID, "u": OLD_ID, "v": "33333333-3333-4333-8333-333333333333"},
                             cluster_id=CLUSTER))
    syncs.clear()
    write(broker, "v", 1)
    assert syncs.paths.count(data_dir) == 1 and syncs.first("/v-0/partition.metadata") < syncs.paths.index(data_dir)


def test_a_directory_left_by_a_failed_delete_is_still_synced_into_the_data_directory(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete that leaves the directory itself (rmtree's errors are ignored) must not make a
    replica re-created in it count as a directory found at start, whose name a data-directory
    fsync already covered."""
    broker.apply_metadata(md(1, {}, cluster_id=CLUSTER))
    broker.apply_metadata(md(2, {"u": OLD_ID}, cluster_id=CLUSTER))
    write(broker, "u", 1)  # a data-directory fsync: covers u-0 only
    broker.apply_metadata(md(3, {"u": OLD_ID, "t": NEW_ID}, cluster_id=CLUSTER))  # t-0 made after it

    def rmtree_leaving_the_directory(path, ignore_errors=False):  # noqa: ANN001, ANN202 (EBUSY on the directory)
        for e in Path(path).iterdir():
            shutil.rmtree(e) if e.is_dir() else e.unlink()
    monkeypatch.setattr(partition_dirs.shutil, "rmtree", rmtree_leaving_the_directory)
    broker.apply_metadata(md(4, {"u": OLD_ID}, deleted=(NEW_ID,), cluster_id=CLUSTER))
    assert ("t", 0) not in broker.partitions and (broker.data_dir / "t-0").is_dir()
    monkeypatch.undo()
    broker.apply_metadata(md(5, {"u": OLD_ID, "t": THIRD_ID}, deleted=(NEW_ID,), cluster_id=CLUSTER))
    syncs = SyncRecorder(monkeypatch)
    write(broker, "t", 1)
    assert str(broker.data_dir) in syncs.paths, f"t-0's name was never made durable: {syncs.paths}"


def test_a_set_aside_whose_directory_fsync_fails_forgets_the_replica_it_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = PartitionDirs(tmp_path, "segment")
    dirs.engine_dir(("t", 0), NEW_ID)
    dirs.make_durable(("t", 0))

    def failing(directory):  # noqa: ANN001, ANN202
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(partition_dirs, "fsync_directory", failing)
    with pytest.raises(OSError):
        dirs.set_aside(("t", 0))  # the directory is moved; its fsync fails
    monkeypatch.undo()
    dirs.engine_dir(("t", 0), THIRD_ID)  # the topic re-created under the same name
    assert dirs.topic_id(("t", 0)) == THIRD_ID
    assert PartitionDirs(tmp_path, "segment").topic_id(("t", 0)) == THIRD_ID, "no id written for the new replica"
    syncs = SyncRecorder(monkeypatch)
    dirs.make_durable(("t", 0))
    assert syncs.first("/t-0/partition.metadata") >= 0
