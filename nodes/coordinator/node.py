"""The coordinator: cluster metadata, broker liveness, leader election.

Every change bumps the metadata version, is written durably, and is published (``commit``);
subscribers are told the version at once and every REPUBLISH_INTERVAL_MS. This module is that,
the producer ids (INIT_PRODUCER_ID) and the ISR changes leaders propose (ALTER_ISR). Two parts
are bases of ``Coordinator`` in their own modules:

- broker liveness and the elections it makes -- heartbeats, BROKER_REGISTER, a broker's
  process (restarts, duplicates, other clusters), sessions and our own stalls -- are
  ``BrokerLivenessMixin`` (nodes/coordinator/broker_liveness.py);
- CREATE_TOPIC, DELETE_TOPIC and ALTER_TOPIC are ``TopicAdminMixin``
  (nodes/coordinator/topic_admin.py).

Not thread-safe: everything runs on the reactor's thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import zmq

from engines.checks import translate_os_error
from engines.errors import LoomError
from fabric import protocol as P
from fabric import wire
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from fabric.rpc import RpcClient, make_socket
from fabric.stall import STALL_THRESHOLD_MS_MIN, StallWatch
from nodes.base import Node
from nodes.coordinator.alter_isr import IsrChange, judge
from nodes.coordinator.alter_isr import result as alter_isr_result
from nodes.coordinator.broker_liveness import BrokerLivenessMixin
from nodes.coordinator.context import BrokerRequester
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.liveness import DisconnectWatch
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator.store import PRODUCER_IDS_PER_WALL_MS, ClusterState, StateStore, new_id
from nodes.coordinator.topic_admin import TopicAdminMixin

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL_MS = 1000
# producer ids are reserved this many at a time, with one durable write of the cluster state
# (Kafka's producer id blocks, KIP-730): every INIT_PRODUCER_ID rewrote and fsynced the whole
# state on the reactor thread -- a file that grows with the partitions (24 KB for one
# 1,000-partition topic), in the way of every heartbeat and request while the disk was busy
PRODUCER_ID_BLOCK = 1000


class Coordinator(BrokerLivenessMixin, TopicAdminMixin, Node):
    role = "coordinator"
    PUB_KIND = zmq.XPUB  # a new subscriber is answered with the metadata version (_on_subscription)

    def __init__(self, config: LoomConfig, name: str, *,
                 offsets_connect: Callable[[str], BrokerRequester] | None = None, **kw: Any) -> None:
        """``offsets_connect(endpoint)``: the RPC client of the committed-offsets machinery to one
        broker (an RpcClient by default); ``kw``: the Node's (clock, ...)."""
        super().__init__(config, name, **kw)
        self.store = StateStore(self.take_data_dir(config.data_dir_for(name)))  # raises DataDirInUse
        self.state: ClusterState = self.store.load()
        # new per process: a broker tells a restarted coordinator (whose metadata must not be
        # older than what it has seen) from pushes of this one that arrive out of order
        self.state_id = new_id()
        self._foreign_brokers: dict[int, str] = {}  # broker id -> the other cluster id it reported
        self._duplicates_logged: dict[int, str] = {}  # broker id -> the last refused duplicate process logged
        self.brokers = {bid: BrokerInfo(bid, n.host, n.port, n.publish_port) for bid, (_, n) in config.brokers().items()}
        now = self.clock.now_ms()
        # after a restart every broker gets one session to show up before it is judged
        self.last_seen_ms: dict[int, int] = {bid: now for bid in self.brokers}
        self.alive: set[int] = set(self.brokers)
        # brokers this process had a sign of life from (a heartbeat, a registration): the others
        # in ``alive`` are there by the start's grace only, and are not elected (``_seen``)
        self.heard: set[int] = set()
        self.heartbeats_from: set[int] = set()  # brokers whose heartbeats reached us since start
        self._metadata_cache: dict | None = None
        self._committed = self.metadata()  # what the last commit published: deltas start here
        self.sub = make_socket(self.ctx, zmq.SUB)
        # a restarted broker must be heard again within its session, so reconnects here may
        # not back off past a heartbeat interval
        self.sub.setsockopt(zmq.RECONNECT_IVL_MAX, config.liveness.heartbeat_interval_ms)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_HEARTBEAT)
        for b in self.brokers.values():
            self.sub.connect(b.pub_endpoint)
        self.reactor.add_socket(self.sub, self._on_heartbeat)
        self.disconnects = DisconnectWatch(self.sub, self.reactor, {b.pub_endpoint: bid for bid, b in self.brokers.items()},
                                           config.liveness.heartbeat_interval_ms) \
            if config.liveness.crash_detection else None
        for cmd, fn in ((P.METADATA, self._on_metadata), (P.CREATE_TOPIC, self._on_create_topic),
                        (P.DELETE_TOPIC, self._on_delete_topic), (P.ALTER_TOPIC, self._on_alter_topic),
                        (P.ALTER_ISR, self._on_alter_isr), (P.INIT_PRODUCER_ID, self._on_init_producer_id),
                        (P.BROKER_REGISTER, self._on_register)):
            self.server.route(cmd, fn)
        # a pass gap over half the session timeout (at least the minimum) is a stall of our own
        self.stall_watch = StallWatch(self.clock, max(STALL_THRESHOLD_MS_MIN, config.liveness.session_timeout_ms // 2),
                                      self._resume_after_stall)
        self.reactor.after_pass(self.stall_watch.tick)  # before the timers that judge liveness
        self.reactor.call_every(max(50, config.liveness.heartbeat_interval_ms // 2), self._check_liveness)
        self.reactor.call_every(REPUBLISH_INTERVAL_MS, self._publish_metadata)
        self._version_owed = False  # a subscription read in this pass: the version after it
        self._fenced: set[tuple[str, int]] = set()  # partitions whose next commit bumps their epoch
        # the next producer id and the end of the block this process stored (nothing yet)
        self._pid_next = self._pid_end = self.state.next_producer_id
        self.reactor.call_every(config.replication.preferred_leader_check_ms, self._restore_preferred_leaders)
        self.extensions: list[Any] = []  # group coordinator etc. plug in here
        offsets_client = OffsetsTopicClient(self, offsets_connect or (
            lambda endpoint: RpcClient(self.ctx, self.reactor, endpoint, identity="coordinator-offsets")))
        self.groups = GroupCoordinator(self, offsets_client, offsets_retention_ms=config.limits.group_offsets_retention_ms)
        self.groups.install()
        self.extensions.append(self.groups)

    # -- metadata ------------------------------------------------------------------------------
    def metadata(self) -> ClusterMetadata:
        brokers = {bid: BrokerInfo(b.broker_id, b.host, b.port, b.pub_port, bid in self.alive,
                                   self.state.incarnations.get(bid, ""),
                                   tuple(self.state.replaced_incarnations.get(bid, ())))
                   for bid, b in self.brokers.items()}
        topics = {name: TopicInfo(name, tuple(PartitionInfo(name, i, p.leader, p.leader_epoch, tuple(p.replicas), tuple(p.isr),
                                                            p.partition_epoch)
                                              for i, p in enumerate(t.partitions)), dict(t.configs), t.topic_id)
                  for name, t in self.state.topics.items()}
        return ClusterMetadata(self.state.version, self.config.cluster.name, brokers, topics, self.config.coordinator.endpoint,
                               self.state.cluster_id, self.state_id, tuple(self.state.deleted_topic_ids))

    def metadata_wire(self) -> dict:
        if self._metadata_cache is None:
            self._metadata_cache = self.metadata().to_wire()
        return self._metadata_cache

    def commit(self) -> None:
        """Bump the partition epoch of every partition whose leader, epoch or ISR changed since
        the last commit, bump the version, persist (one durable write), publish the delta.
        Raises StorageFull / EngineError (LoomErrors: the node logs them and serves on) when the
        write fails, after going back to the stored state."""
        fenced, self._fenced = self._fenced, set()
        for name, topic in self.state.topics.items():
            for i, ps in enumerate(topic.partitions):
                if self._partition_changed(name, i) or (name, i) in fenced:
                    ps.partition_epoch += 1
        self.state.version += 1
        try:
            self.store.save(self.state)
        except (OSError, LoomError) as e:
            # not durable, so a restart would forget it: nothing may act on it (served, it let
            # leader epochs go backwards and two brokers lead one epoch). Back to the stored state.
            log.error("cannot store the cluster state: the change is dropped", exc_info=True)
            self._fenced |= fenced  # still owed
            self.state = self.store.load()
            self._metadata_cache = None
            if isinstance(e, OSError):  # an operating error, not a bug: the node serves on
                raise translate_os_error(e, "store the cluster state") from e
            raise
        self._metadata_cache = None
        new = self.metadata()
        self.publish(P.TOPIC_METADATA, P.PUB_METADATA_DELTA, self._committed.delta_to(new))
        self._committed = new

    def save_state(self) -> None:
        """Persist the state (one durable write) without a metadata change."""
        self.store.save(self.state)

    def _partition_changed(self, topic: str, partition: int) -> bool:
        """Leader, epoch, replicas or ISR differ from the last committed metadata."""
        ps = self.state.topics[topic].partitions[partition]
        info = self._committed.partition(topic, partition)
        return info is None or (info.leader, info.leader_epoch, list(info.replicas), list(info.isr)) != \
            (ps.leader, ps.leader_epoch, list(ps.replicas), list(ps.isr))

    def _publish_metadata(self) -> None:
        """The version (and whose state it is): a subscriber that missed a delta, or that holds
        another coordinator process's metadata, asks for a snapshot (METADATA); a broker judges
        the cluster and state ids at once (nodes/broker/identity.py)."""
        self.publish(P.TOPIC_METADATA, P.PUB_METADATA_VERSION, {"version": self.state.version,
                                                                "cluster_id": self.state.cluster_id,
                                                                "state_id": self.state_id})

    def _on_subscription(self, frames: list[bytes]) -> None:
        """A subscription that takes in the metadata topic: the version, at once. A PUB drops
        what it publishes before a subscription reaches it (the zguide's slow joiner), so the
        deltas a new subscriber missed -- a broker that registered, then whose subscription
        arrived after a topic was created -- are made up by the snapshot this version makes it
        ask for (the Clone pattern), instead of at the next push of REPUBLISH_INTERVAL_MS: up
        to a second during which every acks=all produce to that topic waited. The XPUB has
        applied the subscription when it hands it over, so the subscriber gets this version.
        Subscriptions read in one pass (brokers reconnecting after a restart) get one version,
        after the pass: it reaches every one of them."""
        sub = frames[0] if len(frames) == 1 else b""
        if sub[:1] == b"\x01" and P.TOPIC_METADATA.startswith(sub[1:]) and not self._version_owed:
            self._version_owed = True
            self.reactor.call_later(0, self._publish_owed_version)

    def _publish_owed_version(self) -> None:
        self._version_owed = False
        self._publish_metadata()

    def _on_metadata(self, req: wire.Request) -> dict:
        return {"metadata": self.metadata_wire()}

    # -- producer ids -------------------------------------------------------------------------
    def _on_init_producer_id(self, req: wire.Request) -> dict:
        """A new producer id, from the block this process reserved last. The stored
        ``next_producer_id`` is where the reserved ids end: every id handed out is below it, and
        a restarted coordinator starts after it (the rest of a block is never handed out). Ids
        are handed out only below ``_pid_end``, which only a write of this process that
        succeeded sets -- never the state as read back: a write whose rename landed but whose
        directory fsync failed leaves the new end in the file without making it durable, and
        ``commit``'s reload after a failed write would read it. A failed write answers the
        request with the error and hands none out; the larger end stays in the state (stored
        by a later write, it only skips ids). A block starts at the wall clock's floor at the
        least (PRODUCER_IDS_PER_WALL_MS)."""
        if self._pid_next >= self._pid_end:
            start = max(self._pid_next, self.state.next_producer_id,
                        self.clock.wall_ms() * PRODUCER_IDS_PER_WALL_MS)
            end = start + PRODUCER_ID_BLOCK
            self.state.next_producer_id = end
            self.store.save(self.state)
            self._pid_next, self._pid_end = start, end
        pid = self._pid_next
        self._pid_next += 1
        return {"producer_id": pid, "producer_epoch": 0}

    # -- ISR changes from leaders -------------------------------------------------------------
    def _on_alter_isr(self, req: wire.Request) -> dict:
        """Many partitions' ISR changes, one durable write, one push (nodes/coordinator/alter_isr.py)."""
        broker_id = req.get("broker_id", int)
        incarnation = req.header.get("incarnation")
        current = self.state.incarnations.get(broker_id)
        if isinstance(incarnation, str) and incarnation and current is not None and incarnation != current:
            # not the broker's process (a duplicate refused while it lives, one a restart
            # replaced): its view of the partitions it "leads" is not the leader's (Kafka's
            # AlterPartition broker epoch). One naming none is of an older broker.
            self.counters["alter_isr_stale_broker_epoch"] += 1
            raise RemoteError(P.STALE_BROKER_EPOCH, f"broker {broker_id}'s process is {current}, not {incarnation}")
        raw_parts = req.get("parts", list)
        if len(raw_parts) > P.ALTER_ISR_PARTITIONS_MAX:
            raise RemoteError(P.REQUEST_TOO_LARGE, f"{len(raw_parts)} parts is over {P.ALTER_ISR_PARTITIONS_MAX}")
        try:
            changes = [IsrChange.from_wire(raw) for raw in raw_parts]
        except ValueError as e:
            raise RemoteError(P.MALFORMED_REQUEST, str(e)) from e
        verdicts = [judge(c, broker_id, self.state.topics, self.alive) for c in changes]
        if any(code == 0 and self._partition_changed(c.topic, c.partition) for c, (code, _) in zip(changes, verdicts)):
            self.commit()
        out = []
        for c, (code, message) in zip(changes, verdicts):
            if code:
                self.counters[f"alter_isr_{P.error_name(code)}"] += 1
            topic = self.state.topics.get(c.topic)
            ps = topic.partitions[c.partition] if topic is not None and 0 <= c.partition < len(topic.partitions) else None
            out.append(alter_isr_result(c, code, message, ps))
        return {"parts": out}

    # -- stats ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        md = self.metadata()
        parts = list(md.partitions())
        return {"metadata_version": md.version, "cluster_id": self.state.cluster_id,
                "foreign_brokers": {str(b): c for b, c in self._foreign_brokers.items()}, "brokers_alive": sorted(self.alive),
                "brokers_heard": sorted(self.heard),
                "heartbeats_from": sorted(self.heartbeats_from), "topics": len(md.topics),
                "partitions": len(parts), "under_replicated": sum(p.under_replicated for p in parts),
                "offline": sum(p.offline for p in parts), "stalls": self.stall_watch.stalls, **self.groups.stats()}

    def close(self) -> None:
        if self.disconnects is not None:
            self.disconnects.close()
        self.groups.close()
        self.sub.close(0)
        super().close()

