"""Producer state after a follower truncation, or a failed leader append, is updated in place
(forget the batches cut) instead of rebuilt by re-reading up to 500k records of log on the
reactor thread; and it answers retries as a rebuild from the log would."""

from __future__ import annotations

from engines.api import EngineConfig, StorageFull
from engines.memory import MemoryEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import as_leader_wrote, make_batch

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2
PRODUCERS = 3
ROUNDS = 10  # batches per producer (under BATCHES_REMEMBERED: a rebuild remembers them all)
FILLER_BATCHES = 400


class _CountingEngine(MemoryEngine):
    """The memory engine, counting reads; appends fail while ``full`` is set."""

    reads = 0
    full = False

    def read(self, offset: int, max_bytes: int) -> bytes:
        self.reads += 1
        return super().read(offset, max_bytes)

    def append_many(self, batches, **kw):  # noqa: ANN001, ANN003, ANN201
        if self.full:
            raise StorageFull("No space left on device (simulated)")
        return super().append_many(batches, **kw)


def _batch(pid: int, seq: int, n: int = 2) -> bytes:
    return make_batch(n, pid, 0 if pid >= 0 else -1, seq, f"p{pid}-s{seq}-", keys=False)


def _stamped(data: bytes, base_offset: int, epoch: int = 1) -> bytes:
    return as_leader_wrote(data, base_offset, epoch)


def _state(part: Partition) -> dict:
    return {pid: (e.epoch, list(e.batches)) for pid, e in part.producers._producers.items()}


def _follower_with_log() -> tuple[Partition, _CountingEngine, list[int]]:
    engine = _CountingEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    part = Partition("t", 0, FOLLOWER, engine, None)
    part.become_follower(LEADER, 1, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    for _ in range(FILLER_BATCHES):  # non-idempotent traffic: log a rebuild would re-read
        part.append_as_follower(_stamped(_batch(-1, -1, n=5), part.log_end_offset))
    starts = []
    for r in range(ROUNDS):
        for pid in range(1, PRODUCERS + 1):
            starts.append(part.log_end_offset)
            part.append_as_follower(_stamped(_batch(pid, 2 * r), part.log_end_offset))
    return part, engine, starts


def test_follower_truncation_reads_no_log_and_matches_a_rebuild() -> None:
    part, engine, starts = _follower_with_log()
    cut = starts[-5]  # cuts round 8 of producers 2 and 3 and all of round 9
    engine.reads = 0
    part.truncate_to(cut)
    assert engine.reads == 0, "truncation re-read the log"
    rebuilt = Partition("t", 0, FOLLOWER, engine, None)  # a rebuild from the same log, at open
    assert _state(part) == _state(rebuilt)
    # a producer whose whole remembered window was cut is forgotten
    part.become_leader(2, [LEADER, FOLLOWER], [FOLLOWER], now_ms=0)
    last_kept = {pid: max(s for s, _, _ in e.batches) for pid, e in part.producers._producers.items()}
    for pid, seq in last_kept.items():
        assert part.append_as_leader([_batch(pid, seq)], BATCH_MAX)[0][0][2] == "duplicate"


def test_a_producer_whose_batches_were_all_cut_is_forgotten() -> None:
    engine = MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    part = Partition("t", 0, FOLLOWER, engine, None)
    part.become_follower(LEADER, 1, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    part.append_as_follower(_stamped(_batch(1, 0), 0))
    part.append_as_follower(_stamped(_batch(2, 0), 2))
    part.truncate_to(2)
    assert set(part.producers._producers) == {1}
    assert _state(part) == _state(Partition("t", 0, FOLLOWER, engine, None))


def test_failed_leader_append_forgets_only_that_request() -> None:
    engine = _CountingEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    part = Partition("t", 0, LEADER, engine, None)
    part.become_leader(1, [LEADER, FOLLOWER], [LEADER], now_ms=0)
    for seq in (0, 2):
        assert part.append_as_leader([_batch(7, seq)], BATCH_MAX)[0][0][1] == 0
    before = _state(part)
    engine.full, engine.reads = True, 0
    results, written = part.append_as_leader([_batch(7, 4), _batch(8, 0)], BATCH_MAX)
    assert [r[1] for r in results] != [0, 0] and written == []
    assert engine.reads == 0
    assert _state(part) == before
    engine.full = False
    assert part.append_as_leader([_batch(7, 4)], BATCH_MAX)[0] == [(4, 0, "")]
