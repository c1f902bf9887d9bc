"""What an idle broker sends and answers for many partitions is built cheaply but is the same:
the replica heartbeat, the follower's REPLICA_ACK, the leader's reading of it, the ISR check
and the STATS gauges, each compared with a reference of the straightforward code (the way they
were built before) over the same partition states -- unchanged, and after each change that
could leave a kept value stale: HW and LEO moves, a new leader epoch, leadership lost and
regained, an ISR change, a partition deleted and re-created under the same name and topic
ids that change."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import wire
from fabric.clock import ManualClock
from fabric.errors import MalformedFrame
from fabric.metrics import MetricsRegistry, Sample
from nodes.broker.fetcher import LeaderEndpoint
from nodes.broker.messages import ReplicaAck, _is_int
from nodes.broker.meter import BrokerMeter
from nodes.broker.partition import Partition
from nodes.broker.replication import REPLICA_HEARTBEAT_FULL_INTERVAL_MS, REPLICA_HEARTBEAT_INTERVAL_MS, ReplicationPublisher
from tests.unit.fakes import make_batch

ME, F1, F2 = 1, 2, 3
BATCH_MAX = 1 << 20
LAG_MAX_MS = 2000


def _partition(topic: str, p: int, *, lead: bool = True, epoch: int = 1) -> Partition:
    part = Partition(topic, p, ME, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    if lead:
        part.become_leader(epoch, [ME, F1, F2], [ME, F1, F2], now_ms=0)
    else:
        part.become_follower(F1, epoch, [ME, F1, F2], [ME, F1, F2])
    return part


def _append(part: Partition, records: int = 2) -> None:
    part.append_as_leader([make_batch(records, keys=False)], BATCH_MAX)


# -- references: the straightforward code --------------------------------------------------------
def reference_gauges(partitions: dict) -> list[list]:
    """The offset gauges of the broker's STATS as a generator of Samples made them."""
    out = []
    for (topic, p), part in partitions.items():
        if part.is_leader:
            out.append(Sample("loom_partition_high_watermark", (str(topic), str(p)), float(part.high_watermark)).encode())
            out.append(Sample("loom_partition_log_end_offset", (str(topic), str(p)), float(part.log_end_offset)).encode())
    return out


class ReferencePublisher:
    """The heartbeat as built from ReplicaPosition objects."""

    def __init__(self, clock: ManualClock, led: Any, topic_id_of: Any) -> None:
        self.clock, self.led, self.topic_id_of = clock, led, topic_id_of
        self.sent: list[list] = []
        self._state: dict = {}
        self._last_full_ms = -REPLICA_HEARTBEAT_FULL_INTERVAL_MS

    def heartbeat(self) -> None:
        now = self.clock.now_ms()
        if now - self._last_full_ms >= REPLICA_HEARTBEAT_FULL_INTERVAL_MS:
            self._last_full_ms, self._state = now, {}
        positions = []
        for part in self.led():
            if not part.is_leader or len(part.replicas) < 2:
                continue
            key = (part.topic, part.partition)
            state = (part.leader_epoch, part.high_watermark, part.log_end_offset)
            if self._state.get(key) != state:
                self._state[key] = state
                positions.append(wire.ReplicaPosition("broker-1", key[0], key[1], *state, self.topic_id_of(key)))
        if positions:
            self.sent.append(wire.encode_replica_heartbeat(wire.ReplicaHeartbeat("broker-1", positions)))


def reference_isr_changes(part: Partition, now_ms: int, lag_max_ms: int) -> set[int] | None:
    if not part.is_leader or part.pending_isr is not None:
        return None
    new = set(part.isr) | {part.broker_id}
    for r, st in part.followers.items():
        lagging = now_ms - st.last_caught_up_ms > lag_max_ms
        if r in new and lagging:
            new.discard(r)
        elif r not in new and not lagging and st.log_end_offset >= part.high_watermark \
                and st.log_end_offset >= part._epoch_start_offset:
            new.add(r)
    return new if new != part.isr else None


def reference_ack_decode(raw: Any) -> ReplicaAck | None:
    if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[0], str) and all(map(_is_int, raw[1:]))):
        return None
    return ReplicaAck(*raw)


