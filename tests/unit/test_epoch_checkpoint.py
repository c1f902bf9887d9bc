"""The leader-epoch cache and its checkpoint file.

Entries increase in both columns: an entry that conflicts with later ones truncates them, as
Kafka's LeaderEpochFileCache does. The checkpoint is written through
``engines.durable.replace_file`` before the cache changes, so a failed write (a full disk) is
a typed error that leaves the cache and the file as they were, and the same assignment can be
made again. A damaged line is an error at open, never skipped. Before, a start offset going
backwards was appended as is, a line that did not parse was dropped silently, and a failed
write raised a raw OSError after the entry was already in memory (so a retry did nothing)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engines.api import EngineConfig, EngineError, StorageFull
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.epochs import FILE_NAME, EpochCache
from nodes.broker.partition import Partition


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)


@pytest.mark.parametrize("assigned, entries", [
    # starts where epoch 3 did: 3 and 4 conflict with it
    ([(1, 0), (3, 10), (4, 20), (5, 10)], [(1, 0), (5, 10)]),
    # led briefly at 7 under epoch 4 and wrote nothing: epoch 5 from 7 replaces it
    ([(2, 0), (4, 7), (5, 7)], [(2, 0), (5, 7)]),
    # the latest epoch again from a later offset: already recorded; from an earlier one: moved
    ([(1, 0), (3, 10), (3, 12)], [(1, 0), (3, 10)]),
    ([(1, 0), (3, 10), (3, 8)], [(1, 0), (3, 8)]),
    # an older epoch than the latest changes nothing
    ([(3, 10), (2, 20)], [(3, 10)]),
])
def test_entries_increase_in_both_columns(tmp_path: Path, assigned: list, entries: list) -> None:
    c = EpochCache(tmp_path)
    for epoch, start_offset in assigned:
        c.assign(epoch, start_offset)
    assert c.entries == entries
    assert EpochCache(tmp_path).entries == entries


def test_a_non_monotonic_checkpoint_is_truncated_at_load(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("1 0\n4 30\n3 40\n6 50\n")
    assert EpochCache(tmp_path).entries == [(1, 0), (3, 40), (6, 50)]


@pytest.mark.parametrize("text", ["1 0\n3 x\n", "1 0\n3\n", "1 0\n\n3 10\n", "1 0 7\n", "-1 0\n"])
def test_a_damaged_checkpoint_line_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with pytest.raises(EngineError, match=FILE_NAME):
        EpochCache(tmp_path)


def test_an_empty_checkpoint_is_no_entries(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("")
    assert EpochCache(tmp_path).entries == []


def test_a_failed_checkpoint_write_leaves_the_cache_whole_and_can_be_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = EpochCache(tmp_path)
    c.assign(1, 0)
    _disk_full(monkeypatch)
    with pytest.raises(StorageFull):
        c.assign(2, 5)
    monkeypatch.undo()
    assert c.entries == [(1, 0)] and EpochCache(tmp_path).entries == [(1, 0)]
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]
    c.assign(2, 5)  # the same change, once the disk has room
    assert EpochCache(tmp_path).entries == [(1, 0), (2, 5)]


# -- a partition whose epoch checkpoint cannot be written --------------------------------------
def _partition(directory: Path) -> Partition:
    return Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=1 << 20)), str(directory))


def test_a_leader_checkpoints_its_epoch_with_its_first_batch_and_writes_none_it_could_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = _partition(tmp_path)
    part.become_follower(2, 3, [1, 2], [1, 2])
    part.become_leader(4, [1, 2], [1, 2], now_ms=0)
    assert part.is_leader and EpochCache(tmp_path).entries == [], "becoming leader wrote the epoch"
    batch = build_batch([(1_700_000_000_000, None, b"v", None)])
    _disk_full(monkeypatch)
    results, written = part.append_as_leader([batch], 1 << 20)
    monkeypatch.undo()
    assert results[0][1] == P.STORAGE_ERROR and written == [] and part.log_end_offset == 0
    assert EpochCache(tmp_path).entries == [], "a batch of an epoch the checkpoint does not have"
    results, written = part.append_as_leader([batch], 1 << 20)  # once the disk has room
    assert results[0][:2] == (0, 0) and len(written) == 1
    assert EpochCache(tmp_path).entries == [(4, 0)]
    part.append_as_leader([batch], 1 << 20)
    assert part.epochs.entries == [(4, 0)], "the epoch's later batches move its start"


def test_a_follower_append_whose_new_epoch_cannot_be_checkpointed_is_undone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leader = Partition("t", 0, 2, MemoryEngine("", EngineConfig(batch_bytes_max=1 << 20)), None)
    leader.become_leader(6, [1, 2], [2], now_ms=0)
    leader.append_as_leader([build_batch([(1_700_000_000_000, None, b"v", None)] * 3)], 1 << 20)
    data = leader.read(0, 1 << 20, upto_offset=leader.log_end_offset)
    part = _partition(tmp_path)
    part.become_follower(2, 6, [1, 2], [1, 2])
    _disk_full(monkeypatch)
    with pytest.raises(StorageFull):
        part.append_as_follower(data)
    monkeypatch.undo()
    assert part.log_end_offset == 0 and part.epochs.entries == [] and len(part.producers) == 0
    assert part.append_as_follower(data) == 1 and EpochCache(tmp_path).entries == [(6, 0)]
