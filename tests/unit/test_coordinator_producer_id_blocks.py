"""Producer ids are reserved a block at a time (Kafka's KIP-730): one durable write of the
cluster state per PRODUCER_ID_BLOCK new producers instead of one per producer (the whole state,
fsynced, on the coordinator's reactor thread). Ids stay unique across restarts: every id handed
out is below the stored ``next_producer_id``, a block is stored before any id of it is handed
out, and a block starts no lower than the wall clock's floor -- so a coordinator restarted on an
older copy of its state does not hand out used ids again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engines.api import EngineError, StorageFull
from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.coordinator.node import PRODUCER_ID_BLOCK, PRODUCER_IDS_PER_WALL_MS, Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.harness import make_config


def _init(coord: Coordinator) -> int:
    req = wire.Request([b"producer"], P.INIT_PRODUCER_ID, {"id": 1}, [])
    answer = coord.server.handlers[P.INIT_PRODUCER_ID](req)
    assert answer["producer_epoch"] == 0
    return answer["producer_id"]


def _counting_saves(coord: Coordinator) -> list[int]:
    saves: list[int] = []
    real = coord.store.save

    def save(state) -> None:  # noqa: ANN001
        saves.append(state.next_producer_id)
        real(state)
    coord.store.save = save  # type: ignore[method-assign]
    return saves


def _coordinator(tmp_path: Path, wall_ms: int = 1_800_000_000_000) -> Coordinator:
    """On a ManualClock at ``wall_ms`` (wall clock milliseconds)."""
    return Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator",
                       clock=ManualClock(start_ms=1_000_000, wall_offset_ms=wall_ms - 1_000_000))


def test_one_durable_write_per_block_and_ids_unique_across_a_restart(tmp_path: Path) -> None:
    coord = _coordinator(tmp_path)
    try:
        saves = _counting_saves(coord)
        ids = [_init(coord) for _ in range(PRODUCER_ID_BLOCK + 5)]
        assert ids[:PRODUCER_ID_BLOCK] == list(range(ids[0], ids[0] + PRODUCER_ID_BLOCK))  # one block
        assert len(set(ids)) == len(ids) and ids == sorted(ids)
        assert len(saves) == 2, "one write per block"
        assert max(ids) < saves[-1]  # every id handed out lies below the stored end
    finally:
        coord.close()
    # a restart (or a crash: the blocks were stored first), on a clock that went back a second
    again = _coordinator(tmp_path, wall_ms=1_800_000_000_000 - 1000)
    try:
        assert _init(again) > max(ids)
    finally:
        again.close()


def test_a_coordinator_restarted_on_an_older_copy_of_its_state_hands_out_no_used_id(tmp_path: Path) -> None:
    """A backup put back: its next_producer_id is below ids handed out since. A broker that
    remembers such an id could take a new producer's first batches for duplicates of the old
    one's (acknowledged, not written)."""
    t0 = 1_800_000_000_000
    coord = _coordinator(tmp_path, wall_ms=t0)
    state_file = coord.store.path
    try:
        handed = [_init(coord)]
        shutil.copy(state_file, tmp_path / "backup.json")  # the backup, with the first block
        handed += [_init(coord) for _ in range(3 * PRODUCER_ID_BLOCK)]  # three blocks more
    finally:
        coord.close()
    shutil.copy(tmp_path / "backup.json", state_file)
    restored = _coordinator(tmp_path, wall_ms=t0 + 60_000)  # a minute later
    try:
        fresh = [_init(restored) for _ in range(PRODUCER_ID_BLOCK + 1)]
        assert min(fresh) > max(handed), "a used producer id handed out again"
        assert min(fresh) >= (t0 + 60_000) * PRODUCER_IDS_PER_WALL_MS
    finally:
        restored.close()


def test_a_failed_write_hands_out_no_id_of_the_block_it_could_not_store(tmp_path: Path) -> None:
    coord = _coordinator(tmp_path)
    try:
        first = _init(coord)
        handed = [first] + [_init(coord) for _ in range(PRODUCER_ID_BLOCK - 1)]  # the block used up
        real = coord.store.save

        def full(state) -> None:  # noqa: ANN001
            raise StorageFull("No space left on device")
        coord.store.save = full  # type: ignore[method-assign]
        with pytest.raises(StorageFull):
            _init(coord)
        coord.store.save = real  # type: ignore[method-assign]
        handed.append(_init(coord))  # the disk has room again: a new block
        assert len(set(handed)) == len(handed)
    finally:
        coord.close()
    again = _coordinator(tmp_path)
    try:
        assert _init(again) > max(handed)
    finally:
        again.close()


def test_a_block_end_read_back_from_a_write_that_was_not_made_durable_is_not_trusted(tmp_path: Path) -> None:
    """The rename of a block's write lands, its directory fsync fails: the file names the new
    end, which a crash can still take back. A commit that fails then reloads the state from that
    file -- and the next ids must still wait for a write that succeeds."""
    coord = _coordinator(tmp_path)
    try:
        handed = [_init(coord) for _ in range(PRODUCER_ID_BLOCK)]  # the first block used up
        real = coord.store.save

        def lands_but_fails(state) -> None:  # noqa: ANN001
            real(state)  # the new file is in place...
            raise EngineError("fsync of the directory failed")  # ...but not durable
        coord.store.save = lands_but_fails  # type: ignore[method-assign]
        with pytest.raises(EngineError):
            _init(coord)
        coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
        with pytest.raises(EngineError):
            coord.commit()  # fails too, and reloads the state from the file
        assert coord.state.next_producer_id == handed[0] + 2 * PRODUCER_ID_BLOCK  # as read back
        coord.store.save = real  # type: ignore[method-assign]
        saves = _counting_saves(coord)
        handed.append(_init(coord))
        assert saves, "ids handed out from a block whose write never succeeded"
        assert handed[-1] not in handed[:-1] and handed[-1] < saves[-1]
    finally:
        coord.close()
