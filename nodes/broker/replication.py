"""Replication over PUB/SUB: the fast path (the zguide's Clone pattern with durable logs).

Leader side: every appended batch is published on the broker's PUB socket under the
partition's prefix (``fabric.protocol.replica_topic``). A heartbeat every
``REPLICA_HEARTBEAT_INTERVAL_MS`` carries, for many partitions in one message, each one's log
end offset (LEO), high watermark, leader epoch and topic id: those that changed since the last one, and
all of them once per ``REPLICA_HEARTBEAT_FULL_INTERVAL_MS`` -- so that idle work grows with
messages per second, not with partitions times heartbeats (1,000 partitions used to cost
thousands of messages a second on every broker of an idle cluster).

Follower side: a SUB socket subscribed to the prefixes of the partitions it follows on each
leader. A batch that continues the log is appended at once and acknowledged to the leader with
a one-way REPLICA_ACK carrying the new LEO (which advances the leader's high watermark). A
batch past the log end is a gap, and a heartbeat showing a LEO beyond ours means something was
dropped: both make the ReplicaFetcher fetch over ROUTER/DEALER, which alone is enough for
correctness (PUB drops messages for slow or late subscribers). Messages from a leader epoch
other than the one in our metadata are ignored.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zmq

from engines import batch as B
from engines.api import EngineError
from fabric import protocol as P
from fabric import wire
from fabric.rpc import make_socket

if TYPE_CHECKING:
    from nodes.broker.node import Broker
    from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

REPLICA_HEARTBEAT_INTERVAL_MS = 100
REPLICA_HEARTBEAT_FULL_INTERVAL_MS = 1000  # every led partition, changed or not


class ReplicationPublisher:
    """Leader side: publish appends and idle heartbeats."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._sent: dict[tuple[str, int], tuple[int, int, int]] = {}  # (epoch, hw, leo) last heartbeated
        self._last_full_ms = -REPLICA_HEARTBEAT_FULL_INTERVAL_MS

    def publish_appended(self, part: "Partition", batches: list[bytearray], base_offsets: list[int]) -> None:
        for buf, off in zip(batches, base_offsets):
            B.set_base_offset(buf, off)
        header = {"node": self.broker.name, "topic": part.topic, "partition": part.partition,
                  "epoch": part.leader_epoch, "hw": part.high_watermark, "leo": part.log_end_offset,
                  "topic_id": self.broker.dirs.topic_id((part.topic, part.partition))}
        self.broker.publish(P.replica_topic(part.topic, part.partition), P.PUB_REPLICA, header, batches)

    def heartbeat(self) -> None:
        now = self.broker.clock.now_ms()
        full = now - self._last_full_ms >= REPLICA_HEARTBEAT_FULL_INTERVAL_MS
        if full:
            self._last_full_ms = now
            self._sent = {}  # also forgets partitions we no longer lead
        parts = []
        for part in self.broker.led_partitions:
            if not part.is_leader or len(part.replicas) < 2:
                continue
            key = (part.topic, part.partition)
            state = (part.leader_epoch, part.high_watermark, part.log_end_offset)
            if self._sent.get(key) != state:
                self._sent[key] = state
                parts.append([key[0], key[1], *state, self.broker.dirs.topic_id(key)])
        for i in range(0, len(parts), P.REPLICA_HEARTBEAT_PARTITIONS_MAX):
            self.broker.publish(P.REPLICA_HEARTBEAT_TOPIC, P.PUB_REPLICA_HEARTBEAT,
                                {"node": self.broker.name, "parts": parts[i:i + P.REPLICA_HEARTBEAT_PARTITIONS_MAX]})


