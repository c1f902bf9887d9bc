"""Producer ids are reserved a block at a time (Kafka's KIP-730): one durable write of the
cluster state per PRODUCER_ID_BLOCK new producers instead of one per producer (the whole state,
fsynced, on the coordinator's reactor thread). Ids stay unique across restarts: every id handed
out is below the stored ``next_producer_id``, and a block is stored before any id of it is
handed out."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineError, StorageFull
from fabric import protocol as P
from fabric import wire
from fabric.config import load_config
from nodes.coordinator.node import PRODUCER_ID_BLOCK, Coordinator
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


def _coordinator(tmp_path: Path) -> Coordinator:
    return Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator")


def test_one_durable_write_per_block_and_ids_unique_across_a_restart(tmp_path: Path) -> None:
    coord = _coordinator(tmp_path)
    try:
        saves = _counting_saves(coord)
        ids = [_init(coord) for _ in range(PRODUCER_ID_BLOCK + 5)]
        assert ids == list(range(1, PRODUCER_ID_BLOCK + 6))
        assert saves == [1 + PRODUCER_ID_BLOCK, 1 + 2 * PRODUCER_ID_BLOCK], "one write per block"
    finally:
        coord.close()
    again = _coordinator(tmp_path)  # a restart (or a crash: the blocks were stored first)
    try:
        assert _init(again) == 1 + 2 * PRODUCER_ID_BLOCK > max(ids)
    finally:
        again.close()


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
        assert coord.state.next_producer_id == 1 + 2 * PRODUCER_ID_BLOCK  # as read back
        coord.store.save = real  # type: ignore[method-assign]
        saves = _counting_saves(coord)
        handed.append(_init(coord))
        assert saves, "ids handed out from a block whose write never succeeded"
        assert handed[-1] not in handed[:-1] and handed[-1] < saves[-1]
    finally:
        coord.close()
