"""Builders for unit tests of whole Broker and Coordinator node objects (no processes), once
each: topic-id metadata, a broker on a ManualClock, a loopback between a broker and a
coordinator, a slow fsync.

Kept apart from ``fakes.py`` (which stays under the ~500-line module limit, and builds the
node logic's parts rather than whole nodes).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from engines.conformance import make_batch as conformance_batch
from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from fabric.records import build_batch
from nodes.broker.messages import AppendRequest, ProduceInput
from nodes.broker.node import Broker
from nodes.broker.partition import Partition
from nodes.coordinator.groups import STABLE, Group, Member
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.harness import make_config
from tests.unit.fakes import make_batch, request


# -- topic ids and cluster identity ---------------------------------------------------------
OLD_ID = "11111111-1111-4111-8111-111111111111"
NEW_ID = "22222222-2222-4222-8222-222222222222"
CLUSTER = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
OTHER_CLUSTER = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"


def md(version: int, topics: dict[str, str], deleted: tuple[str, ...] = (), cluster_id: str = CLUSTER,
       state_id: str = "s1") -> dict:
    """Wire metadata in which broker 1 leads one partition of every topic (name -> topic id)."""
    return {"version": version, "cluster": "test", "cluster_id": cluster_id, "state_id": state_id,
            "deleted_topic_ids": list(deleted), "coordinator": "", "brokers": [[1, "127.0.0.1", 1, 2, True]],
            "topics": {name: {"id": tid, "configs": {}, "partitions": [[1, version, [1], [1]]]}
                       for name, tid in topics.items()}}


def new_broker(tmp_path: Path) -> Broker:
    """Broker 1 on ``tmp_path/data``, on fresh ports each time (a restart must not wait for
    the previous process's ports to be released)."""
    return Broker(load_config(make_config(tmp_path, brokers=1), environ={}), "broker-1")


def write(b: Broker, topic: str, n: int = 3) -> None:
    """Append ``n`` one-record batches to ``topic``-0 as its leader (asserting each was taken)."""
    part = b.partitions[(topic, 0)]
    out, _ = part.append_as_leader([build_batch([(1_700_000_000_000, None, b"v%d" % i, None)]) for i in range(n)], 1 << 20)
    assert all(r[1] == 0 for r in out), out


# -- coordinators on a ManualClock ----------------------------------------------------------
def coordinator(tmp_path: Path, clock: ManualClock | None = None, heard: tuple[int, ...] = (1, 2, 3),
                **kw: Any) -> Coordinator:
    """A coordinator of brokers 1-3 (memory engine) on ``tmp_path``'s data directory, on fresh
    ports each time (a closed ZeroMQ socket may hold its port a moment longer), on ``clock`` (a
    new ManualClock by default), that has heard ``heard`` -- as from their heartbeats in a
    running cluster: each may be elected (``Coordinator.electable``); the others are alive by
    its start's grace only. ``kw``: the Coordinator's. The caller closes it."""
    coord = Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator",
                        clock=clock or ManualClock(start_ms=1_000_000), **kw)
    for bid in heard:
        coord._seen(bid)
    return coord


def heartbeat(coord: Coordinator, broker_id: int, incarnation: str | None = None) -> None:
    """A heartbeat of ``broker_id``'s process ``incarnation`` (``p-<id>`` by default) read by
    ``coord``, as from its SUB socket."""
    coord._on_heartbeat(wire.encode_heartbeat(wire.Heartbeat(
        f"broker-{broker_id}", "broker", 4242, coord.clock.wall_ms(), broker_id=broker_id,
        incarnation=incarnation or f"p-{broker_id}", cluster_id=coord.state.cluster_id)))


def create_topic(coord: Coordinator, topic: str, partitions: int, replication_factor: int) -> list[PartitionState]:
    """CREATE_TOPIC as ``coord`` handles it; returns the new topic's partition states."""
    coord._on_create_topic(request(P.CREATE_TOPIC, topic=topic, partitions=partitions,
                                   replication_factor=replication_factor))
    return coord.state.topics[topic].partitions


# -- stall grace: a coordinator and a leader on a ManualClock -------------------------------
def coordinator_with_a_member(tmp_path: Path) -> tuple[Coordinator, ManualClock, int]:
    """A coordinator on a ManualClock that has just heard brokers 1-3 and group g's member m-1;
    returns it, its clock and the session timeout (ms). The caller closes it."""
    clock = ManualClock(start_ms=1_000_000)
    coord = coordinator(tmp_path, clock)
    session_ms = coord.config.liveness.session_timeout_ms
    member = Member("m-1", "c", "h", ["t"], session_timeout_ms=session_ms, rebalance_timeout_ms=session_ms,
                    last_seen_ms=clock.now_ms())
    coord.groups.groups["g"] = Group("g", state=STABLE, generation=1, leader="m-1", members={"m-1": member})
    return coord, clock, session_ms


def leader_of_one_partition(tmp_path: Path) -> tuple[Broker, ManualClock, list[dict]]:
    """Broker 1 on a ManualClock leading t-0 (replicas and ISR 1, 2, 3), its coordinator requests
    recorded (headers) instead of sent. The caller closes it."""
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    clock = ManualClock(start_ms=1_000_000)
    broker = Broker(config, "broker-1", clock=clock)
    sent: list[dict] = []
    broker.coordinator.request = lambda cmd, header, payloads=(), *, callback, timeout_ms: sent.append(header)  # type: ignore[method-assign]
    info = PartitionInfo("t", 0, 1, 1, (1, 2, 3), (1, 2, 3), 1)
    broker.apply_metadata(ClusterMetadata(1, "test", {}, {"t": TopicInfo("t", (info,), {})}).to_wire())
    assert broker.partitions[("t", 0)].is_leader
    return broker, clock, sent