# -- STATS gauges --------------------------------------------------------------------------------
def _offset_gauges(registry: MetricsRegistry) -> list[list]:
    return [s for s in registry.encode() if s[0] in ("loom_partition_high_watermark", "loom_partition_log_end_offset")]



def _no_disk(tmp_path: Any) -> Any:
    """A data dir that does not exist: no disk gauges. They read the file system's free bytes,
    which any other process on the machine changes between two reads of the same gauges."""
    return tmp_path / "no-such-dir"

def test_stats_gauges_are_the_straightforward_ones_after_every_change(tmp_path: Any) -> None:
    partitions = {("t", i): _partition("t", i, lead=i % 3 == 0) for i in range(12)}
    registry = MetricsRegistry()
    BrokerMeter(registry, partitions, "memory", _no_disk(tmp_path), lambda: 0)

    def same() -> None:
        assert _offset_gauges(registry) == reference_gauges(partitions)
        assert registry.encode() == [s.encode() for s in registry.snapshot()]  # snapshot reads them alike

    same()
    same()  # unchanged: kept encodings
    _append(partitions[("t", 0)])  # LEO moves
    same()
    partitions[("t", 0)].record_follower_fetch(F1, partitions[("t", 0)].log_end_offset, 10)
    partitions[("t", 0)].record_follower_fetch(F2, partitions[("t", 0)].log_end_offset, 10)  # HW moves
    same()
    partitions[("t", 3)].become_follower(F1, 2, [ME, F1, F2], [ME, F1, F2])  # leadership lost
    same()
    partitions[("t", 4)].become_leader(2, [ME, F1, F2], [ME, F1, F2], now_ms=0)  # leadership gained
    same()
    old = partitions[("t", 0)]
    partitions[("t", 0)] = _partition("t", 0)  # deleted and re-created: offsets start over
    assert old.log_end_offset != partitions[("t", 0)].log_end_offset
    same()
    del partitions[("t", 6)]  # deleted
    same()
    partitions[("u", 6)] = _partition("u", 6)
    _append(partitions[("u", 6)], 5)
    same()


def test_a_kept_gauge_never_outlives_the_value_it_was_made_of(tmp_path: Any) -> None:
    part = _partition("t", 0)
    partitions = {("t", 0): part}
    registry = MetricsRegistry()
    BrokerMeter(registry, partitions, "memory", _no_disk(tmp_path), lambda: 0)
    rng = random.Random(13)
    for _ in range(200):
        action = rng.randrange(4)
        if action == 0:
            _append(part, rng.randrange(1, 4))
        elif action == 1:
            part.record_follower_fetch(rng.choice((F1, F2)), rng.randrange(part.log_end_offset + 1), 0)
        elif action == 2:
            part = partitions[("t", 0)] = _partition("t", 0, epoch=rng.randrange(1, 5))
        assert _offset_gauges(registry) == reference_gauges(partitions)


