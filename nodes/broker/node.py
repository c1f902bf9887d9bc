"""The broker: many partition replicas (Kafka's ReplicaManager role).

Requests: PRODUCE, FETCH (consumers and follower replicas), LIST_OFFSETS, METADATA (its cached
copy). Produce requests of one reactor pass are appended together, per partition, with one
durability point (group commit), then answered -- or parked until the high watermark covers
them (acks=all). Fetches with nothing to return are parked until data arrives or their wait
ends. Metadata comes from the coordinator (PUB/SUB push, plus a request at start).

Not thread-safe: everything runs on the reactor's thread.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import zmq

from engines.api import EngineError, OffsetOutOfRange
from engines.registry import open_engine
from fabric import protocol as P
from fabric import wire
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata, PartitionInfo
from fabric.rpc import DEFER, RpcClient, make_socket
from fabric.stall import StallWatch
from nodes.base import Node
from nodes.broker.fetcher import ReplicaFetcher
from nodes.broker.identity import VERSION_PERSIST_INTERVAL_MS, MetadataGuard
from nodes.broker.isr import ALTER_ISR_TIMEOUT_MS, IsrProposer
from nodes.broker.meter import BrokerMeter
from nodes.broker.parking import ParkedFetch, ParkedProduce, ParkingLot
from nodes.broker.partition import HW_CHECKPOINT_INTERVAL_MS, Partition
from nodes.broker.partition_dirs import PartitionDirs
from nodes.broker.replication import REPLICA_HEARTBEAT_INTERVAL_MS, ReplicationPublisher, ReplicationSubscriber

log = logging.getLogger(__name__)

ISR_CHECK_INTERVAL_MS = 250
METADATA_REQUEST_TIMEOUT_MS = 2000
REGISTER_REFUSED_RETRY_MS = 2000  # a coordinator of another cluster: ask again, slowly
STRAYS_SHOWN_MAX = 100  # in STATS
PARTITION_OPENS_PER_PASS_MAX = 25  # new partitions opened per reactor pass (each costs fsyncs)
UNFLUSHED_INTERVALS_MAX = 3  # fsync intervals a partition is watched after its latest append
STALL_THRESHOLD_MS = 2000  # a reactor pass gap over this means this broker did not run
METADATA_PUSH_KINDS = (P.PUB_METADATA, P.PUB_METADATA_DELTA, P.PUB_METADATA_VERSION)


class Broker(Node):
    role = "broker"

    def __init__(self, config: LoomConfig, name: str, **kw: Any) -> None:
        super().__init__(config, name, **kw)
        self.broker_id: int = self.node_config.broker_id  # type: ignore[assignment]
        self.data_dir = config.data_dir_for(name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = config.storage_for(name)
        self.dirs = PartitionDirs(self.data_dir, self.storage.engine)
        self.guard = MetadataGuard(self.data_dir, self.broker_id)  # raises IdentityError
        self.reactor.call_every(VERSION_PERSIST_INTERVAL_MS, self._persist_identity)
        self.limits = config.limits
        self.metadata = ClusterMetadata.empty()
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.parking = ParkingLot()
        self._produce_queue: list[wire.Request] = []
        self._dirty = False  # something appended or a HW moved this pass
        for cmd, fn in ((P.PRODUCE, self._on_produce), (P.FETCH, self._on_fetch),
                        (P.LIST_OFFSETS, self._on_list_offsets), (P.METADATA, self._on_metadata_request),
                        (P.REPLICA_ACK, self._on_replica_ack)):
            self.server.route(cmd, fn)
        self.coordinator = RpcClient(self.ctx, self.reactor, config.coordinator.endpoint, identity=name)
        coordinator_name = config.coordinator_name
        self.coordinator.drop_replies = lambda: self.faults.blocks(coordinator_name)
        self.pubsub = config.replication.transport == "pubsub"
        self.repl_pub = ReplicationPublisher(self)
        self.repl_sub = ReplicationSubscriber(self)
        if self.pubsub:
            self.reactor.call_every(REPLICA_HEARTBEAT_INTERVAL_MS, self.repl_pub.heartbeat)
        self.sub = make_socket(self.ctx, zmq.SUB)
        self.sub.setsockopt(zmq.RECONNECT_IVL_MAX, config.liveness.heartbeat_interval_ms)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_METADATA)
        self.sub.connect(config.coordinator.pub_endpoint)
        self.reactor.add_socket(self.sub, self._on_sub)
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self.meter = BrokerMeter(self.metrics, self.partitions, self.storage.engine, self.data_dir, lambda: self.parking.size)
        self._open_existing_partitions()
        self.reactor.after_pass(self._after_pass)
        self.isr_proposer = IsrProposer(self.broker_id, self._send_alter_isr, refresh_metadata=self._refresh_metadata,
                                        on_fenced=self._reregister_as_new_incarnation, mark_dirty=self.mark_dirty)
        self._refresh_in_flight = False
        self._to_open: dict[tuple[str, int], PartitionInfo] = {}  # in metadata, not yet opened here
        self._open_scheduled = False
        self.led_partitions: list[Partition] = []
        # a leader that did not run (SIGSTOP, a frozen host) did not hear its followers either
        self.stall_watch = StallWatch(self.clock, STALL_THRESHOLD_MS, self._resume_after_stall)
        self.reactor.after_pass(self.stall_watch.tick)
        self.reactor.call_every(ISR_CHECK_INTERVAL_MS, self._check_isr)
        self.reactor.call_every(config.topics.retention_check_interval_ms, self._apply_retention)
        self._unflushed: dict[tuple[str, int], int] = {}  # partition -> its latest append (ms)
        if self.storage.fsync == "interval":
            self.reactor.call_every(self.storage.fsync_interval_ms, self._flush_due)
        self.reactor.call_every(HW_CHECKPOINT_INTERVAL_MS, self._checkpoint_high_watermarks)
        # a random id per process: the coordinator treats a new one as a restart and moves
        # leadership away from epochs this process may not have all the data of
        self.incarnation = os.urandom(8).hex()
        self._registered = False
        self.reactor.call_later(0, self._register)

    # -- partitions on disk --------------------------------------------------------------------
    def _open_existing_partitions(self) -> None:
        for topic, p in self.dirs.scan():
            self._open_partition(topic, p, {})
        self.dirs.report_other_engines()

    def _open_partition(self, topic: str, partition: int, configs: dict, topic_id: str = "") -> Partition:
        key = (topic, partition)
        part = self.partitions.get(key)
        if part is not None:
            return part
        d = self.dirs.engine_dir(key, topic_id)  # per-engine: its log and its epoch checkpoint
        engine_config = self.storage.engine_config(*self._retention(configs), self.limits.batch_bytes_max)
        engine = open_engine(self.storage.engine, str(d / "log"), engine_config)
        if engine.recovery.truncated_bytes:
            log.warning("%s-%d: recovery cut %d bytes: %s", topic, partition,
                        engine.recovery.truncated_bytes, engine.recovery.message)
        part = Partition(topic, partition, self.broker_id, engine, str(d))
        self.partitions[key] = part
        return part

    def _retention(self, configs: dict) -> tuple[int, int]:
        """(retention_ms, retention_bytes) of a topic: its configs, else the cluster defaults."""
        defaults = self.config.topics
        return (int(configs.get("retention.ms", defaults.retention_ms)),
                int(configs.get("retention.bytes", defaults.retention_bytes)))

    def _apply_topic_configs(self, part: Partition, configs: dict) -> None:
        """Topic configs change at run time (``loom topic alter``), and partitions opened from
        disk at start-up did not know them yet: engines read retention from their config."""
        part.engine.config.retention_ms, part.engine.config.retention_bytes = self._retention(configs)

    def _retire_partition(self, key: tuple[str, int], deleted_topic_ids: tuple[str, ...]) -> None:
        """Stop serving a replica the metadata no longer has (or has under another topic id):
        delete it if its topic id was deleted explicitly, else set its directory aside."""
        self.parking.fail_partition(key, P.UNKNOWN_TOPIC_OR_PARTITION, self.server)
        part = self.partitions.pop(key, None)
        if part is not None:
            part.close()
        topic_id = self.dirs.topic_id(key)
        if topic_id and topic_id in deleted_topic_ids:
            self.dirs.delete(key)
            log.info("%s-%d: deleted (topic id %s was deleted)", key[0], key[1], topic_id)
        else:
            log.warning("%s-%d: topic id %s is not in the metadata and was not deleted: set aside as %s (kept, "
                        "not served)", key[0], key[1], topic_id or "(none)", self.dirs.set_aside(key))

    def is_other_topic_id(self, key: tuple[str, int], topic_id: Any) -> bool:
        """True if a peer names this partition's topic by another id than our replica's: one of
        us has metadata from before the topic was deleted and re-created."""
        if not isinstance(topic_id, str) or not topic_id:
            return False
        held = self.dirs.topic_id(key)
        return bool(held) and held != topic_id

    def _request_topic_id_differs(self, req: wire.Request, tp: Any) -> bool:
        ids = req.header.get("topic_ids")
        if not isinstance(ids, dict) or not isinstance(tp, (list, tuple)) or len(tp) < 2 \
                or not isinstance(tp[0], str) or not isinstance(tp[1], int) or (tp[0], tp[1]) not in self.partitions:
            return False
        return self.is_other_topic_id((tp[0], tp[1]), ids.get(tp[0]))

    def _is_other_topic(self, key: tuple[str, int], md: ClusterMetadata) -> bool:
        """True if the replica we hold belongs to no topic of ``md``: its name is gone, or the
        topic of that name has another id (deleted and re-created). A directory without an id
        (written before topic ids) takes the id of the topic of its name."""
        topic = md.topics.get(key[0])
        if topic is None:
            return True
        held = self.dirs.topic_id(key)
        if not held and topic.topic_id and self.dirs.path(key).exists():
            self.dirs.set_topic_id(key, topic.topic_id)
            return False
        return bool(held and topic.topic_id and held != topic.topic_id)

    # -- metadata ---------------------------------------------------------------------------
    def _register(self) -> None:
        """Announce this process to the coordinator; its answer (metadata in which a restart of
        ours is already accounted for) is the first metadata we act on."""
        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            if header is None:
                refused = err is not None and err.code == P.INCONSISTENT_CLUSTER_ID
                self.guard.registration_refused(err.message if refused else "")  # type: ignore[union-attr]
                self.reactor.call_later(REGISTER_REFUSED_RETRY_MS if refused else 200, self._register)
                return
            self._registered = True
            self.guard.registration_refused("")
            log.info("registered with the coordinator as broker %d (incarnation %s)", self.broker_id, self.incarnation)
            self.apply_metadata(header["metadata"], same_version=True)
        self.coordinator.request(P.BROKER_REGISTER, {"broker_id": self.broker_id, "incarnation": self.incarnation,
                                                     "cluster_id": self.guard.cluster_id},
                                 callback=done, timeout_ms=METADATA_REQUEST_TIMEOUT_MS)

    def _refresh_metadata(self) -> None:
        """Ask the coordinator for a full snapshot (after a gap in the deltas, or a STALE_ISR
        refusal); one request at a time. Partition states in it are applied by partition epoch,
        so a snapshot at our own version is applied too (it cannot move anything back)."""
        if self._refresh_in_flight:
            return
        self._refresh_in_flight = True

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._refresh_in_flight = False
            if header is not None:
                self.apply_metadata(header["metadata"], same_version=True)
            elif self.metadata.version < 0:
                self.reactor.call_later(200, self._refresh_metadata)
        self.coordinator.request(P.METADATA, {"broker_id": self.broker_id}, callback=done,
                                 timeout_ms=METADATA_REQUEST_TIMEOUT_MS)

    def _on_sub(self, frames: list[bytes]) -> None:
        if len(frames) < 4 or frames[1] != P.VERSION or frames[2] not in METADATA_PUSH_KINDS:
            self.counters["sub_malformed"] += 1
            return
        if not self._registered or self.faults.blocks(self.config.coordinator_name):
            return
        try:
            raw = wire.unpack(frames[3])
            version = raw["version"]
            if not isinstance(version, int):
                raise TypeError("version must be an integer")
            if self.guard.refuses(raw.get("cluster_id"), raw.get("state_id"), version):
                return  # another cluster's coordinator, or an older state's: keep what we have
            if frames[2] == P.PUB_METADATA_VERSION:
                if version > self.metadata.version or raw.get("state_id", self.metadata.state_id) != self.metadata.state_id:
                    self._refresh_metadata()  # we missed a delta, or the coordinator restarted
            elif frames[2] == P.PUB_METADATA_DELTA:
                self._apply_delta(raw)
            else:
                self.apply_metadata(raw)
        except Exception:
            self.counters["sub_malformed"] += 1
            log.exception("bad metadata push")

    def _apply_delta(self, raw: dict) -> None:
        if raw["version"] <= self.metadata.version and raw.get("state_id", "") == self.metadata.state_id:
            return
        try:
            md, changed = self.metadata.apply_delta(raw)
        except ValueError:
            self._refresh_metadata()  # a gap, or another coordinator state: the delta does not apply to ours
            return
        if not self.guard.admit(md):  # as a snapshot would be judged
            return
        self._install_metadata(md, changed)

    def apply_metadata(self, raw: dict, *, same_version: bool = False) -> None:
        """Apply a full snapshot newer than ours (or as new, with ``same_version``; or of a
        coordinator state other than ours). Metadata of another cluster, or of an older
        coordinator state than this broker has accepted, is refused (nodes/broker/identity.py)."""
        md = ClusterMetadata.from_wire(raw)
        if not self.guard.admit(md):  # another cluster's, or an older state's: keep what we have
            return
        if md.state_id == self.metadata.state_id and \
                (md.version < self.metadata.version or (md.version == self.metadata.version and not same_version)):
            return
        self._install_metadata(md, list(md.partitions()))

    def _install_metadata(self, md: ClusterMetadata, changed: list[PartitionInfo]) -> None:
        """Take ``md`` as our metadata and apply the partition states in ``changed``. Partitions
        new to this broker are opened a bounded number per reactor pass (``_open_pending``):
        each costs file creation and fsyncs, and a 1,000-partition topic opened in one pass
        kept the broker from hearing anyone for seconds."""
        self.metadata = md
        now = self.clock.now_ms()
        # first what we hold of no topic of ``md`` (its name is gone, or it names another topic
        # id now): set aside, or deleted if its topic id was deleted -- never because it is absent
        for key, part in list(self.partitions.items()):
            if self._is_other_topic(key, md):
                self._retire_partition(key, md.deleted_topic_ids)
            else:
                self._apply_topic_configs(part, md.topics[key[0]].configs)
        self.dirs.delete_strays(md.deleted_topic_ids)
        for info in changed:
            if self.broker_id in info.replicas:
                key = (info.topic, info.partition)
                part = self.partitions.get(key)
                if part is None:
                    self._to_open[key] = info  # the newest state wins
                else:
                    self._apply_partition_state(part, info, now)
        for key in [k for k in self._to_open if md.partition(*k) is None]:
            del self._to_open[key]  # gone before we came to open it
        self._open_pending()

    def _open_pending(self) -> None:
        """Open up to PARTITION_OPENS_PER_PASS_MAX partitions that metadata gave us, apply their
        state, and come back in the next pass for the rest. Each is opened under the topic id
        the metadata has now (a topic re-created meanwhile has another)."""
        now = self.clock.now_ms()
        for key in list(self._to_open)[:PARTITION_OPENS_PER_PASS_MAX]:
            info = self._to_open.pop(key)
            topic = self.metadata.topics[info.topic]
            part = self._open_partition(info.topic, info.partition, topic.configs, topic.topic_id)
            self._apply_partition_state(part, info, now)
        if self._to_open and not self._open_scheduled:
            self._open_scheduled = True
            self.reactor.call_later(0, self._open_pending_later)
        # periodic leader work (ISR checks, replica heartbeats) walks only these
        self.led_partitions = [p for p in self.partitions.values() if p.is_leader]
        self._sync_fetchers()
        self.repl_sub.sync()
        self._dirty = True

    def _open_pending_later(self) -> None:
        self._open_scheduled = False
        self._open_pending()

    def _apply_partition_state(self, part: Partition, info: PartitionInfo, now_ms: int) -> None:
        if info.leader_epoch < part.leader_epoch or info.partition_epoch < part.partition_epoch:
            return  # older than what we hold (a push that lost the race with a reply): never go back
        if info.partition_epoch == part.partition_epoch and info.leader_epoch == part.leader_epoch \
                and part.role is not None:
            return  # already applied
        if info.leader == self.broker_id:
            if not part.is_leader or info.leader_epoch > part.leader_epoch:
                log.info("%s-%d: leader at epoch %d", info.topic, info.partition, info.leader_epoch)
                part.become_leader(info.leader_epoch, info.replicas, info.isr, now_ms)
            elif set(info.isr) != part.isr:
                part.update_isr(info.isr)
        elif part.role != "follower" or info.leader_epoch > part.leader_epoch or info.leader != part.leader_id:
            self.parking.fail_partition((info.topic, info.partition), P.NOT_LEADER, self.server)
            log.info("%s-%d: follower of broker %d at epoch %d", info.topic, info.partition, info.leader, info.leader_epoch)
            part.become_follower(info.leader, info.leader_epoch, info.replicas, info.isr)
        else:
            part.isr = set(info.isr)
        part.partition_epoch = info.partition_epoch

    def _sync_fetchers(self) -> None:
        wanted: dict[int, list[Partition]] = defaultdict(list)
        for part in self.partitions.values():
            if part.role == "follower" and part.leader_id >= 0:
                wanted[part.leader_id].append(part)
        for leader_id in list(self.fetchers):
            if leader_id not in wanted or leader_id not in self.metadata.brokers:
                self.fetchers.pop(leader_id).close()
        for leader_id, parts in wanted.items():
            b = self.metadata.brokers.get(leader_id)
            if b is None:
                continue
            f = self.fetchers.get(leader_id)
            if f is None or f.endpoint != b.endpoint:
                if f is not None:
                    f.close()
                f = self.fetchers[leader_id] = ReplicaFetcher(self, leader_id, b.endpoint)
            f.set_partitions(parts)

    def _on_metadata_request(self, req: wire.Request) -> dict:
        return {"metadata": self.metadata.to_wire()}

    # -- produce -----------------------------------------------------------------------------
    def _on_produce(self, req: wire.Request) -> Any:
        parts = req.get("parts", list)
        acks = req.get("acks", int, 1)
        if acks not in (0, 1, -1):
            raise RemoteError(P.MALFORMED_REQUEST, "acks must be 0, 1 or -1 (all)")
        req.get("timeout_ms", int, 0)  # checked here: the group commit after the pass must not fail on it
        if len(parts) != len(req.payloads):
            raise RemoteError(P.MALFORMED_REQUEST, f"{len(parts)} parts but {len(req.payloads)} payload frames")
        self._produce_queue.append(req)
        return DEFER

    def _process_produces(self) -> None:
        """Group commit: every produce of this pass, appended per partition in one call."""
        queue, self._produce_queue = self._produce_queue, []
        by_partition: dict[tuple[str, int], list[tuple[int, int, bytes]]] = defaultdict(list)
        results: list[list] = []
        for ri, req in enumerate(queue):
            res: list = [None] * len(req.payloads)
            results.append(res)
            for pi, (tp, data) in enumerate(zip(req.header["parts"], req.payloads)):
                err = [-1, P.UNKNOWN_TOPIC_OR_PARTITION, f"{tp[0]}-{tp[1]} here is another topic of that name"] \
                    if self._request_topic_id_differs(req, tp) else self._produce_precheck(tp, req.header.get("acks", 1))
                if err is not None:
                    res[pi] = err
                else:
                    by_partition[(tp[0], tp[1])].append((ri, pi, data))
        for key, items in by_partition.items():
            part = self.partitions[key]
            log_end_before = part.log_end_offset
            out, written = part.append_as_leader([d for _, _, d in items], self.batch_bytes_max(key[0]))
            if written:
                self.meter.appended(key[0], part.log_end_offset - log_end_before, written)
            for (ri, pi, _), r in zip(items, out):
                results[ri][pi] = [r[0], r[1], r[2]] + ([part.leader_epoch] if not r[1] else [])
            if written:
                self.note_appended(part)
            if written and self.pubsub and len(part.replicas) > 1:
                self.repl_pub.publish_appended(part, written, [r[0] for r in out if r[1] == 0 and r[2] != "duplicate"])
            self.parking.note_changed(key)
        now = self.clock.now_ms()
        for req, res in zip(queue, results):
            self._finish_produce(req, res, now)

    def _produce_precheck(self, tp: Any, acks: int) -> list | None:
        if not (isinstance(tp, (list, tuple)) and len(tp) in (2, 3) and isinstance(tp[0], str)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in tp[1:])):
            return [-1, P.MALFORMED_REQUEST, "each part is [topic, partition] or [topic, partition, leader_epoch]"]
        part = self.partitions.get((tp[0], tp[1]))
        if part is None or tp[0] not in self.metadata.topics:
            return [-1, P.UNKNOWN_TOPIC_OR_PARTITION, f"{tp[0]}-{tp[1]} is not on this broker"]
        if not part.is_leader:
            return [-1, P.NOT_LEADER, f"leader is broker {part.leader_id}"]
        if len(tp) == 3 and tp[2] > part.leader_epoch:
            # the client knows a newer epoch than ours: we are a deposed leader that has not
            # heard yet, and must not take the write
            return [-1, P.FENCED_LEADER_EPOCH, f"leader epoch {part.leader_epoch} is older than the client's {tp[2]}"]
        if acks == -1:
            min_isr = self.min_insync_replicas(tp[0])
            if len(part.isr) < min_isr:
                return [-1, P.NOT_ENOUGH_REPLICAS, f"isr {sorted(part.isr)} is smaller than min.insync.replicas={min_isr}"]
        return None

    def batch_bytes_max(self, topic: str) -> int:
        """The largest batch the leader takes for ``topic``: its ``max.message.bytes`` (as
        Kafka's, the largest record batch), never above the broker's batch limit."""
        t = self.metadata.topics.get(topic)
        configured = (t.configs if t is not None else {}).get("max.message.bytes")
        return self.limits.batch_bytes_max if configured is None else min(int(configured), self.limits.batch_bytes_max)

    def min_insync_replicas(self, topic: str) -> int:
        t = self.metadata.topics.get(topic)
        return int((t.configs if t is not None else {}).get("min.insync.replicas", self.config.topics.min_insync_replicas))

    def _finish_produce(self, req: wire.Request, res: list, now_ms: int) -> None:
        acks = req.header.get("acks", 1)
        if acks != -1 or all(r[1] != 0 or r[0] < 0 for r in res):
            self.server.reply(req, {"results": res})
            return
        waits = []
        for (tp, data), r in zip(zip(req.header["parts"], req.payloads), res):
            if r[1] == 0:
                from engines.batch import parse_header
                waits.append(((tp[0], tp[1]), r[0] + parse_header(data).record_count))
        timeout = min(max(int(req.header.get("timeout_ms", 30_000)), 0), 300_000)
        self.parking.park_produce(ParkedProduce(req, res, waits, now_ms + timeout), self.server)

    # -- fetch -------------------------------------------------------------------------------
    def _on_fetch(self, req: wire.Request) -> Any:
        parts = req.get("parts", list)
        if len(parts) > P.PARTITIONS_MAX:
            raise RemoteError(P.REQUEST_TOO_LARGE, "too many partitions in one fetch")
        replica_id = req.get("replica_id", int, -1)
        req.get("max_bytes", int, 0)  # checked here: parked fetches re-read it later
        wait_ms = min(max(req.get("wait_ms", int, 0), 0), self.limits.fetch_wait_ms_max)
        now = self.clock.now_ms()
        header, payloads, nbytes = self.build_fetch_reply(req, replica_id, now)
        if nbytes > 0 or wait_ms == 0:
            return header, payloads
        self.parking.park_fetch(ParkedFetch(req, replica_id, now + wait_ms), self.server)
        return DEFER

    def build_fetch_reply(self, req: wire.Request, replica_id: int, now_ms: int) -> tuple[dict, list, int]:
        budget = min(max(req.header.get("max_bytes", self.limits.fetch_bytes_max), 1), self.limits.fetch_bytes_max)
        out, payloads, total = [], [], 0
        for tp in req.header["parts"]:
            if self._request_topic_id_differs(req, tp):  # another topic of that name: refresh, retry
                out.append([tp[0], tp[1], P.UNKNOWN_TOPIC_OR_PARTITION, -1, -1, -1, None])
                payloads.append(b"")
                continue
            entry, data = self._fetch_one(tp, replica_id, now_ms, budget - total)
            out.append(entry)
            payloads.append(data)
            total += len(data)
        return {"parts": out}, payloads, total

    def _fetch_one(self, tp: Any, replica_id: int, now_ms: int, budget: int) -> tuple[list, bytes]:
        if not (isinstance(tp, (list, tuple)) and len(tp) >= 3 and isinstance(tp[0], str)
                and isinstance(tp[1], int) and isinstance(tp[2], int)):
            return [None, None, P.MALFORMED_REQUEST, -1, -1, -1, None], b""
        topic, p, offset = tp[0], tp[1], tp[2]
        part = self.partitions.get((topic, p))
        if part is None:
            return [topic, p, P.UNKNOWN_TOPIC_OR_PARTITION, -1, -1, -1, None], b""
        if not part.is_leader:
            return [topic, p, P.NOT_LEADER, -1, -1, -1, None], b""
        max_bytes = min(tp[3] if len(tp) > 3 and isinstance(tp[3], int) else budget, budget)
        diverging = None
        current_epoch = tp[4] if len(tp) > 4 else -1
        if isinstance(current_epoch, int) and current_epoch > part.leader_epoch:
            return [topic, p, P.FENCED_LEADER_EPOCH, -1, -1, -1, None], b""  # we are deposed
        if replica_id >= 0:
            if replica_id not in part.replicas or replica_id == self.broker_id:
                return [topic, p, P.NOT_LEADER, -1, -1, -1, None], b""  # only followers replicate
            last_epoch = tp[5] if len(tp) > 5 and isinstance(tp[5], int) else -1
            diverging = part.divergence(offset, last_epoch)
            if diverging is None and offset > part.log_end_offset:
                # past our log end it cannot be our data (a follower that sent no epoch): not
                # progress, as on the REPLICA_ACK path
                return [topic, p, P.OFFSET_OUT_OF_RANGE, part.high_watermark, part.log_end_offset,
                        part.log_start_offset, None], b""
            if diverging is None and part.record_follower_fetch(replica_id, offset, now_ms):
                self.parking.note_changed((topic, p))
        upto = part.log_end_offset if replica_id >= 0 else part.high_watermark
        if replica_id < 0 and not part.log_start_offset <= offset <= part.log_end_offset:
            # a consumer past the log end (e.g. after an unclean election) must reset, not wait forever
            return [topic, p, P.OFFSET_OUT_OF_RANGE, part.high_watermark, part.log_end_offset,
                    part.log_start_offset, None], b""
        head = [topic, p, 0, part.high_watermark, part.log_end_offset, part.log_start_offset, diverging]
        if diverging is not None or max_bytes <= 0:
            return head, b""
        try:
            data = part.read(offset, max_bytes, upto)
        except OffsetOutOfRange:
            head[2] = P.OFFSET_OUT_OF_RANGE
            return head, b""
        except EngineError as e:
            log.error("%s-%d read failed: %s", topic, p, e)
            head[2] = P.STORAGE_ERROR
            return head, b""
        if replica_id < 0 and data:
            self.meter.fetched(topic, data)
        return head, data

    def _on_replica_ack(self, req: wire.Request) -> Any:
        """One-way from a follower: its log end offset after appending from the stream."""
        follower = req.header.get("broker_id")
        parts = req.header.get("parts")
        if isinstance(follower, int) and isinstance(parts, list):
            now = self.clock.now_ms()
            for entry in parts[:P.PARTITIONS_MAX]:
                if not (isinstance(entry, list) and len(entry) == 4):
                    continue
                part = self.partitions.get((entry[0], entry[1]))
                # past our log end it cannot be our data (a divergent tail): not progress
                if part is not None and part.is_leader and entry[3] == part.leader_epoch and isinstance(entry[2], int) \
                        and entry[2] <= part.log_end_offset:
                    if part.record_follower_fetch(follower, entry[2], now):
                        self.parking.note_changed((entry[0], entry[1]))
        return DEFER  # one-way: no reply

    def mark_dirty(self, key: tuple[str, int] | None = None) -> None:
        """Something was appended or a high watermark moved (of partition ``key``; None: of
        any): re-check parked requests."""
        if key is None:
            self._dirty = True
        else:
            self.parking.note_changed(key)

    # -- list offsets --------------------------------------------------------------------------
    def _on_list_offsets(self, req: wire.Request) -> dict:
        """parts: [[topic, partition, spec]] with spec -2 earliest, -1 latest, >=0 timestamp."""
        out = []
        for tp in req.get("parts", list):
            if not (isinstance(tp, (list, tuple)) and len(tp) == 3 and isinstance(tp[0], str)
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in tp[1:])):
                out.append([None, None, P.MALFORMED_REQUEST, -1])
                continue
            part = self.partitions.get((tp[0], tp[1]))
            if part is None or self._request_topic_id_differs(req, tp):
                out.append([tp[0], tp[1], P.UNKNOWN_TOPIC_OR_PARTITION, -1])
            elif not part.is_leader:
                out.append([tp[0], tp[1], P.NOT_LEADER, -1])
            else:
                out.append([tp[0], tp[1], 0, part.offset_for_spec(tp[2])])
        return {"parts": out}

    # -- the per-pass hook and timers ------------------------------------------------------------
    def _after_pass(self) -> None:
        if self._produce_queue:
            self._process_produces()
        if self._dirty or self.parking.has_changes() or self.parking.has_due(self.clock.now_ms()):
            if self._dirty:
                self.parking.note_all_changed()
            self._dirty = False
            self.parking.service(self, self.clock.now_ms())

    def _check_isr(self) -> None:
        self.isr_proposer.check(self.led_partitions, self.clock.now_ms(),
                                self.config.replication.replica_lag_time_max_ms)

    def _resume_after_stall(self, now_ms: int, stalled_ms: int) -> None:
        """Followers' lag clocks move forward by the stall (capped at now): silence we did not
        listen to drops nobody, lag we did see still counts."""
        for part in self.partitions.values():
            for st in part.followers.values():
                # the stall is forgiven, the lag heard before it is not (repeated stalls)
                st.last_caught_up_ms = min(now_ms, st.last_caught_up_ms + stalled_ms)

    def _send_alter_isr(self, header: dict, callback: Any) -> None:
        self.coordinator.request(P.ALTER_ISR, header, callback=callback, timeout_ms=ALTER_ISR_TIMEOUT_MS)

    def _reregister_as_new_incarnation(self) -> None:
        """We were fenced (another broker leads a partition we thought ours): announce a new
        process incarnation, which the coordinator treats as a restart -- it moves leadership
        away from epochs this process may not have all the data of -- and start over from the
        metadata it answers with. Only for real fencing: a stale ISR view just refreshes."""
        self.incarnation = os.urandom(8).hex()
        self._registered = False
        self.reactor.call_later(0, self._register)

    def _apply_retention(self) -> None:
        now = self.clock.wall_ms()
        for key, part in list(self.partitions.items()):
            try:
                # never past the HW: records not on every ISR member yet are not deletable
                part.engine.apply_retention(now, part.high_watermark)
                part.epochs.truncate_from_start(part.log_start_offset)
            except EngineError as e:
                log.error("%s-%d retention failed: %s", key[0], key[1], e)

    def _persist_identity(self) -> None:
        try:
            self.guard.persist()
        except OSError as e:
            log.error("cannot write %s: %s", self.guard.path, e)

    def note_appended(self, part: Partition) -> None:
        """Something was appended to ``part``: the fsync-interval timer looks at it (and, so that
        idle partitions cost nothing, only at partitions appended to lately)."""
        self._unflushed[(part.topic, part.partition)] = self.clock.now_ms()

    def _flush_due(self) -> None:
        now = self.clock.now_ms()
        # a partition silent for a few intervals has had a call with its interval passed: flushed
        settled_ms = UNFLUSHED_INTERVALS_MAX * self.storage.fsync_interval_ms
        for key, appended_ms in list(self._unflushed.items()):
            part = self.partitions.get(key)
            try:
                flushed = part is not None and part.engine.maybe_flush(now)
            except EngineError as e:
                log.error("%s-%d flush failed: %s", key[0], key[1], e)
                continue
            if part is None or flushed or now - appended_ms >= settled_ms:
                del self._unflushed[key]

    def _checkpoint_high_watermarks(self) -> None:
        """Write each partition's HW if it moved: a restarted leader serves it at once."""
        for part in self.partitions.values():
            part.checkpoint_high_watermark()

    # -- stats / lifecycle ------------------------------------------------------------------
    def heartbeat_fields(self) -> dict[str, Any]:
        return dict(super().heartbeat_fields(), broker_id=self.broker_id, incarnation=self.incarnation,
                    metadata_version=self.metadata.version, cluster_id=self.guard.cluster_id)

    def _on_ping(self, req: wire.Request) -> dict:
        return dict(super()._on_ping(req), engine=self.storage.engine, strays=len(self.dirs.strays),
                    metadata_refused=self.guard.last_refusal)

    def stats(self) -> dict[str, Any]:
        parts = []
        for (t, p), part in sorted(self.partitions.items()):
            parts.append({"topic": t, "partition": p, "role": part.role, "leader_epoch": part.leader_epoch,
                          "log_start_offset": part.log_start_offset, "log_end_offset": part.log_end_offset,
                          "high_watermark": part.high_watermark, "isr": sorted(part.isr),
                          "size_bytes": part.engine.size_bytes})
        return {"broker_id": self.broker_id, "engine": self.storage.engine, "partitions": parts,
                "parked": self.parking.size, "metadata_version": self.metadata.version,
                "fetchers": [f.stats() for f in self.fetchers.values()],
                "disk": _disk_usage(self.data_dir), "cluster_id": self.guard.cluster_id,
                "metadata_refused": self.guard.last_refusal, "strays": len(self.dirs.strays),
                "stray_partitions": sorted(self.dirs.strays)[:STRAYS_SHOWN_MAX],
                "other_engine_data": dict(self.dirs.other_engines)}

    def close(self) -> None:
        for f in self.fetchers.values():
            f.close()
        self.repl_sub.close()
        for part in self.partitions.values():
            try:
                part.close()
            except EngineError as e:
                log.error("close %s-%d: %s", part.topic, part.partition, e)
        self._persist_identity()
        self.coordinator.close()
        self.sub.close(0)
        super().close()


def _disk_usage(path: Path) -> dict:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {"total_bytes": total, "free_bytes": free, "used_percent": round(100 * (1 - free / total), 1) if total else 0}
