"""A batch's CRC32C is computed once on its way into the log, not twice: the partition verifies
each batch (to answer a corrupt one on its own, leader side, or to refuse a bad replicated
chunk, follower side) and hands the engine ``crc_checked=True``, so the engine checks the rest
of the batch but not the CRC again. Each engine still checks the CRC when the caller has not
(engines/conformance.py)."""

from __future__ import annotations

import crc32c as real_crc32c
import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

LEADER, FOLLOWER = 1, 2


class CountingCrc32c:
    """Stands in for the ``crc32c`` module engines.batch computes with: the real CRC32C, each
    call's length recorded."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def crc32c(self, data: bytes, value: int = 0) -> int:
        self.calls.append(len(data))
        return real_crc32c.crc32c(data, value)


@pytest.fixture
def crc_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every CRC32C computed by engines.batch, by length."""
    counting = CountingCrc32c()
    monkeypatch.setattr(B, "_crc32c", counting)
    return counting.calls


@pytest.mark.parametrize("engine_class", [MemoryEngine, SegmentEngine])
def test_leader_and_follower_compute_each_batch_crc_once(tmp_path, crc_calls, engine_class) -> None:  # noqa: ANN001
    leader = Partition("t", 0, LEADER, engine_class(str(tmp_path / "l"), EngineConfig()), None)
    leader.become_leader(3, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    batches = [make_batch(5, tag="a"), make_batch(2, tag="b")]
    crc_calls.clear()  # building them computed theirs
    results, written = leader.append_as_leader(batches, 1 << 20)
    assert [r[1] for r in results] == [0, 0] and len(crc_calls) == 2
    follower = Partition("t", 0, FOLLOWER, engine_class(str(tmp_path / "f"), EngineConfig()), None)
    follower.become_follower(LEADER, 3, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    crc_calls.clear()
    assert follower.append_as_follower(leader.read(0, 1 << 20, 7)) == 2
    assert len(crc_calls) == 2 and follower.log_end_offset == 7
