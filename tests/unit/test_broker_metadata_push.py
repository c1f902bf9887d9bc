"""A metadata push is recorded only once it is applied, and only unreadable pushes are
counted and dropped: a real Broker (sockets on free ports, no peers) fed pushes built here."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from engines.api import EngineError
from fabric import protocol as P
from fabric import wire
from nodes.broker.node import Broker
from tests.unit.builders_broker import OLD_ID, md, new_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = new_broker(tmp_path)
    yield b
    b.close()


def _push(b: Broker, raw: dict) -> None:
    b._registered = True  # as after REGISTER: pushes are heard
    b._on_sub([b"md", P.VERSION, P.PUB_METADATA, wire.pack(raw)])


def test_a_push_that_fails_half_way_is_applied_again(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))
    assert broker.partitions[("t", 0)].leader_epoch == 1
    real = broker.core.apply_partition_state
    fail = [True]

    def full_disk_once(*args, **kw):  # a partition's state that cannot be applied (a storage error)
        if fail.pop() if fail else False:
            raise EngineError("no space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(broker.core, "apply_partition_state", full_disk_once)
    with pytest.raises(EngineError):
        broker.apply_metadata(md(2, {"t": OLD_ID}))  # leader epoch 2 cannot be applied
    assert broker.metadata.version == 1, "a version recorded before its states were applied"
    broker.apply_metadata(md(2, {"t": OLD_ID}))  # the same push again (or the refresh it causes)
    assert broker.partitions[("t", 0)].leader_epoch == 2
    assert broker.metadata.version == 2


def test_an_unreadable_push_is_counted_and_dropped(broker: Broker) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))
    _push(broker, {"version": 2, "topics": "not a map"})
    broker._on_sub([b"md", P.VERSION, P.PUB_METADATA, b"\xc1 not msgpack"])
    assert broker.counters["sub_malformed"] == 2
    assert broker.metadata.version == 1


def test_a_bug_while_applying_a_push_is_not_swallowed(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.apply_metadata(md(1, {"t": OLD_ID}))

    def broken(*a, **kw):
        raise AssertionError("invariant broken")

    monkeypatch.setattr(broker.core, "apply_partition_state", broken)
    with pytest.raises(AssertionError):
        _push(broker, md(2, {"t": OLD_ID}))
