"""Idle replication costs messages per second, not partitions times heartbeats: a leader's
heartbeat covers many partitions in one message (only changed ones, all of them once a second),
and a follower acknowledges all the caught-up partitions of one leader in one REPLICA_ACK.

Real ``Broker`` objects (sockets bound on loopback, no peers); what they would send is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from nodes.broker.node import Broker
from nodes.broker.replication import REPLICA_HEARTBEAT_FULL_INTERVAL_MS, REPLICA_HEARTBEAT_INTERVAL_MS
from tests.harness import make_config
from tests.unit.fakes import make_batch

PARTITIONS = 300


def _metadata(config: Any) -> dict:
    brokers = {bid: BrokerInfo(bid, n.host, n.port, n.publish_port) for bid, (_, n) in config.brokers().items()}
    parts = tuple(PartitionInfo("t", i, 1, 1, (1, 2), (1, 2), 1) for i in range(PARTITIONS))
    return ClusterMetadata(1, "test", brokers, {"t": TopicInfo("t", parts, {})}).to_wire()


def test_idle_heartbeats_cover_many_partitions_per_message_and_acks_are_batched(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 2, engine="memory"))
    clock = ManualClock(start_ms=1_000_000)
    leader, follower = Broker(config, "broker-1", clock=clock), Broker(config, "broker-2", clock=clock)
    published: list[list[bytes]] = []
    leader.repl_pub.send = published.append
    try:
        for b in (leader, follower):
            b.apply_metadata(_metadata(config))
            for _ in range(PARTITIONS):  # new partitions open a bounded number per pass
                if not b._to_open:
                    break
                b.reactor.run_once(0)
            assert len(b.partitions) == PARTITIONS
        fetcher = follower.fetchers[1]
        for i in range(PARTITIONS):  # a fetch has checked every log against the leader's
            fetcher._stream_ready[("t", i)] = 1
        acks: list[dict] = []
        fetcher.leader.client.send_oneway = lambda command, header: acks.append(header)  # type: ignore[method-assign]

        leader.repl_pub.heartbeat()
        assert len(published) == 1 and published[0][0] == P.REPLICA_HEARTBEAT_TOPIC
        assert len(wire.unpack(published[0][3])["parts"]) == PARTITIONS
        follower.repl_sub.on_message(published[0])
        assert len(acks) == 1 and len(acks[0]["parts"]) == PARTITIONS

        published.clear()
        clock.advance(REPLICA_HEARTBEAT_INTERVAL_MS)
        leader.repl_pub.heartbeat()  # nothing changed: nothing to say
        assert published == []
        leader.partitions[("t", 7)].append_as_leader([_batch()], 1 << 20)  # a changed LEO
        clock.advance(REPLICA_HEARTBEAT_INTERVAL_MS)
        leader.repl_pub.heartbeat()
        assert [p[:2] for p in wire.unpack(published[-1][3])["parts"]] == [["t", 7]]
        clock.advance(REPLICA_HEARTBEAT_FULL_INTERVAL_MS)
        leader.repl_pub.heartbeat()  # once a second: every partition, so a follower sees any gap
        assert len(wire.unpack(published[-1][3])["parts"]) == PARTITIONS
    finally:
        leader.close()
        follower.close()


def _batch() -> bytes:
    return make_batch(1, keys=False)
