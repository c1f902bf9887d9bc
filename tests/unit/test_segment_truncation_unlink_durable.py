"""A truncation that deletes whole segment files makes their removal durable before it returns.

Removing a file is a change of its directory: after a power loss it survives only if the
directory was fsynced since. A truncation back to exactly the point of the recovery checkpoint
(here: the checkpoint moved when the first segment was full, the next segments start right
after it, and a follower cuts back to that offset) writes no new checkpoint, so no directory
fsync came with one: the deleted later segments, whose records an earlier flush had made
durable, came back after a power loss, contiguous with the log, and recovery (which scans
every segment after the checkpoint's) served the cut records again. Power loss is modelled here by restoring every segment file whose unlink no
directory fsync followed, with the content it had (tests/unit/power_loss.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.conformance import read_all
from tests.unit.builders_segment import INTERVAL_MS, T0, fill, open_engine, run_in_thread
from tests.unit.power_loss import UnlinkRecorder


def batches_filling_the_first_segment(directory: Path) -> int:
    """How many of ``fill``'s batches the first segment takes before the next one rolls."""
    probe = open_engine(directory)
    try:
        for n in range(1, 1000):
            fill(probe, n - 1, 1)
            if probe.segment_count > 1:
                return n - 1
        raise AssertionError("no roll")
    finally:
        probe.close()


@pytest.mark.parametrize("flushed_by", ["sync-flush", "flusher-job"])
def test_a_truncation_to_the_checkpoints_point_that_deletes_a_segment_survives_a_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flushed_by: str) -> None:
    directory = tmp_path / "log"
    full = batches_filling_the_first_segment(tmp_path / "probe")
    e = open_engine(directory)
    fill(e, 0, full)
    e.flush()  # the checkpoint moves here: (segment 0, full, its log end)
    point = e.log_end_offset
    fill(e, full, 40)  # the first rolls: the next segments start at ``point``, contiguous
    assert e.segment_count > 1 and e._bases[1] == point
    if flushed_by == "sync-flush":
        e.flush(checkpoint=False)  # durable, the checkpoint not moved (it moves every 10 s)
    else:
        e._last_checkpoint_ms = T0  # a checkpoint move is not due at this tick
        job = e.flush_job(T0 + INTERVAL_MS)
        assert job is not None and job.checkpoint is None
        run_in_thread(job)
        assert e.flush_done(job) is True
    unlinks = UnlinkRecorder(monkeypatch, directory)
    e.truncate_to(point)
    assert e.log_end_offset == point and e.segment_count == 1
    expected = read_all(e)
    reopened = open_engine(unlinks.power_loss_copy(directory, tmp_path / "after-power-loss"))
    try:
        assert reopened.log_end_offset == point, "records the truncation cut came back"
        assert read_all(reopened) == expected
    finally:
        reopened.close()
        e.close()
