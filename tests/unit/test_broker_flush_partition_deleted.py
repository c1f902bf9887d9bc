"""A partition deleted (its topic deleted: retire, then its directory removed) while the
flusher thread runs its job: nothing is written into the removed directory, the completion is
dropped without error, the partition is no longer watched, and a partition re-created under
the same name is flushed by the flusher as any other."""

from __future__ import annotations

import os

import pytest

from engines.segment_recovery import read_checkpoint
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from tests.harness import wait_until
from tests.unit.builders_broker import HOLD_S, SlowSync, produce
from tests.unit.fakes import close_reports_eio


def test_a_partition_deleted_while_its_job_runs_leaves_no_directory_and_a_new_one_is_flushed(
        leader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    broker, clock = leader
    key = ("t", 0)
    produce(broker, 0, 5)
    broker.core.dirs.set_topic_id(key, "deleted-id")
    part_dir = broker.core.dirs.path(key)
    sync = SlowSync(monkeypatch)
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    assert sync.started.wait(HOLD_S) and key in broker.core._flushing  # the thread is in the job's fdatasync
    broker.core.retire_partition(key, ("deleted-id",))
    assert not part_dir.exists()
    sync.release.set()
    wait_until(lambda: broker.reactor.run_once(10) or not broker.core._flushing, timeout_s=5)
    broker.core.flush_due()
    assert key not in broker.core._unflushed and key not in broker.core._flush_again
    assert not part_dir.exists(), sorted(os.listdir(part_dir))  # nothing written into it afterwards
    assert "flush failed" not in caplog.text
    assert broker.core.flusher is not None and broker.core.flusher.outstanding == 0
    # the topic re-created under the same name: its partition flushed off the reactor as before
    info = PartitionInfo("t", 0, 1, 2, (1,), (1,), 2)
    broker.apply_metadata(ClusterMetadata(2, "test", {}, {"t": TopicInfo("t", (info,), {})}).to_wire())
    assert broker.partitions[key].is_leader
    produce(broker, 0, 3)
    engine = broker.partitions[key].engine
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    assert key in broker.core._flushing
    wait_until(lambda: broker.reactor.run_once(10) or not broker.core._flushing, timeout_s=5)
    assert not engine._active.dirty
    cp = read_checkpoint(engine.directory)
    assert cp is not None and cp.next_offset == engine.log_end_offset


def test_a_deleted_partition_whose_close_fails_is_still_deleted(leader, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """A close(2) that reports an error while a deleted topic's partition is retired (its
    descriptors are released all the same): logged, and the directory is still removed -- the
    raw OSError came out of the metadata's handling and the directory stayed."""
    broker, _clock = leader
    key = ("t", 0)
    produce(broker, 0, 5)
    broker.core.dirs.set_topic_id(key, "deleted-id")
    part_dir = broker.core.dirs.path(key)
    with close_reports_eio(broker.partitions[key].engine._segments[0].fd):
        broker.core.retire_partition(key, ("deleted-id",))
    assert key not in broker.partitions and not part_dir.exists()
    assert "Input/output error" in caplog.text
