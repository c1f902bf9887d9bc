"""Seeded runs of a follower replica taking batches of a few idempotent producers (with producer
epoch bumps), truncated at random points (a new leader epoch each time), retention deleting its
log start (small segments), snapshotting its producer table at random points, and reopened at
random points -- after a clean close or a crash (no snapshot at close) -- on the segment and
LMDB engines, with the tail read at open large or small.

At every reopen: every batch the table remembers (live before, restored after) at or after the
log start is in the log at the offset it remembers, for that producer, epoch and sequence
(else a retry would be answered with an offset holding other records); and the restored table
knows every batch the live one knew that is still in the log, in the same producer epoch, or
says it may have forgotten producers below an offset past that batch (else a retry would be
written twice). A batch retention deleted it need not know (a rebuild that began at the log
start: no copy is left to duplicate). It may know more: a snapshot, or a rebuild that read the
whole log. A failing seed is in the assertion message.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.lmdb_engine import LmdbEngine
from engines.segment import SegmentEngine
from nodes.broker import tail_recovery
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
SEEDS = 80
STEPS_MAX = 60
PRODUCERS = 5
SEGMENT_BYTES = 600  # a few batches
RETENTION_BYTES = 400


def _open(directory: Path, engine: type, leader_epoch: int) -> Partition:
    config = EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX, segment_bytes_max=SEGMENT_BYTES,
                          retention_bytes=RETENTION_BYTES)
    part = Partition("t", 0, 1, engine(str(directory / "log"), config), str(directory))
    part.become_follower(2, leader_epoch, [1, 2], [1, 2])
    return part


def _table(part: Partition) -> dict[int, tuple[int, list[tuple[int, int, int]]]]:
    return {pid: (epoch, [tuple(b) for b in batches]) for pid, epoch, batches in part.producers.export()}


def _check_in_log(part: Partition, what: str) -> None:
    headers = {h.base_offset: h for h in tail_recovery.tail_headers(part, part.log_start_offset)}
    for pid, (epoch, batches) in _table(part).items():
        for first, _, offset in batches:
            if offset < part.log_start_offset:
                continue  # deleted by retention: remembered on purpose, its retry answered as before
            h = headers.get(offset)
            assert h is not None and (h.producer_id, h.producer_epoch, h.base_sequence) == (pid, epoch, first), \
                f"{what} table remembers producer {pid} epoch {epoch} sequence {first} at offset {offset}, the log " \
                f"has {h and (h.producer_id, h.producer_epoch, h.base_sequence)}"


def _knows(restored: tuple[int, list] | None, live: tuple[int, list], log_start_offset: int, forgot_below: int) -> bool:
    """A restored producer entry holds the live one's epoch and at least its batches still in
    the log at or past ``forgot_below`` (below it, the restored table says it may lack them)."""
    batches = {b for b in live[1] if b[2] >= max(log_start_offset, forgot_below)}
    return not batches or (restored is not None and restored[0] == live[0] and batches <= set(restored[1]))


class _Run:
    def __init__(self, seed: int, directory: Path) -> None:
        self.rnd = random.Random(seed)
        self.directory = directory
        self.engine = self.rnd.choice([SegmentEngine, LmdbEngine])
        self.leader_epoch = 1
        self.sequences = {pid: 0 for pid in range(PRODUCERS)}
        self.epochs = {pid: 0 for pid in range(PRODUCERS)}
        self.part = _open(directory, self.engine, self.leader_epoch)

    def append(self, step: int) -> None:
        pid = self.rnd.randrange(PRODUCERS)
        if self.rnd.random() < 0.1:  # the producer's new epoch starts at sequence 0
            self.epochs[pid] += 1
            self.sequences[pid] = 0
        n = self.rnd.randint(1, 3)
        data = bytearray(make_batch(n, pid=pid, epoch=self.epochs[pid], seq=self.sequences[pid], tag=f"{step}-"))
        B.set_leader_epoch(data, self.leader_epoch)
        data[0:8] = self.part.log_end_offset.to_bytes(8, "big")  # as the leader numbered it
        assert self.part.append_as_follower(bytes(data)) == 1
        self.sequences[pid] += n

    def truncate(self) -> None:
        self.part.truncate_to(self.rnd.randrange(self.part.log_end_offset + 1))
        self.leader_epoch += 1
        if self.rnd.random() < 0.5:  # producers that restarted (new epochs), else ones that go on
            self.sequences = dict.fromkeys(self.sequences, 0)
            self.epochs = {pid: e + 1 for pid, e in self.epochs.items()}

    def reopen(self, context: str) -> None:
        live, live_forgot = _table(self.part), self.part.producers.forgot_below
        _check_in_log(self.part, f"{context}: the live")
        if self.rnd.random() < 0.5:
            self.part.close()
        else:
            self.part.engine.close()  # a crash: no snapshot at close
        self.part = _open(self.directory, self.engine, self.leader_epoch)
        _check_in_log(self.part, f"{context}: the restored")
        restored, start, below = _table(self.part), self.part.log_start_offset, self.part.producers.forgot_below
        lost = {pid: (entry, restored.get(pid)) for pid, entry in live.items()
                if not _knows(restored.get(pid), entry, start, below)}
        assert not lost, f"{context}: restored without {lost} (log start {start}, forgot below {below}; " \
                         f"live forgot below {live_forgot})"


@pytest.mark.parametrize("seed", range(SEEDS))
def test_a_restored_producer_table_describes_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     seed: int) -> None:
    run = _Run(seed, tmp_path)
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", run.rnd.choice([10**9, 20]))
    try:
        for step in range(run.rnd.randint(5, STEPS_MAX)):
            r = run.rnd.random()
            if r < 0.6:
                run.append(step)
            elif r < 0.7 and run.part.log_end_offset > 0:
                run.truncate()
            elif r < 0.78:
                run.part.set_high_watermark_from_leader(run.part.log_end_offset)
                run.part.apply_retention(now_wall_ms=0)
            elif r < 0.85:
                run.part.maybe_snapshot_producers(now_ms=step * 100_000)
            elif r < 0.95:
                run.reopen(f"seed {seed} step {step}")
    finally:
        run.part.close()
