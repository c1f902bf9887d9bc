"""Producer ids are reserved a block at a time (Kafka's KIP-730): one durable write of the
cluster state per PRODUCER_ID_BLOCK new producers instead of one per producer (the whole state,
fsynced, on the coordinator's reactor thread). Ids stay unique across restarts: every id handed
out is below the stored ``next_producer_id``, and a block is stored before any id of it is
handed out."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import StorageFull
from fabric import protocol as P
from fabric import wire
from fabric.config import load_config
from nodes.coordinator.node import PRODUCER_ID_BLOCK, Coordinator
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
        assert coord.state.next_producer_id == 1 + PRODUCER_ID_BLOCK  # as stored
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