# -- the broker's flush off the reactor ------------------------------------------------------
HOLD_S = 3.0  # the slow fsync waits at most this long for its release


class SlowSync:
    """os.fdatasync held until ``release`` (or HOLD_S), recording that one has started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        real = os.fdatasync

        def slow(fd: int) -> None:
            self.started.set()
            self.release.wait(HOLD_S)
            real(fd)
        monkeypatch.setattr(os, "fdatasync", slow)


def produce(broker: Broker, first: int, count: int) -> None:
    """Append ``count`` batches to t-0 through the broker's core (asserting each was taken)."""
    for i in range(first, first + count):
        [[result]] = broker.core.append([AppendRequest(1, [ProduceInput("t", 0, -1, conformance_batch(0))], None)])
        assert result.error == 0, result


# -- ISR versions: a broker and a coordinator joined by a loopback ---------------------------
BATCH_MAX = 1024 * 1024  # bytes: the append limit the ISR tests pass


class Loopback:
    """Carries one broker's coordinator requests to a coordinator object and the coordinator's
    pushes to the broker, each only when the test says so."""

    def __init__(self, broker: Broker, coord: Coordinator) -> None:
        self.broker, self.coord = broker, coord
        self.requests: list[tuple[bytes, dict, Callable]] = []
        self.pushes: list[list[bytes]] = []
        broker.coordinator.request = self._request  # type: ignore[method-assign]
        coord.publish = self._publish  # type: ignore[method-assign]

    def _request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int) -> None:
        self.requests.append((command, header, callback))

    def _publish(self, topic: bytes, kind: bytes, header: dict, payloads: Any = ()) -> None:
        if topic == P.TOPIC_METADATA:
            self.pushes.append([topic, P.VERSION, kind, wire.pack(header)])

    def serve(self, command: bytes | None = None) -> list[tuple[Callable, dict | None, RemoteError | None]]:
        """Let the coordinator handle the queued requests (of ``command``); returns the answers,
        not yet delivered, in order."""
        answers = []
        keep = []
        for cmd, header, callback in self.requests:
            if command is not None and cmd != command:
                keep.append((cmd, header, callback))
                continue
            req = wire.Request([b"broker"], cmd, dict(header, id=1), [])
            try:
                answers.append((callback, self.coord.server.handlers[cmd](req), None))
            except RemoteError as e:
                answers.append((callback, None, e))
        self.requests = keep
        return answers

    @staticmethod
    def deliver(answers: list) -> None:
        for callback, header, err in answers:
            callback(header, [], err)

    def take_pushes(self) -> list[list[bytes]]:
        pushes, self.pushes = self.pushes, []
        return pushes

    def push(self, frames: list[bytes]) -> None:
        self.broker._on_sub(frames)

    def run_until_idle(self, rounds: int = 20) -> None:
        """Run the broker's due timers, serve and deliver every request (register, metadata,
        ...) and push, in order, until nothing is left."""
        for _ in range(rounds):
            self.broker.reactor.run_once(0)
            if not self.requests and not self.pushes and not self.broker._to_open:
                return
            self.deliver(self.serve())
            for frames in self.take_pushes():
                self.push(frames)
        raise AssertionError("requests and pushes keep coming")


def batch(n: int) -> bytes:
    """A client batch of ``n`` records without keys."""
    return make_batch(n, keys=False)


def start(broker: Broker, coord: Coordinator, loop: Loopback, isr: list[int], partitions: int = 2) -> None:
    """Topic t: broker 1 leads every partition, replicas [1, 2, 3], the given ISR; broker 1
    registered and holding that metadata."""
    coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], list(isr)) for _ in range(partitions)],
                                         {"min.insync.replicas": 2})
    coord.commit()
    broker._register()
    loop.run_until_idle()
    assert broker._registered and all(broker.partitions[("t", p)].is_leader for p in range(partitions))


def led_with_broker_2_named(broker: Broker, coord: Coordinator, loop: Loopback, process: str) -> Partition:
    """t-0 led by broker 1 (ISR [1, 2, 3]) with 10 records that broker 3 holds, and broker 2's
    process ``process`` named in the leader's metadata. Returns the leader's partition."""
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    coord._observe_incarnation(2, process)
    for frames in loop.take_pushes():
        loop.push(frames)
    part = broker.partitions[("t", 0)]
    part.append_as_leader([batch(10)], BATCH_MAX)
    part.record_follower_fetch(3, 10, broker.clock.now_ms())
    return part


def isr_after_the_next_check(broker: Broker, coord: Coordinator, loop: Loopback) -> list[int]:
    """The leader's ISR check, its proposal judged by the coordinator: t-0's ISR after it."""
    broker._check_isr()
    loop.deliver(loop.serve(P.ALTER_ISR))
    return coord.state.topics["t"].partitions[0].isr

def broker_3_due_back_in_the_isr(broker: Broker, coord: Coordinator, loop: Loopback) -> Partition:
    """t-0 led by broker 1 with ISR [1, 2], three records, both followers at LEO 3: the next
    ISR check proposes [1, 2, 3]. Returns the leader's partition."""
    start(broker, coord, loop, isr=[1, 2], partitions=1)
    part = broker.partitions[("t", 0)]
    now = broker.clock.now_ms()
    part.append_as_leader([batch(3)], BATCH_MAX)
    part.record_follower_fetch(2, 3, now)
    part.record_follower_fetch(3, 3, now)
    return part
