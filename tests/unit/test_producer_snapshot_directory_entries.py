"""What a partition directory may hold besides its producer-state snapshots, and what a replica
does with it: entries named like a snapshot that are not one of its files, and the temp files
a crash in the middle of a snapshot's write leaves.

A name of 20 digits (``snapshot_name``) that is a regular file is a snapshot; anything else --
another number spelling (digits outside ASCII, which ``str.isdigit`` takes and ``int`` may
refuse), a directory -- is no snapshot: it is neither read nor deleted, so it can neither stop
the partition from opening nor stop a truncation or the pruning of old snapshots. Real
partitions on the segment engine in a temp directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from engines.api import EngineConfig
from engines.segment import SegmentEngine
from nodes.broker import producer_snapshots
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024


def _open(directory: Path) -> Partition:
    return Partition("t", 0, 1, SegmentEngine(str(directory / "log"), EngineConfig(fsync="never",
                                                                                    batch_bytes_max=BATCH_MAX)),
                     str(directory))


def _leader_wrote(directory: Path, batches: int) -> Partition:
    part = _open(directory)
    part.become_leader(1, [1], [1], now_ms=0)
    for i in range(batches):
        (result,), _ = part.append_as_leader([make_batch(3, pid=100 + i, epoch=0, seq=0)], BATCH_MAX, [False])
        assert result[1] == 0, result
    return part


def _snapshots(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(producer_snapshots.SNAPSHOT_SUFFIX)
                  and (directory / n).is_file())


def test_a_name_of_other_digits_does_not_stop_the_open(tmp_path: Path) -> None:
    _leader_wrote(tmp_path, 2).close()
    for name in ("\u00b2", "\u0661\u0662", "12"):  # superscript two; Arabic-Indic 12; a short name
        (tmp_path / (name + producer_snapshots.SNAPSHOT_SUFFIX)).write_bytes(b"not ours")
    part = _open(tmp_path)
    try:
        assert part.producer_snapshots is not None
        assert part.producer_snapshots.offsets == [6]
        assert len(part.producers) == 2  # restored from the snapshot at clean close
    finally:
        part.close()
    assert (tmp_path / ("\u00b2" + producer_snapshots.SNAPSHOT_SUFFIX)).read_bytes() == b"not ours"


def test_a_directory_named_like_a_snapshot_blocks_neither_a_truncation_nor_the_pruning(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    monkeypatch.setattr(producer_snapshots, "PRODUCER_SNAPSHOT_INTERVAL_RECORDS", 1)
    part = _leader_wrote(tmp_path, 1)
    (tmp_path / producer_snapshots.snapshot_name(1)).mkdir()  # below the log end: the oldest "snapshot"
    (tmp_path / producer_snapshots.snapshot_name(10**6)).mkdir()  # above every log end here
    part.close()
    part = _open(tmp_path)
    try:
        for i in range(4):  # snapshots after each batch: only the newest PRODUCER_SNAPSHOTS_KEPT stay
            (result,), _ = part.append_as_leader([make_batch(3, pid=200 + i, epoch=0, seq=0)], BATCH_MAX, [False])
            assert result[1] == 0, result
            part.maybe_snapshot_producers(now_ms=i)
        assert _snapshots(tmp_path) == [producer_snapshots.snapshot_name(12), producer_snapshots.snapshot_name(15)]
        part.become_follower(2, 2, [1, 2], [1, 2])
        part.truncate_to(3)  # (its leader never had what came after)
        assert part.log_end_offset == 3
        assert _snapshots(tmp_path) == []
    finally:
        part.close()
    assert (tmp_path / producer_snapshots.snapshot_name(1)).is_dir()


def test_a_temp_file_a_crash_left_is_removed_at_open(tmp_path: Path) -> None:
    _leader_wrote(tmp_path, 1).close()
    left = tmp_path / (producer_snapshots.snapshot_name(3) + ".tmp")
    left.write_bytes(b"half a snapshot")
    part = _open(tmp_path)
    try:
        assert not left.exists()
        assert len(part.producers) == 1
    finally:
        part.close()
