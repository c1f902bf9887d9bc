"""Topics are matched by id, and nothing is deleted because metadata does not mention it:
a real Broker (sockets bound on free ports, no peers) applies metadata built here, over the
segment engine in a temporary data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.segment import SegmentEngine
from fabric.records import build_batch
from nodes.broker.node import Broker
from nodes.broker.partition_dirs import PartitionDirs
from tests.unit.builders_broker import NEW_ID, OLD_ID, md, new_broker, write


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = new_broker(tmp_path)
    yield b
    b.close()


def _stray_log_end(b: Broker, name: str) -> int:
    engine = SegmentEngine(str(b.data_dir / name / "segment" / "log"), EngineConfig(fsync="never"))
    try:
        return engine.log_end_offset
    finally:
        engine.close()


def test_a_recreated_topic_of_the_same_name_never_serves_the_old_replica(broker: Broker) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))
    write(broker, "t")
    # the delete of OLD_ID was missed (the tombstone aged out): only the new id is in the metadata
    broker.apply_metadata(md(2, {"t": NEW_ID}))
    part = broker.partitions[("t", 0)]
    assert part.log_end_offset == 0, "the old topic's records are served as the new topic's"
    assert broker.dirs.topic_id(("t", 0)) == NEW_ID
    stray = f"t-0.{OLD_ID}.stray"
    assert broker.stats()["stray_partitions"] == [stray]
    assert _stray_log_end(broker, stray) == 3, "the old replica is kept, with its records"
    # an explicit delete of the old id (a later push still lists it) removes the stray
    broker.apply_metadata(md(3, {"t": NEW_ID}, deleted=(OLD_ID,)))
    assert not (broker.data_dir / stray).exists()
    assert broker.stats()["strays"] == 0


def test_a_topic_absent_from_metadata_is_set_aside_not_deleted(broker: Broker) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))
    write(broker, "t", 4)
    broker.apply_metadata(md(2, {}))
    assert ("t", 0) not in broker.partitions
    assert not (broker.data_dir / "t-0").exists()
    assert _stray_log_end(broker, f"t-0.{OLD_ID}.stray") == 4


def test_an_explicit_delete_removes_the_partition_directory(broker: Broker) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))
    write(broker, "t")
    broker.apply_metadata(md(2, {}, deleted=(OLD_ID,)))
    assert [p.name for p in broker.data_dir.iterdir() if p.is_dir()] == []


def test_an_unknown_directory_found_at_start_is_set_aside_and_stays_reported(tmp_path: Path) -> None:
    b = new_broker(tmp_path)
    try:
        b.apply_metadata(md(1, {"t": OLD_ID, "u": NEW_ID}))
        write(b, "t", 2)
    finally:
        b.close()
    b = new_broker(tmp_path)  # restarted: both directories are opened from disk
    try:
        assert {("t", 0), ("u", 0)} <= set(b.partitions)
        b.apply_metadata(md(2, {"u": NEW_ID}))
        assert set(b.partitions) == {("u", 0)}
    finally:
        b.close()
    b = new_broker(tmp_path)  # the stray is not opened again, and still reported
    try:
        assert set(b.partitions) == {("u", 0)}
        assert b.stats()["stray_partitions"] == [f"t-0.{OLD_ID}.stray"]
    finally:
        b.close()


def test_a_directory_from_before_topic_ids_takes_the_id_of_its_topic(tmp_path: Path) -> None:
    """The layout before ids: <topic>-<p>/log and the epoch and HW checkpoints beside it."""
    d = tmp_path / "data" / "broker-1" / "t-0"
    engine = SegmentEngine(str(d / "log"), EngineConfig(fsync="always"))
    batch = bytearray(build_batch([(1_700_000_000_000, None, b"old", None)]))
    B.set_leader_epoch(batch, 0)  # written by the leader of epoch 0, as the checkpoint says
    engine.append(batch)
    engine.close()
    (d / "leader-epoch-checkpoint").write_text("0 0\n")
    (d / "high-watermark-checkpoint").write_text("1\n")
    b = new_broker(tmp_path)
    try:
        assert (d / "segment" / "log").is_dir() and not (d / "log").exists()
        assert (d / "segment" / "leader-epoch-checkpoint").read_text() == "0 0\n"
        assert not (d / "high-watermark-checkpoint").exists()  # it describes that log: moved with it
        assert b.partitions[("t", 0)].log_end_offset == 1 and b.partitions[("t", 0)].high_watermark == 1
        b.apply_metadata(md(1, {"t": OLD_ID}))
        assert b.dirs.topic_id(("t", 0)) == OLD_ID
        assert (d / "partition.metadata").read_text() == f"version: 0\ntopic_id: {OLD_ID}\n"
        assert b.partitions[("t", 0)].log_end_offset == 1
    finally:
        b.close()


def test_each_engine_keeps_its_own_log_and_epoch_checkpoint(tmp_path: Path) -> None:
    seg = PartitionDirs(tmp_path, "segment")
    d = seg.engine_dir(("t", 0), OLD_ID)
    (d / "leader-epoch-checkpoint").write_text("3 0\n")
    lmdb = PartitionDirs(tmp_path, "lmdb")
    other = lmdb.engine_dir(("t", 0))
    assert other == tmp_path / "t-0" / "lmdb" and (other / "log").is_dir()
    assert not (other / "leader-epoch-checkpoint").exists()
    assert lmdb.other_engines == {"segment": 1}
    assert (d / "leader-epoch-checkpoint").read_text() == "3 0\n", "the other engine's state is untouched"
    assert lmdb.topic_id(("t", 0)) == OLD_ID
