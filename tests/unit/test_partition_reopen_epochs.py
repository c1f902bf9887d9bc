"""A replica reopened after a crash: the epoch cache must not name offsets the log lost (an
epoch checkpointed just before its batches, which were not durable). Real Partition, memory
engine, EpochCache on disk."""

from __future__ import annotations

from pathlib import Path

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from nodes.broker.epochs import EpochCache
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024


def test_reopen_drops_epoch_entries_past_the_recovered_log_end(tmp_path: Path) -> None:
    # epoch 5 was checkpointed at offset 10, but the log tail it covered was not durable
    cache = EpochCache(tmp_path)
    cache.assign(3, 0)
    cache.assign(5, 10)
    engine = MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    buf = bytearray(make_batch(4))
    B.set_leader_epoch(buf, 3)
    engine.append(buf)  # offsets 0-3 survived; the epoch-5 tail from 10 did not
    f = Partition("t", 0, 1, engine, str(tmp_path))
    assert f.epochs.entries == [(3, 0)]
    assert EpochCache(tmp_path).entries == [(3, 0)]
