"""An engine written before the ``crc_checked`` keyword of ``append_many`` (as docs/engines.md
describes a third-party one) still takes appends as leader and as follower: the partition
passes the keyword only to an engine that takes it."""

from __future__ import annotations

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric.buffers import OwnedFrame
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

LEADER, FOLLOWER = 1, 2
EPOCH = 5


class EngineBeforeTheFlag:
    """A third-party engine as docs/engines.md describes one: ``append_many(batches)``, no
    ``crc_checked`` keyword (it validates every batch, CRC included, itself). Everything else
    is a memory engine's."""

    def __init__(self) -> None:
        self._inner = MemoryEngine("", EngineConfig())
        self.calls = 0

    def append_many(self, batches: list) -> list[int]:
        self.calls += 1
        return self._inner.append_many(batches)

    def __getattr__(self, name: str):  # noqa: ANN204 - the rest of the Engine methods
        return getattr(self._inner, name)


def test_an_engine_without_the_crc_checked_keyword_still_takes_appends() -> None:
    """The partition passes ``crc_checked=True`` only to an engine that takes it: a registered
    engine written to the documented ``append_many(batches)`` keeps working as leader and as
    follower (before, every produce raised TypeError, a programmer error that stops the
    broker)."""
    leader_engine, follower_engine = EngineBeforeTheFlag(), EngineBeforeTheFlag()
    leader = Partition("t", 0, LEADER, leader_engine, None)
    leader.become_leader(EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    results, written = leader.append_as_leader([OwnedFrame(make_batch(3)), make_batch(2)], 1 << 20)
    assert [r[:2] for r in results] == [(0, 0), (3, 0)] and leader_engine.calls == 1
    follower = Partition("t", 0, FOLLOWER, follower_engine, None)
    follower.become_follower(LEADER, EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    assert follower.append_as_follower(leader.read(0, 1 << 20, 5)) == 2 and follower_engine.calls == 1
    assert follower.read(0, 1 << 20, 5) == leader.read(0, 1 << 20, 5)