class ReplicationSubscriber:
    """Follower side: one SUB socket, connected to every leader we follow."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.sock = make_socket(broker.ctx, zmq.SUB)
        # a new leader's stream should start flowing within a heartbeat, not a backoff cap
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, broker.config.liveness.heartbeat_interval_ms)
        broker.reactor.add_socket(self.sock, self._on_message)
        self._connected: set[str] = set()
        self._subscribed: set[bytes] = set()
        self.counters = broker.counters

    def sync(self) -> None:
        """Follow the partitions the broker now follows (call after every metadata change)."""
        wanted_eps: set[str] = set()
        wanted_topics: set[bytes] = set()
        for part in self.broker.partitions.values():
            if part.role != "follower" or part.leader_id < 0:
                continue
            b = self.broker.metadata.brokers.get(part.leader_id)
            if b is None:
                continue
            wanted_eps.add(b.pub_endpoint)
            wanted_topics.add(P.replica_topic(part.topic, part.partition))
        for ep in wanted_eps - self._connected:
            self.sock.connect(ep)
        for ep in self._connected - wanted_eps:
            self.sock.disconnect(ep)
        if wanted_topics:
            wanted_topics.add(P.REPLICA_HEARTBEAT_TOPIC)
        for t in wanted_topics - self._subscribed:
            self.sock.setsockopt(zmq.SUBSCRIBE, t)
        for t in self._subscribed - wanted_topics:
            self.sock.setsockopt(zmq.UNSUBSCRIBE, t)
        self._connected, self._subscribed = wanted_eps, wanted_topics

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) < 4 or frames[1] != P.VERSION or frames[2] not in (P.PUB_REPLICA, P.PUB_REPLICA_HEARTBEAT):
            self.counters["repl_malformed"] += 1
            return
        try:
            h = wire.unpack(frames[3])
            sender = h.get("node", "")
            if frames[2] == P.PUB_REPLICA_HEARTBEAT:
                states = [(p[0], p[1], p[2], p[3], p[4], p[5] if len(p) > 5 else "") for p in h["parts"]]
            else:
                states = [(h["topic"], h["partition"], h["epoch"], h["hw"], h["leo"], h.get("topic_id", ""))]
            if not all(isinstance(st[0], str) and isinstance(st[5], str) and all(isinstance(v, int) for v in st[1:5])
                       for st in states):
                raise TypeError("replication header fields have the wrong types")
        except Exception:
            self.counters["repl_malformed"] += 1
            return
        if self.broker.faults.blocks(sender):
            return
        acks: dict[int, list["Partition"]] = {}
        for topic, partition, epoch, hw, leo, topic_id in states:
            part = self._on_partition_state((topic, partition), epoch, hw, leo, topic_id, frames[4:])
            if part is not None:
                acks.setdefault(part.leader_id, []).append(part)
        for leader_id, parts in acks.items():
            self.broker.fetchers[leader_id].ack_parts(parts)

    def _on_partition_state(self, key: tuple[str, int], epoch: int, hw: int, leo: int, topic_id: str,
                            payloads: list[bytes]) -> "Partition | None":
        """One partition's batches (or none: a heartbeat) and state from its leader (``topic_id``:
        the leader's replica's, "" if unknown). Returns the partition when an idle heartbeat found
        it caught up (to acknowledge), else None."""
        part = self.broker.partitions.get(key)
        if part is None or part.role != "follower" or epoch != part.leader_epoch:
            return None  # not ours, or a stale (or not yet known) epoch
        if topic_id and self.broker.is_other_topic_id(key, topic_id):
            return None  # a leader still holding a deleted topic of this name
        fetcher = self.broker.fetchers.get(part.leader_id)
        if fetcher is None:
            return None
        if payloads:
            if not fetcher.stream_ready(key):
                fetcher.trigger()  # the log is not yet checked against this leader's
                return None
            self._apply(part, payloads, fetcher)
        # until a fetch has checked our log against this leader's, our log end may count records
        # of an older epoch the leader does not have: neither report it nor take the leader's HW
        ready = fetcher.stream_ready(key)
        if ready:
            part.set_high_watermark_from_leader(hw)
        if part.log_end_offset < leo:
            fetcher.trigger()  # we missed something: repair over the fetch path
        elif not payloads and ready:
            return part  # idle heartbeat: tell the leader we are caught up
        return None

    def _apply(self, part: "Partition", payloads: list[bytes], fetcher) -> None:  # noqa: ANN001
        appended = 0
        for data in payloads:
            if len(data) < B.HEADER_BYTES:
                self.counters["repl_malformed"] += 1
                return
            base = B.parse_header(data).base_offset
            if base > part.log_end_offset:
                fetcher.trigger()  # a gap
                return
            try:
                appended += part.append_as_follower(data)
            except (EngineError, B.BatchError) as e:
                log.error("%s-%d: replicated batch rejected: %s", part.topic, part.partition, e)
                fetcher.trigger()
                return
        if appended:
            self.broker.note_appended(part)
            self.counters["repl_batches"] += appended
            fetcher.ack(part)
            self.broker.mark_dirty((part.topic, part.partition))

    def close(self) -> None:
        self.broker.reactor.remove_socket(self.sock)
        self.sock.close(0)
