"""Seeded random interleavings of the segment engine's owner (appends, rolls, truncation,
retention, reset, synchronous flushes) with a real flusher thread running its flush jobs.

After every step the partition directory is copied (as a crash would leave it: the owner is
this thread, the flusher thread only fsyncs and atomically replaces the checkpoint) and
reopened: it must hold exactly the log the engine holds -- nothing lost, no truncated or reset
record back -- and its recovery checkpoint must name a segment that exists at a position inside
it. A failing seed is printed; rerun it with FLUSH_FUZZ_SEED=<seed>."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from engines.segment_recovery import read_checkpoint
from nodes.broker.flusher import Flusher
from tests.harness import wait_until
from tests.unit.builders_segment import INTERVAL_MS, open_engine

STEPS = 120
SEEDS = [int(os.environ["FLUSH_FUZZ_SEED"])] if "FLUSH_FUZZ_SEED" in os.environ else [1, 2, 3, 4, 5]


def check_crash_copy(e: SegmentEngine, directory: Path, copy: Path, seed: int, step: int) -> None:
    shutil.rmtree(copy, ignore_errors=True)
    with e._checkpoint_lock:  # a crash between two of the thread's steps (replace_file is atomic itself)
        shutil.copytree(directory, copy)
    cp = read_checkpoint(str(copy))
    if cp is not None:
        seg = copy / f"{cp.segment_base_offset:020d}.log"
        assert seg.exists() and cp.position <= seg.stat().st_size, (seed, step, cp)
    reopened = open_engine(copy)
    try:
        assert reopened.recovery.truncated_bytes == 0, (seed, step, reopened.recovery)
        assert (reopened.log_start_offset, reopened.log_end_offset) == (e.log_start_offset, e.log_end_offset), (seed, step)
        assert read_all(reopened) == read_all(e), (seed, step)
    finally:
        reopened.close()


def collect(e: SegmentEngine, flusher: Flusher) -> None:
    for _, job in flusher.completed():
        e.flush_done(job)


@pytest.mark.parametrize("seed", SEEDS)
def test_flush_jobs_interleaved_with_truncation_retention_and_reset_lose_and_revive_nothing(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    directory, copy = tmp_path / "log", tmp_path / "crash-copy"
    e = open_engine(directory)
    flusher = Flusher(f"fuzz-{seed}")
    now_ms, n = 100_000, 0
    try:
        for step in range(STEPS):
            action = rng.choices(["append", "job", "collect", "truncate", "retention", "flush", "reset"],
                                 [30, 20, 15, 10, 8, 4, 2])[0]
            if action == "append":
                for _ in range(rng.randint(1, 15)):
                    e.append(make_batch(n, record_count=1 + n % 3, payload_bytes=rng.choice([100, 700, 2000])))
                    n += 1
            elif action == "job":
                now_ms += rng.choice([INTERVAL_MS, 11_000])  # sometimes a checkpoint move is due
                job = e.flush_job(now_ms)
                if job is not None:
                    assert flusher.submit(None, job)
            elif action == "collect":
                collect(e, flusher)
            elif action == "truncate" and e.log_end_offset > e.log_start_offset:
                e.truncate_to(rng.randint(e.log_start_offset, e.log_end_offset - 1))
            elif action == "retention":
                e.delete_before(rng.randint(e.log_start_offset, e.log_end_offset))
            elif action == "flush":
                e.flush()
            elif action == "reset":
                e.reset_to(e.log_end_offset + rng.randint(0, 50))
            check_crash_copy(e, directory, copy, seed, step)
        wait_until(lambda: flusher.outstanding == 0 or collect(e, flusher), timeout_s=10)
        check_crash_copy(e, directory, copy, seed, STEPS)
    finally:
        e.close()
        assert flusher.stop()
