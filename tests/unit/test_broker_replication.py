"""The PUB/SUB replication stream (nodes/broker/replication.py) with real objects: the leader's
ReplicationPublisher, the follower's ReplicationSubscriber over a BrokerCore with a real
ReplicaFetcher, whose fetches a real leader (BrokerCore + Loom handlers) answers.

- A follower must not acknowledge a heartbeat (or take the leader's high watermark) before a
  fetch has checked its log against the leader's: a divergent tail would count as caught up.
- A leader ignores a REPLICA_ACK past its log end (it cannot be its data).
- What a subscriber cannot read is counted, never raised.
- The stream's bytes are what they were before fabric.wire encoded them.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from nodes.broker.core import BrokerCore
from nodes.broker.partition import Partition
from nodes.broker.replication import ReplicationPublisher, ReplicationSubscriber
from tests.unit.fakes import FakeReactor, broker_core, loom_handlers, make_batch, replica_fetcher, request, serve_fetch

F_ID, L_ID = 1, 2
EXCHANGES_MAX = 10


def _heartbeat(epoch: int, hw: int, leo: int, topic: object = "t", partition: object = 0) -> list[bytes]:
    header = {"node": "broker-2", "topic": topic, "partition": partition, "epoch": epoch, "hw": hw, "leo": leo}
    return [P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, wire.pack(header)]


def _subscriber(core: BrokerCore, fetchers: dict) -> ReplicationSubscriber:
    return ReplicationSubscriber(None, core.partitions, fetchers.get, is_other_topic_id=core.is_other_topic_id,
                                 blocked=lambda node: False, on_appended=core.follower_appended)


def test_divergent_follower_does_not_ack_a_heartbeat_before_the_divergence_check(tmp_path: Path) -> None:
    # broker 1 led epoch 1 and wrote 10 records that never reached broker 2; broker 2 now leads
    # epoch 2 with a log of 4. A heartbeat (leo 4) must not make broker 1 claim LEO 10 at epoch 2:
    # the leader would count it caught up, admit it to the ISR and advance the HW past records
    # it does not have.
    reactor = FakeReactor(ManualClock(1_000))
    follower_core = broker_core(tmp_path / "f", F_ID, clock=reactor.clock)
    leader_core = broker_core(tmp_path / "l", L_ID, clock=reactor.clock)
    f = follower_core.open_partition("t", 0, {})
    f.become_leader(1, [F_ID, L_ID], [F_ID, L_ID], now_ms=0)
    f.append_as_leader([make_batch(5), make_batch(5)], 1 << 20)
    f.become_follower(L_ID, 2, [F_ID, L_ID], [L_ID])
    leader = leader_core.open_partition("t", 0, {})
    leader.become_leader(2, [F_ID, L_ID], [F_ID, L_ID], now_ms=0)
    leader.append_as_leader([make_batch(4)], 1 << 20)
    handlers, _ = loom_handlers(leader_core)
    fetcher, client = replica_fetcher(reactor, L_ID, F_ID, follower_core.follower_appended)
    sub = _subscriber(follower_core, {L_ID: fetcher})
    fetcher.set_partitions([f])  # its first fetch is in flight

    sub.on_message(_heartbeat(epoch=2, hw=4, leo=4))
    assert client.oneway == []
    assert f.high_watermark == 0  # the leader's HW names offsets our divergent tail holds

    # once a fetch checked the log (the leader said where they part, the follower reset and
    # fetched its 4 records), heartbeats ack and carry the HW
    for _ in range(EXCHANGES_MAX):
        if fetcher.stream_ready(("t", 0)):
            break
        assert serve_fetch(client, handlers)
        reactor.advance(0)
    assert fetcher.stream_ready(("t", 0)) and f.log_end_offset == 4 and f.high_watermark == 0
    sub.on_message(_heartbeat(epoch=2, hw=4, leo=4))
    assert [(c, h["parts"]) for c, h, _ in client.oneway] == [(P.REPLICA_ACK, [("t", 0, 4, 2)])]
    assert f.high_watermark == 4


def test_leader_ignores_a_replica_ack_past_its_log_end(tmp_path: Path) -> None:
    core = broker_core(tmp_path, L_ID)
    leader = core.open_partition("t", 0, {})
    leader.become_leader(2, [F_ID, L_ID], [F_ID, L_ID], now_ms=0)
    leader.append_as_leader([make_batch(4)], 1 << 20)
    handlers, server = loom_handlers(core)
    handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=F_ID, parts=[["t", 0, 10, 2]]))
    assert leader.high_watermark == 0
    assert leader.followers[F_ID].log_end_offset == -1
    handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=F_ID, parts=[["t", 0, 4, 2]]))
    assert leader.high_watermark == 4 and server.replies == []  # one-way: never answered


def test_malformed_replication_messages_are_counted_not_raised(tmp_path: Path) -> None:
    core = broker_core(tmp_path, F_ID)
    f = core.open_partition("t", 0, {})
    f.become_follower(L_ID, 2, [F_ID, L_ID], [F_ID, L_ID])
    fetcher, _ = replica_fetcher(FakeReactor(), L_ID, F_ID, core.follower_appended)
    sub = _subscriber(core, {L_ID: fetcher})
    sub.on_message(_heartbeat(epoch=2, hw=0, leo=0, topic=["t"]))  # unhashable key
    sub.on_message(_heartbeat(epoch=2, hw="x", leo="y"))  # not integers
    sub.on_message([P.REPLICA_HEARTBEAT_TOPIC, P.VERSION, P.PUB_REPLICA_HEARTBEAT,
                    wire.pack({"node": "broker-2", "parts": [["t", 0, 2, 0]]})])  # a part too short
    assert sub.counters["repl_malformed"] == 3


def _leading(tmp_path: Path) -> tuple[BrokerCore, Partition]:
    core = broker_core(tmp_path, L_ID)
    part = core.open_partition("t", 0, {})
    part.become_leader(2, [F_ID, L_ID], [F_ID, L_ID], now_ms=0)
    return core, part


def test_the_stream_has_the_bytes_it_had(tmp_path: Path) -> None:
    core, part = _leading(tmp_path)
    sent: list[list] = []
    pub = ReplicationPublisher("broker-2", sent.append, ManualClock(), lambda: core.led_partitions,
                               lambda key: "id-1")
    core.partitions_changed()
    (out,), written = part.append_as_leader([make_batch(2)], 1 << 20)
    pub.publish_appended(part, written, [out[0]])
    header = {"node": "broker-2", "topic": "t", "partition": 0, "epoch": 2, "hw": 0, "leo": 2, "topic_id": "id-1"}
    assert sent[-1] == [P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, msgpack.packb(header), written[0]]
    pub.heartbeat()
    beat = {"node": "broker-2", "parts": [["t", 0, 2, 0, 2, "id-1"]]}
    assert sent[-1] == [P.REPLICA_HEARTBEAT_TOPIC, P.VERSION, P.PUB_REPLICA_HEARTBEAT, msgpack.packb(beat)]
    # and a subscriber reads both
    assert wire.decode_replication(sent[-2])[:2] == ("broker-2", [wire.ReplicaPosition("broker-2", "t", 0, 2, 0, 2,
                                                                                         "id-1")])
    assert wire.decode_replication(sent[-1]) == ("broker-2", [wire.ReplicaPosition("broker-2", "t", 0, 2, 0, 2,
                                                                                     "id-1")], [])
