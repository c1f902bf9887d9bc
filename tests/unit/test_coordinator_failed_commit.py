"""A coordinator whose durable write fails (disk full, EIO) must not act on the change it could
not store: a restart forgets it, so anything served from it (a snapshot, an ALTER_ISR answer)
would let leader epochs go backwards and two brokers lead the same epoch.

Real ``Coordinator`` objects on one data directory: the first fails a commit and is asked for
metadata, the second is the same coordinator restarted.
"""

from __future__ import annotations

import errno
from pathlib import Path

from engines.errors import LoomError
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.metadata import ClusterMetadata
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.harness import make_config

PASS_MS = 100


def _epoch_leaders(md: ClusterMetadata, leaders: dict[int, set[int]]) -> None:
    p = md.partition("t", 0)
    assert p is not None
    if p.leader >= 0:
        leaders.setdefault(p.leader_epoch, set()).add(p.leader)


def test_a_change_that_failed_to_store_is_neither_served_nor_kept(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    leaders: dict[int, set[int]] = {}  # leader epoch -> brokers told they lead it
    coord = Coordinator(config, "coordinator")
    try:
        coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])], {})
        coord.commit()
        _epoch_leaders(coord.metadata(), leaders)

        def disk_full(state) -> None:  # noqa: ANN001
            raise OSError(errno.ENOSPC, "No space left on device")
        coord.store.save = disk_full  # type: ignore[method-assign]
        coord.alive.discard(1)
        try:  # broker 1 dies: the election of broker 2 (epoch 1) cannot be stored
            coord._on_broker_down(1)
        except LoomError:
            pass  # a timer's exception is logged and the coordinator runs on
        coord._metadata_cache = None  # any later change of liveness rebuilds the snapshot
        _epoch_leaders(ClusterMetadata.from_wire(coord.metadata_wire()), leaders)  # what brokers are served
        assert coord.state.topics["t"].partitions[0].leader_epoch == coord.store.load().topics["t"].partitions[0].leader_epoch, \
            "the coordinator holds (and serves) an election its store does not have"
    finally:
        coord.close()
    # the same coordinator after a restart: its data dir, fresh ports (a closed ZeroMQ socket
    # may hold its port a moment longer)
    restarted = Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator")
    try:
        for bid in (1, 2):
            restarted.alive.discard(bid)
        restarted._on_broker_down(1)
        restarted._on_broker_down(2)
        _epoch_leaders(restarted.metadata(), leaders)
    finally:
        restarted.close()
    assert all(len(bs) == 1 for bs in leaders.values()), f"two leaders in one epoch: {leaders}"


def test_an_election_that_failed_to_store_is_tried_again(tmp_path: Path) -> None:
    # going back to the stored state must not lose the verdict: a broker whose death could not
    # be stored is judged again (and its partitions re-elected) once the disk is writable again
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    clock = ManualClock(start_ms=1_000_000)
    coord = Coordinator(config, "coordinator", clock=clock)
    try:
        coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])], {})
        coord.commit()
        for bid in (1, 2, 3):
            coord._seen(bid)
        save = coord.store.save

        def disk_full(state) -> None:  # noqa: ANN001
            raise OSError(errno.ENOSPC, "No space left on device")
        coord.store.save = disk_full  # type: ignore[method-assign]
        for _ in range(2 * config.liveness.session_timeout_ms // PASS_MS):  # broker 1 dies
            clock.advance(PASS_MS)
            coord._seen(2), coord._seen(3)
            coord.reactor.run_once(0)
        assert coord.state.topics["t"].partitions[0].leader == 1  # nothing stored, nothing kept
        coord.store.save = save  # type: ignore[method-assign]
        for _ in range(5):
            clock.advance(PASS_MS)
            coord._seen(2), coord._seen(3)
            coord.reactor.run_once(0)
        ps = coord.state.topics["t"].partitions[0]
        assert (ps.leader, ps.leader_epoch, ps.isr) == (2, 1, [2, 3]), "the dead leader's partition was never re-elected"
        assert coord.store.load().topics["t"].partitions[0].leader == 2
    finally:
        coord.close()


def test_a_return_that_failed_to_store_is_tried_again(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    coord = Coordinator(config, "coordinator")
    try:
        coord.state.topics["t"] = TopicState([PartitionState(-1, 4, [1, 2, 3], [1])], {})  # offline: its last ISR member is gone
        coord.commit()
        coord.alive.discard(1)
        save = coord.store.save

        def disk_full(state) -> None:  # noqa: ANN001
            raise OSError(errno.ENOSPC, "No space left on device")
        coord.store.save = disk_full  # type: ignore[method-assign]
        try:
            coord._seen(1)  # broker 1 is back: its election cannot be stored
        except LoomError:
            pass
        assert coord.state.topics["t"].partitions[0].leader == -1
        coord.store.save = save  # type: ignore[method-assign]
        coord._seen(1)  # its next heartbeat
        ps = coord.state.topics["t"].partitions[0]
        assert (ps.leader, ps.leader_epoch) == (1, 5), "the returning broker's partition stayed offline"
    finally:
        coord.close()


def test_a_restart_that_failed_to_store_leaves_the_broker_judged_by_its_silence(tmp_path: Path) -> None:
    """Broker 1's new process is heard (a restart: down, then up) while the disk is full: the
    restart is not stored, the state still names the old process as the leader. Its new
    process then dies too: the coordinator must find it silent and re-elect its partition (it
    had taken the broker out of ``alive`` for the down and never put it back: no verdict ever
    came, the partition was led by a dead broker for good)."""
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    clock = ManualClock(start_ms=1_000_000)
    coord = Coordinator(config, "coordinator", clock=clock)
    try:
        coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])], {})
        for bid in (1, 2, 3):
            coord._observe_incarnation(bid, f"p-{bid}")
        save = coord.store.save

        def disk_full(state) -> None:  # noqa: ANN001
            raise OSError(errno.ENOSPC, "No space left on device")
        coord.store.save = disk_full  # type: ignore[method-assign]
        try:
            coord._observe_incarnation(1, "p-1-new")
        except LoomError:
            pass
        assert coord.store.load().incarnations[1] == "p-1"
        coord.store.save = save  # type: ignore[method-assign]
        for _ in range(2 * config.liveness.session_timeout_ms // PASS_MS):  # broker 1 is silent
            clock.advance(PASS_MS)
            coord._seen(2), coord._seen(3)
            coord.reactor.run_once(0)
        ps = coord.state.topics["t"].partitions[0]
        assert ps.leader == 2 and 1 not in ps.isr, (ps.leader, ps.isr)
    finally:
        coord.close()