# -- the leader's heartbeat ----------------------------------------------------------------------
def test_replica_heartbeats_are_the_same_messages_at_the_same_times() -> None:
    clock = ManualClock(start_ms=1_000_000)
    led: dict = {("t", i): _partition("t", i) for i in range(8)}
    led[("solo", 0)] = Partition("solo", 0, ME, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    led[("solo", 0)].become_leader(1, [ME], [ME], now_ms=0)  # one replica: never heartbeated
    topic_ids = {"t": "id-1", "solo": "id-s"}
    sent: list[list] = []
    new = ReplicationPublisher("broker-1", sent.append, clock, lambda: list(led.values()),
                               lambda key: topic_ids.get(key[0], ""))
    ref = ReferencePublisher(clock, lambda: list(led.values()), lambda key: topic_ids.get(key[0], ""))

    def tick(ms: int = REPLICA_HEARTBEAT_INTERVAL_MS) -> None:
        clock.advance(ms)
        new.heartbeat()
        ref.heartbeat()
        assert sent == ref.sent

    tick(0)
    tick()  # nothing changed: nothing sent
    _append(led[("t", 2)])
    tick()
    led[("t", 2)].record_follower_fetch(F1, led[("t", 2)].log_end_offset, clock.now_ms())
    led[("t", 2)].record_follower_fetch(F2, led[("t", 2)].log_end_offset, clock.now_ms())
    tick()  # HW moved
    led[("t", 3)].become_leader(2, [ME, F1, F2], [ME, F1, F2], now_ms=0)
    tick()  # a new epoch
    led[("t", 4)].become_follower(F1, 3, [ME, F1, F2], [ME, F1, F2])
    tick()  # no longer led
    tick(REPLICA_HEARTBEAT_FULL_INTERVAL_MS)  # the full one
    led[("t", 5)] = _partition("t", 5)  # re-created under the same name, same state
    topic_ids["t"] = "id-2"
    tick()
    tick(REPLICA_HEARTBEAT_FULL_INTERVAL_MS)  # the full one carries the new topic id
    assert sent and wire.unpack(sent[-1][3])["parts"][0][5] == "id-2"
    del led[("t", 6)]
    tick(REPLICA_HEARTBEAT_FULL_INTERVAL_MS)
    assert len(sent) == len(ref.sent) > 5


# -- replica heartbeat parts and acks on the wire -------------------------------------------------
HEARTBEAT_PARTS = [
    ["t", 1, 2, 3, 4, "id"], ["t", 1, 2, 3, 4], ["t", 1, 2, 3, 4, "id", "extra"], ["t", True, 2, 3, 4, "id"],
    ["t", 1, 2, 3, 4.0, "id"], [b"t", 1, 2, 3, 4, "id"], ["t", 1, 2, 3, 4, None], ("t", 1, 2, 3, 4, "id"),
    ["t", 1, 2, 3], "t", None, ["t", -1, -2, -3, -4, ""],
]


def _reference_heartbeat(h: dict) -> list | None:
    positions = []
    for p in h["parts"]:
        if not (isinstance(p, list) and len(p) >= 5 and isinstance(p[0], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in p[1:5])
                and (len(p) == 5 or isinstance(p[5], str))):
            return None
        positions.append(wire.ReplicaPosition(h["node"], p[0], p[1], p[2], p[3], p[4], p[5] if len(p) > 5 else ""))
    return positions


@pytest.mark.parametrize("part", HEARTBEAT_PARTS, ids=repr)
def test_replica_heartbeat_parts_decode_as_before(part: Any) -> None:
    header = {"node": "broker-1", "parts": [["t", 0, 1, 1, 1, "id"], part]}
    expected = _reference_heartbeat(header)
    if expected is None:
        with pytest.raises(MalformedFrame):
            wire.ReplicaHeartbeat.from_header(header)
        return
    got = wire.ReplicaHeartbeat.from_header(header).positions
    assert got == expected and all(type(p) is wire.ReplicaPosition for p in got)
    assert [p.topic_id for p in got] == [p.topic_id for p in expected]


@pytest.mark.parametrize("raw", [["t", 0, 5, 1], ["t", 0, 5], ["t", 0, 5, 1, 2], ["t", True, 5, 1], ["t", 0, 5.0, 1],
                                 [b"t", 0, 5, 1], ("t", 0, 5, 1), None, "t", ["t", -1, -5, -1]], ids=repr)
def test_replica_acks_decode_as_before(raw: Any) -> None:
    got, expected = ReplicaAck.decode(raw), reference_ack_decode(raw)
    assert got == expected
    if expected is not None:
        assert type(got) is ReplicaAck and got.log_end_offset == expected.log_end_offset


def test_a_followers_ack_is_the_same_message() -> None:
    parts = [_partition("t", i, lead=False) for i in range(5)]
    sent: list = []

    class Client:
        def send_oneway(self, command: bytes, header: dict, payloads: Any = ()) -> None:
            sent.append((command, wire.pack(header)))

    LeaderEndpoint(Client(), "tcp://x", F1, ME).ack(parts)  # type: ignore[arg-type]
    expected = wire.pack({"broker_id": ME, "incarnation": "", "parts": [ReplicaAck(p.topic, p.partition, p.log_end_offset, p.leader_epoch)
                                                     for p in parts]})
    assert [h for _, h in sent] == [expected]


# -- the leader's side: HW and ISR ---------------------------------------------------------------
def test_isr_checks_and_high_watermarks_match_the_straightforward_rules() -> None:
    rng = random.Random(5)
    for _ in range(300):
        part = _partition("t", 0)
        now = 0
        for _ in range(rng.randrange(1, 8)):
            op = rng.randrange(5)
            now += rng.randrange(0, 3000)
            if op == 0:
                _append(part)
            elif op == 1:
                f, offset = rng.choice((F1, F2)), rng.randrange(part.log_end_offset + 1)
                leos = {r: st.log_end_offset for r, st in part.followers.items()} | {f: offset}
                members = part.isr | part.pending_isr if part.pending_isr else part.isr
                expected_hw = max(part.high_watermark, min([part.log_end_offset] + [leos.get(r, -1) for r in members
                                                                                     if r != ME]))
                before = part.high_watermark
                moved = part.record_follower_fetch(f, offset, now)
                assert part.high_watermark == expected_hw and moved == (expected_hw > before)
            elif op == 2:
                new = reference_isr_changes(part, now, LAG_MAX_MS)
                if new is not None:
                    part.propose_isr(new)
            elif op == 3 and part.pending_isr is not None:
                part.update_isr(sorted(part.pending_isr))
                part.set_partition_epoch(part.partition_epoch + 1)
            elif op == 4:
                part.update_isr(rng.sample([ME, F1, F2], rng.randrange(1, 4)))
            assert part.isr_changes(now, LAG_MAX_MS) == reference_isr_changes(part, now, LAG_MAX_MS)


def test_heartbeats_of_moved_partitions_only_are_those_of_every_partition() -> None:
    """A leader that looks only at the partitions whose position moved (and at all of them when
    the led set changed) sends what looking at every led partition sends, over random changes
    through every method that moves a position: appends, follower acks, ISR changes, new
    epochs, leadership lost and regained, follower truncation and reset, re-creation."""
    rng = random.Random(29)
    clock = ManualClock(start_ms=1_000_000)
    sent: list[list] = []
    state: dict[str, Any] = {"led": []}
    new = ReplicationPublisher("broker-1", sent.append, clock, lambda: state["led"], lambda key: "id",
                               moves_noted=True)
    ref = ReferencePublisher(clock, lambda: state["led"], lambda key: "id")
    parts: dict = {}

    def open_partition(i: int) -> Partition:
        part = Partition("t", i, ME, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
        part.on_moved = new.note_moved  # as BrokerCore.open_partition does
        parts[("t", i)] = part
        return part

    def relist() -> None:  # BrokerCore.partitions_changed: a new list
        state["led"] = [p for p in parts.values() if p.is_leader]

    for i in range(6):
        open_partition(i).become_leader(1, [ME, F1, F2], [ME, F1, F2], now_ms=clock.now_ms())
    relist()
    for _ in range(600):
        part = parts[("t", rng.randrange(6))]
        op = rng.randrange(9)
        if op == 0 and part.is_leader:
            _append(part, rng.randrange(1, 4))
        elif op == 1 and part.is_leader:
            part.record_follower_fetch(rng.choice((F1, F2)), rng.randrange(part.log_end_offset + 1), clock.now_ms())
        elif op == 2 and part.is_leader:
            part.update_isr(rng.sample([ME, F1, F2], rng.randrange(1, 4)))
            part.set_partition_epoch(part.partition_epoch + 1)
        elif op == 3:
            part.become_leader(part.leader_epoch + rng.randrange(0, 2), [ME, F1, F2], [ME, F1, F2], clock.now_ms())
            relist()
        elif op == 4:
            part.become_follower(F1, part.leader_epoch + 1, [ME, F1, F2], [ME, F1, F2])
            relist()
        elif op == 5 and not part.is_leader:
            part.truncate_to(rng.randrange(part.log_end_offset + 1))
        elif op == 6 and not part.is_leader:
            part.reset_to(part.log_end_offset + rng.randrange(0, 3))
        elif op == 7 and not part.is_leader:
            part.set_high_watermark_from_leader(rng.randrange(part.log_end_offset + 2))
        elif op == 8 and rng.random() < 0.2:
            part.close()
            open_partition(part.partition).become_leader(rng.randrange(1, 4), [ME, F1, F2], [ME], clock.now_ms())
            relist()
        if rng.random() < 0.4:
            clock.advance(rng.choice((REPLICA_HEARTBEAT_INTERVAL_MS, REPLICA_HEARTBEAT_INTERVAL_MS * 3)))
            new.heartbeat()
            ref.heartbeat()
            assert sent == ref.sent
    assert len(sent) > 50
