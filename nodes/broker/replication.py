"""Replication over PUB/SUB: the fast path (the zguide's Clone pattern with durable logs).

Leader side: every appended batch is published on the broker's PUB socket under the
partition's prefix (``fabric.protocol.replica_topic``). A heartbeat every
``REPLICA_HEARTBEAT_INTERVAL_MS`` carries, for many partitions in one message, each one's log
end offset (LEO), high watermark, leader epoch and topic id: those that changed since the last one, and
all of them once per ``REPLICA_HEARTBEAT_FULL_INTERVAL_MS`` -- so that idle work grows with
messages per second, not with partitions times heartbeats (1,000 partitions used to cost
thousands of messages a second on every broker of an idle cluster). To find those that
changed, a heartbeat between the full ones looks only at the partitions whose position moved
since the last heartbeat (``note_moved``, which each partition calls when its invariant check
sees a new position) and, after the set of led partitions changed, at all of them; it sends
what looking at every led partition would send, in the same order.

Follower side: a SUB (``fabric.zmtp_sub``, read by the reactor thread itself) subscribed to the prefixes of the partitions it follows on each
leader. A batch that continues the log is appended at once and acknowledged to the leader with
a one-way REPLICA_ACK carrying the new LEO (which advances the leader's high watermark). A
batch past the log end is a gap, and a heartbeat showing a LEO beyond ours means something was
dropped: both make the ReplicaFetcher fetch over ROUTER/DEALER, which alone is enough for
correctness (PUB drops messages for slow or late subscribers). Messages from a leader epoch
other than the one in our metadata are ignored.

Messages are encoded and decoded by ``fabric.wire`` (``ReplicaPosition``, ``ReplicaHeartbeat``).
Both sides get the few callables they use, not the broker: the publisher a frame sender and
the partitions it leads, the subscriber its stream (a ZmtpSubscriber), the partition table and
``fetcher_for(leader_id)``.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Mapping

from engines import batch as B
from engines.api import EngineError
from fabric import protocol as P
from fabric import wire
from fabric.clock import Clock
from fabric.errors import MalformedFrame
from fabric.hoptrace import mark
from fabric.zmtp_sub import ZmtpSubscriber
from nodes.broker.fetcher import ReplicaFetcher
from nodes.broker.messages import TopicPartition
from nodes.broker.partition import LEADER, Partition

log = logging.getLogger(__name__)

REPLICA_HEARTBEAT_INTERVAL_MS = 100
REPLICA_HEARTBEAT_FULL_INTERVAL_MS = 1000  # every led partition, changed or not


class ReplicationPublisher:
    """Leader side: publish appends and idle heartbeats."""

    def __init__(self, node: str, send: Callable[[list], None], clock: Clock,
                 led_partitions: Callable[[], list[Partition]], topic_id_of: Callable[[TopicPartition], str], *,
                 moves_noted: bool = False) -> None:
        """``send(frames)`` publishes one message (never blocks: PUB drops when it must);
        ``moves_noted``: ``note_moved`` hears of every move of every partition that may be
        led (the broker wires it as ``Partition.on_moved``), so a heartbeat between the full
        ones need not look at the others."""
        self.node = node
        self.send = send
        self.clock = clock
        self.led_partitions = led_partitions
        self.topic_id_of = topic_id_of
        self._sent: dict[TopicPartition, tuple[int, int, int]] = {}  # (epoch, hw, leo) last heartbeated
        self._last_full_ms = -REPLICA_HEARTBEAT_FULL_INTERVAL_MS
        # partitions whose position moved since the last heartbeat (None: nobody tells us, so
        # every heartbeat looks at every led partition); bounded by the partitions of the broker
        self._moved: set[Partition] | None = set() if moves_noted else None
        self._led_seen: list[Partition] | None = None  # the led list the order below is of
        self._led_order: dict[Partition, int] = {}

    def note_moved(self, part: Partition) -> None:
        """``part``'s (leader epoch, HW, LEO) changed (``Partition.on_moved``)."""
        if self._moved is not None:
            self._moved.add(part)

    def publish_appended(self, part: Partition, batches: list[bytearray], base_offsets: list[int]) -> None:
        for buf, off in zip(batches, base_offsets):
            B.set_base_offset(buf, off)
        frames = wire.encode_replica(wire.ReplicaPosition(
            self.node, part.topic, part.partition, part.leader_epoch, part.high_watermark, part.log_end_offset,
            self.topic_id_of((part.topic, part.partition))), batches)
        mark("produce.publish")  # before the send: a follower may run before this thread does again
        self.send(frames)

    def heartbeat(self) -> None:
        now = self.clock.now_ms()
        full = now - self._last_full_ms >= REPLICA_HEARTBEAT_FULL_INTERVAL_MS
        if full:
            self._last_full_ms = now
            self._sent = {}  # also forgets partitions we no longer lead
        led = self.led_partitions()
        moved, self._moved = self._moved, (None if self._moved is None else set())
        if not full and moved is not None and led is self._led_seen:
            # the others' positions are those already compared: they would not be sent
            order = self._led_order
            candidates = sorted((p for p in moved if p in order), key=order.__getitem__)
        else:
            candidates = led
            if moved is not None and led is not self._led_seen:
                self._led_seen, self._led_order = led, {p: i for i, p in enumerate(led)}
        # the positions are built as their wire parts directly (wire.ReplicaHeartbeat's shape)
        parts = []
        sent = self._sent
        for part in candidates:
            if part.role != LEADER or len(part.replicas) < 2:
                continue
            key = (part.topic, part.partition)
            state = (part.leader_epoch, part.high_watermark, part.log_end_offset)
            if sent.get(key) != state:
                sent[key] = state
                parts.append([key[0], key[1], *state, self.topic_id_of(key)])
        for i in range(0, len(parts), P.REPLICA_HEARTBEAT_PARTITIONS_MAX):
            self.send(wire.encode_replica_heartbeat_parts(self.node, parts[i:i + P.REPLICA_HEARTBEAT_PARTITIONS_MAX]))


