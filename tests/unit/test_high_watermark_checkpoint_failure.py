"""A failed high-watermark checkpoint write (through ``engines.durable.replace_file``) is
logged, leaves no temp file beside the checkpoint, and the next checkpoint tries again. Before, the partition wrote the file itself and left its ``.tmp`` behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric.records import build_batch
from nodes.broker.epochs import FILE_NAME as EPOCH_FILE
from nodes.broker.hw_checkpoint import HW_CHECKPOINT_FILE
from nodes.broker.partition import Partition

BATCH_MAX = 1024 * 1024


def _leader(directory: Path) -> Partition:
    part = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), str(directory))
    part.become_leader(1, [1], [1], now_ms=0)
    return part


def _append(part: Partition, n: int) -> None:
    recs = [(1_700_000_000_000, None, b"v%d" % i, None) for i in range(n)]
    assert part.append_as_leader([build_batch(recs)], BATCH_MAX)[0][0][1] == 0


def _files(directory: Path) -> list[str]:
    return sorted(f for f in os.listdir(directory) if f != EPOCH_FILE)


def test_a_failed_checkpoint_leaves_no_temp_file_and_is_tried_again(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    part = _leader(tmp_path)
    _append(part, 2)
    (tmp_path / HW_CHECKPOINT_FILE).mkdir()  # the rename over it fails (EISDIR)
    part.checkpoint_high_watermark()
    assert "cannot checkpoint the high watermark" in caplog.text
    assert _files(tmp_path) == [HW_CHECKPOINT_FILE]
    (tmp_path / HW_CHECKPOINT_FILE).rmdir()
    part.checkpoint_high_watermark()  # not marked written: the next timer writes it
    assert (tmp_path / HW_CHECKPOINT_FILE).read_text() == "2\n"
    assert _files(tmp_path) == [HW_CHECKPOINT_FILE]
