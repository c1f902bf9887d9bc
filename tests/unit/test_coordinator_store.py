"""The coordinator's state file (nodes/coordinator/store.py) is written through the one durable-
file helper (engines/durable.py::replace_file): a failed write is a typed operating error and
leaves the previous state whole."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engines.api import EngineError, StorageFull
from nodes.coordinator.store import ClusterState, PartitionState, StateStore, TopicState


def _state(version: int) -> ClusterState:
    return ClusterState(version=version, topics={"t": TopicState([PartitionState(1, 0, [1, 2], [1, 2])])})


@pytest.mark.parametrize("err, kind", [(errno.ENOSPC, StorageFull), (errno.EIO, EngineError)])
def test_a_failed_state_write_is_a_typed_error_and_the_previous_state_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, kind: type) -> None:
    store = StateStore(tmp_path)
    store.save(_state(3))

    def failing_fsync(fd: int) -> None:
        raise OSError(err, os.strerror(err))
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing_fsync)
        with pytest.raises(kind):
            store.save(_state(4))
    assert StateStore(tmp_path).load().version == 3
    store.save(_state(5))  # a temp file left by the failed write is no obstacle
    assert StateStore(tmp_path).load().version == 5
    assert StateStore(tmp_path).load().topics["t"].partitions[0].isr == [1, 2]