class ReplicationSubscriber:
    """Follower side: one subscriber, connected to every leader we follow."""

    def __init__(self, stream: ZmtpSubscriber, partitions: Mapping[TopicPartition, Partition],
                 fetcher_for: Callable[[int], ReplicaFetcher | None], *,
                 is_other_topic_id: Callable[[TopicPartition, str], bool], blocked: Callable[[str], bool],
                 on_appended: Callable[[Partition], None], counters: Counter | None = None) -> None:
        """``stream``: the subscriber (its messages go to ``on_message``); ``partitions``: the
        broker's live table; ``fetcher_for(leader_id)``: the fetcher of that leader, if any;
        ``blocked(node)``: fault injection drops that sender; ``on_appended(part)``: a
        follower's log grew from the stream."""
        self.stream = stream
        self.partitions = partitions
        self.fetcher_for = fetcher_for
        self.is_other_topic_id = is_other_topic_id
        self.blocked = blocked
        self.on_appended = on_appended
        self.counters = counters if counters is not None else Counter()
        self._connected: set[str] = set()
        self._subscribed: set[bytes] = set()

    def sync(self, pub_endpoint_of: Callable[[int], str | None]) -> None:
        """Follow the partitions the broker now follows (call after every metadata change);
        ``pub_endpoint_of(broker_id)``: that broker's PUB endpoint, None if unknown."""
        wanted_eps: set[str] = set()
        wanted_topics: set[bytes] = set()
        for part in self.partitions.values():
            if part.role != "follower" or part.leader_id < 0:
                continue
            ep = pub_endpoint_of(part.leader_id)
            if ep is None:
                continue
            wanted_eps.add(ep)
            wanted_topics.add(P.replica_topic(part.topic, part.partition))
        for ep in wanted_eps - self._connected:
            self.stream.connect(ep)
        for ep in self._connected - wanted_eps:
            self.stream.disconnect(ep)
        if wanted_topics:
            wanted_topics.add(P.REPLICA_HEARTBEAT_TOPIC)
        self.stream.subscribe_many(sorted(wanted_topics - self._subscribed))
        self.stream.unsubscribe_many(sorted(self._subscribed - wanted_topics))
        self._connected, self._subscribed = wanted_eps, wanted_topics

    def on_message(self, frames: list[bytes]) -> None:
        mark("replica.batch")
        try:
            sender, positions, payloads = wire.decode_replication(frames)
        except MalformedFrame:
            self.counters["repl_malformed"] += 1
            return
        if self.blocked(sender):
            return
        acks: dict[int, list[Partition]] = {}
        for pos in positions:
            part = self._on_position(pos, payloads)
            if part is not None:
                acks.setdefault(part.leader_id, []).append(part)
        for leader_id, parts in acks.items():
            fetcher = self.fetcher_for(leader_id)
            if fetcher is not None:
                fetcher.ack_parts(parts)

    def _on_position(self, pos: wire.ReplicaPosition, payloads: list[bytes]) -> Partition | None:
        """One partition's batches (or none: a heartbeat) and state from its leader. Returns the
        partition when an idle heartbeat found it caught up (to acknowledge), else None."""
        key = (pos.topic, pos.partition)
        part = self.partitions.get(key)
        if part is None or part.role != "follower" or pos.epoch != part.leader_epoch:
            return None  # not ours, or a stale (or not yet known) epoch
        if pos.topic_id and self.is_other_topic_id(key, pos.topic_id):
            return None  # a leader still holding a deleted topic of this name
        fetcher = self.fetcher_for(part.leader_id)
        if fetcher is None:
            return None
        # until a fetch has checked our log against this leader's, our log end may count records
        # of an older epoch the leader does not have: neither report it nor take the leader's HW
        # (an append, a fetch it triggers, does not change it: only a fetch's answer does)
        ready = fetcher.stream_ready(key)
        if payloads:
            if not ready:
                fetcher.trigger()  # the log is not yet checked against this leader's
                return None
            self._apply(part, payloads, fetcher)
        if ready:
            part.set_high_watermark_from_leader(pos.hw)
        if part.log_end_offset < pos.leo:
            fetcher.trigger()  # we missed something: repair over the fetch path
        elif not payloads and ready:
            return part  # idle heartbeat: tell the leader we are caught up
        return None

    def _apply(self, part: Partition, payloads: list[bytes], fetcher: ReplicaFetcher) -> None:
        # the common message, one payload that is one whole batch whose CRC matches: its header
        # parsed once (``fields``) and the log end read once, for append_batch_as_follower, which
        # decides as append_as_follower does; anything else goes batch by batch
        fields = B.whole_batch_fields(payloads[0]) if len(payloads) == 1 else None
        appended = 0
        for data in payloads:
            if fields is None and len(data) < B.HEADER_BYTES:
                self.counters["repl_malformed"] += 1
                return
            end = part.log_end_offset
            if (B.base_offset_of(data) if fields is None else fields[B.F_BASE_OFFSET]) > end:
                fetcher.trigger()  # a gap
                return
            try:
                appended += (part.append_as_follower(data) if fields is None
                             else part.append_batch_as_follower(data, fields, end))
            except (EngineError, B.BatchError) as e:
                log.error("%s-%d: replicated batch rejected: %s", part.topic, part.partition, e)
                fetcher.trigger()
                return
        if appended:
            self.counters["repl_batches"] += appended
            mark("replica.ack")  # before the send, as every point that hands a message on
            fetcher.ack(part)
            self.on_appended(part)
