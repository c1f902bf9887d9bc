"""The broker node: the partition replicas of one broker (``nodes/broker/core.py``, Kafka's
ReplicaManager), the Loom ROUTER handlers that serve them (``nodes/broker/handlers.py``,
Kafka's KafkaApis), and what connects them to the cluster: registration and metadata from the
coordinator (PUB/SUB push, plus a request at start; which pushes are taken, and when a snapshot
is asked for: ``nodes/broker/metadata_intake.py``), replica fetchers, the replication stream,
and the timers (ISR checks, retention, flushes, high-watermark checkpoints).

A new protocol front end is built here beside ``RequestHandlers`` with the same core (see the
core's module docstring).

Not thread-safe: everything runs on the reactor's thread.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from engines.api import EngineError
from engines.checks import inject_sync_failure
from fabric import protocol as P
from fabric import wire
from fabric.config import LoomConfig
from fabric.errors import LoomError, RemoteError
from fabric.metadata import ClusterMetadata, PartitionInfo
from fabric.reactor import Timer
from fabric.rpc import RpcClient
from fabric.stall import StallWatch
from fabric.zmtp_sub import ZmtpSubscriber
from nodes.base import Node
from nodes.broker.core import BrokerCore
from nodes.broker.core_timers import CACHE_SHARE_INTERVAL_MS
from nodes.broker.fetcher import FetchSettings, LeaderEndpoint, ReplicaFetcher
from nodes.broker.flusher import Flusher
from nodes.broker.handlers import RequestHandlers
from nodes.broker.hw_checkpoint import HW_CHECKPOINT_INTERVAL_MS
from nodes.broker.identity import VERSION_PERSIST_INTERVAL_MS, MetadataGuard
from nodes.broker.isr import ALTER_ISR_TIMEOUT_MS, IsrProposer
from nodes.broker.metadata_intake import METADATA_REQUEST_TIMEOUT_MS, METADATA_RETRY_MS, MetadataIntakeMixin
from nodes.broker.meter import BrokerMeter
from nodes.broker.partition import Partition
from nodes.broker.partition_dirs import PartitionDirs
from nodes.broker.producer_snapshots import PRODUCER_SNAPSHOT_PASS_INTERVAL_MS
from nodes.broker.replication import REPLICA_HEARTBEAT_INTERVAL_MS, ReplicationPublisher, ReplicationSubscriber

log = logging.getLogger(__name__)

ISR_CHECK_INTERVAL_MS = 250
REGISTER_REFUSED_RETRY_MS = 2000  # a coordinator of another cluster, a duplicate broker id: ask again, slowly
STRAYS_SHOWN_MAX = 100  # in STATS
PARTITION_OPENS_PER_PASS_MAX = 25  # new partitions opened per reactor pass (each creates files)
PARTITION_OPEN_RETRY_MS = 1000  # a pass whose opens all failed (a full disk): the next one after this
STALL_THRESHOLD_MS = 2000  # a reactor pass gap over this means this broker did not run


class Broker(MetadataIntakeMixin, Node):
    role = "broker"

    def __init__(self, config: LoomConfig, name: str, **kw: Any) -> None:
        super().__init__(config, name, **kw)
        self.broker_id: int = self.node_config.broker_id  # type: ignore[assignment]
        self.data_dir = self.take_data_dir(config.data_dir_for(name))  # raises DataDirInUse
        self.storage = config.storage_for(name)
        self.dirs = PartitionDirs(self.data_dir, self.storage.engine)
        self.guard = MetadataGuard(self.data_dir, self.broker_id)  # raises IdentityError
        self.reactor.call_every(VERSION_PERSIST_INTERVAL_MS, self._persist_identity)
        self.limits = config.limits
        self.pubsub = config.replication.transport == "pubsub"
        # interval fsyncs run on one flusher thread, never on the reactor (nodes/broker/flusher.py)
        flusher = Flusher(name) if self.storage.fsync == "interval" else None
        self.core = BrokerCore(self.broker_id, self.dirs, self.storage, self.limits, config.topics, self.clock,
                               on_appended=self._appended_as_leader, flusher=flusher, counters=self.counters)
        self.partitions = self.core.partitions  # the live table (read by tests and STATS)
        self.meter = BrokerMeter(self.metrics, self.partitions, self.storage.engine, self.data_dir,
                                 lambda: self.handlers.parking.size, lambda: bool(self.guard.last_refusal))
        self.handlers = RequestHandlers(self.core, self.server, self.clock, self.limits, self.meter)
        self.server.route(P.METADATA, self._on_metadata_request)
        self.coordinator = RpcClient(self.ctx, self.reactor, config.coordinator.endpoint, identity=name)
        coordinator_name = config.coordinator_name
        self.coordinator.drop_replies = lambda: self.faults.blocks(coordinator_name)
        self.repl_pub = ReplicationPublisher(name, self.publish_frames, self.clock, lambda: self.core.led_partitions,
                                             self.dirs.topic_id, moves_noted=self.pubsub)
        if self.pubsub:
            self.core.on_moved = self.repl_pub.note_moved  # before any partition is opened
            self.reactor.call_every(REPLICA_HEARTBEAT_INTERVAL_MS, self.repl_pub.heartbeat)
        self.fetchers: dict[int, ReplicaFetcher] = {}
        # read by the reactor thread itself (no libzmq I/O thread to wake per message); a new
        # leader's stream should start flowing within a heartbeat, not a backoff cap
        repl_stream = ZmtpSubscriber(self.reactor, messages_per_pass=P.REPLICATION_DRAIN_MESSAGES_MAX,
                                   reconnect_ivl_max_ms=config.liveness.heartbeat_interval_ms)
        self.repl_sub = ReplicationSubscriber(repl_stream, self.partitions, self.fetchers.get,
                                              is_other_topic_id=self.core.is_other_topic_id, blocked=self.faults.blocks,
                                              on_appended=self.core.follower_appended, counters=self.counters)
        repl_stream.on_message = self.repl_sub.on_message
        # the coordinator's metadata pushes, read by the reactor thread too (no libzmq socket is
        # left in a broker's poll set). The deltas published before our subscription reached the
        # coordinator's XPUB are lost to us (the zguide's slow joiner); the coordinator answers
        # each subscription with its version, and a gap makes us ask for a snapshot
        self.sub = ZmtpSubscriber(self.reactor, self._on_sub, reconnect_ivl_max_ms=config.liveness.heartbeat_interval_ms)
        self.sub.subscribe(P.TOPIC_METADATA)
        self.sub.connect(config.coordinator.pub_endpoint)
        self._dropped_push: dict | None = None  # the last push read before our registration's answer
        self.core.open_existing()
        self.reactor.after_pass(self.handlers.after_pass)
        self.isr_proposer = self.core.isr_proposer = IsrProposer(
            self.broker_id, self._send_alter_isr, refresh_metadata=self._refresh_metadata,
            on_fenced=self._reregister_as_new_incarnation, mark_dirty=lambda: self.core.changed(None))
        self._refresh_in_flight = False
        self._refresh_again = False  # asked for while one was in flight: one more after it
        self._refresh_retry: Timer | None = None  # a refused refresh, asked for again
        self._refresh_backoff_ms = METADATA_RETRY_MS
        self._to_open: dict[tuple[str, int], PartitionInfo] = {}  # in metadata, not yet opened here
        self._open_scheduled = False
        self._schedule_core_timers(config)
        # a random id per process: the coordinator treats a new one as a restart and moves
        # leadership away from epochs this process may not have all the data of
        self.incarnation = os.urandom(8).hex()
        # the process the coordinator took us for last (``incarnation`` once it accepts it):
        # named in our replica reports and ISR proposals. A process registering again as a new
        # one is not that one yet -- and refused as a duplicate (another live process is this
        # broker) never becomes it -- so what it reports and proposes meanwhile is judged as the
        # process it was: one replaced, ignored by leaders and refused by the coordinator
        self.accepted_incarnation = self.incarnation
        self._stood_aside = False  # refused as a duplicate: leads and follows nothing until taken
        self._registered = False
        self.reactor.call_later(0, self._register)

    def _schedule_core_timers(self, config: LoomConfig) -> None:
        """The core's timers and after-pass work: the stall watch, ISR checks, retention, interval
        flushes, high-watermark checkpoints, producer snapshots, page-cache sharing."""
        # a leader that did not run (SIGSTOP, a frozen host) did not hear its followers either
        self.stall_watch = StallWatch(self.clock, STALL_THRESHOLD_MS, self.core.forgive_stall)
        self.reactor.after_pass(self.stall_watch.tick)
        lag_max_ms = config.replication.replica_lag_time_max_ms
        self.reactor.call_every(ISR_CHECK_INTERVAL_MS, lambda: self.core.check_isr(lag_max_ms))
        self.reactor.call_every(config.topics.retention_check_interval_ms, self.core.apply_retention)
        if self.storage.fsync == "interval":
            self.reactor.call_every(self.storage.fsync_interval_ms, self.core.flush_due)
            self.reactor.after_pass(self.core.collect_flushes)
        self.reactor.call_every(HW_CHECKPOINT_INTERVAL_MS, self.core.checkpoint_high_watermarks)
        self.reactor.call_every(PRODUCER_SNAPSHOT_PASS_INTERVAL_MS, self.core.snapshot_producers_due)
        self.reactor.call_every(CACHE_SHARE_INTERVAL_MS, self.core.share_page_cache)

    @property
    def metadata(self) -> ClusterMetadata:
        return self.core.metadata

    @property
    def led_partitions(self) -> list[Partition]:
        return self.core.led_partitions

    def _appended_as_leader(self, part: Partition, records: int, batches: list, base_offsets: list[int]) -> None:
        """The core appended ``batches`` as leader: count them, and stream them to followers."""
        self.meter.appended(part.topic, records, batches)
        if self.pubsub and len(part.replicas) > 1:
            self.repl_pub.publish_appended(part, batches, base_offsets)

    def _check_isr(self) -> None:
        self.core.check_isr(self.config.replication.replica_lag_time_max_ms)

    # -- metadata ---------------------------------------------------------------------------
    def _register(self) -> None:
        """Announce this process to the coordinator; its answer (metadata in which a restart of
        ours is already accounted for) is the first metadata we act on. The answer to a
        registration of a process we have since replaced (registered again as a new one before
        it came) is dropped: the new process's registration is on its way, and that answer,
        naming the previous process, made the broker register as a new one again -- a loop."""
        incarnation = self.incarnation

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            if incarnation != self.incarnation:
                return
            if header is None:
                if err is not None and err.code == P.STALE_BROKER_EPOCH:
                    # another process of this broker registered after us: start over as a new one
                    log.error("the coordinator says this process was replaced (%s): registering as a new process",
                              err.message)
                    self._reregister_as_new_incarnation()
                    return
                if err is not None and err.code == P.DUPLICATE_BROKER_REGISTRATION:
                    # another live process is this broker: asked again, as this same process
                    # (taken once that one is dead), never as a new one (that would refence it)
                    self.guard.registration_refused(err.message, f"data directory {self.data_dir}")
                    self._stand_aside()
                    self.reactor.call_later(REGISTER_REFUSED_RETRY_MS, self._register)
                    return
                refused = err is not None and err.code == P.INCONSISTENT_CLUSTER_ID
                self.guard.registration_refused(err.message if refused else "")  # type: ignore[union-attr]
                self.reactor.call_later(REGISTER_REFUSED_RETRY_MS if refused else 200, self._register)
                return
            self._registered = True
            self.accepted_incarnation = incarnation
            self._stood_aside = False
            self.guard.registration_refused("")
            readable, update = self._read_answer(header, "registration")
            if not readable:  # registered, but with nothing to act on: again (the same process)
                self._registered = False
                self.reactor.call_later(200, self._register)
                return
            log.info("registered with the coordinator as broker %d (incarnation %s)", self.broker_id, self.incarnation)
            if update is not None:
                self._install_metadata(*update)
            dropped, self._dropped_push = self._dropped_push, None
            if dropped is not None and self._shows_gap(dropped):
                # a push read before this answer was dropped, and it is newer than the answer
                # (the coordinator's version sent at our subscription, a delta): a snapshot now
                self._refresh_metadata()
        self.coordinator.request(P.BROKER_REGISTER, {"broker_id": self.broker_id, "incarnation": incarnation,
                                                     "cluster_id": self.guard.cluster_id,
                                                     "directory_id": self.guard.directory_id},
                                 callback=done, timeout_ms=METADATA_REQUEST_TIMEOUT_MS)

    def _install_metadata(self, md: ClusterMetadata, changed: list[PartitionInfo]) -> None:
        """Take ``md`` as our metadata and apply the partition states in ``changed``. Partitions
        new to this broker are opened a bounded number per reactor pass (``_open_pending``):
        each costs file creation and fsyncs, and a 1,000-partition topic opened in one pass
        kept the broker from hearing anyone for seconds."""
        now = self.clock.now_ms()
        self.core.note_replaced_processes(md)
        # first what we hold of no topic of ``md`` (its name is gone, or it names another topic
        # id now): set aside, or deleted if its topic id was deleted -- never because it is absent
        retired: set[str] = set()
        for key, part in list(self.partitions.items()):
            if self.core.is_other_topic(key, md):
                self.core.retire_partition(key, md.deleted_topic_ids)
                retired.add(key[0])
            else:
                self.core.apply_topic_configs(part, md.topics[key[0]].configs)
        if retired:
            for topic in retired - {t for t, _ in self.partitions}:
                self.meter.forget_topic(topic)
        self.dirs.delete_strays(md.deleted_topic_ids)
        # another process is this broker: what it leads is not ours to lead (refused as a
        # duplicate, that lasted as long as the other process: writes taken on a log that is
        # not the broker's), nor ours to follow as the broker (its log counted for the broker's)
        not_us = self._stood_aside or self._names_another_process(md)
        for info in changed:
            if self.broker_id in info.replicas:
                if not_us:
                    info = dataclasses.replace(info, leader=-1)
                key = (info.topic, info.partition)
                part = self.partitions.get(key)
                if part is None:
                    self._to_open[key] = info  # the newest state wins
                else:
                    self.core.apply_partition_state(part, info, now)
        for key in [k for k in self._to_open if md.partition(*k) is None]:
            del self._to_open[key]  # gone before we came to open it
        # recorded only now: a push that failed half-way (a checkpoint that could not be
        # written) is not "already applied", so the same push or the next refresh tries again
        self.core.metadata = md
        self._open_pending()
        self._check_named_process(md)

    def _check_named_process(self, md: ClusterMetadata) -> None:
        """Metadata naming another process of this broker than us, once we registered (what we
        get is never older than our registration's answer): the coordinator took us for
        replaced -- a predecessor's registration or heartbeat read after ours (random ids have
        no order) -- and ignores our heartbeats and, through the leaders, our reports. Left
        so, the broker stayed dead while alive; it registers again as a new process instead."""
        if self._registered and self._names_another_process(md):
            log.error("the metadata names process %s of this broker, not us (%s): registering as a new process",
                      md.brokers[self.broker_id].incarnation, self.incarnation)
            self._reregister_as_new_incarnation()

    def _stand_aside(self) -> None:
        """Refused as a duplicate: lead and follow nothing until a registration takes us."""
        if not self._stood_aside:
            log.error("another live process is broker %d: leading and following nothing until the coordinator "
                      "takes this one", self.broker_id)
        self._stood_aside = True
        self._to_open = {key: dataclasses.replace(info, leader=-1) for key, info in self._to_open.items()}
        self.core.stand_aside()
        self.repl_sub.sync(self._pub_endpoint_of)
        self._sync_fetchers()

    def _names_another_process(self, md: ClusterMetadata) -> bool:
        """``md`` names a process of this broker that is neither us nor the one the coordinator
        took us for last (we register as a new process meanwhile)."""
        mine = md.brokers.get(self.broker_id)
        return mine is not None and bool(mine.incarnation) and \
            mine.incarnation not in (self.incarnation, self.accepted_incarnation)

    def _open_pending(self) -> None:
        """Open up to PARTITION_OPENS_PER_PASS_MAX partitions that metadata gave us, apply their
        state, and come back in the next pass for the rest. Each is opened under the topic id
        the metadata has now (a topic re-created meanwhile has another)."""
        now = self.clock.now_ms()
        batch = list(self._to_open)[:PARTITION_OPENS_PER_PASS_MAX]
        failed = 0
        for key in batch:
            info = self._to_open.pop(key)
            topic = self.metadata.topics[info.topic]
            try:
                part = self.core.open_partition(info.topic, info.partition, topic.configs, topic.topic_id)
                self.core.apply_partition_state(part, info, now)
            except LoomError as e:  # a storage error (a full disk): this one again later, the rest go on
                self._to_open[key] = info
                failed += 1
                log.error("%s-%d: cannot open the replica (tried again within %d ms): %s",
                          info.topic, info.partition, PARTITION_OPEN_RETRY_MS, e)
        if self._to_open and not self._open_scheduled:
            self._open_scheduled = True
            self.reactor.call_later(PARTITION_OPEN_RETRY_MS if failed == len(batch) else 0, self._open_pending_later)
        self.core.partitions_changed()
        # subscriptions first: the stream-ready fetch each new follower sends then leaves after
        # them, and a batch published once it is answered is less likely to find no
        # subscription at the leader's PUB (one that does is repaired at the next replica
        # heartbeat, within REPLICA_HEARTBEAT_INTERVAL_MS)
        self.repl_sub.sync(self._pub_endpoint_of)
        self._sync_fetchers()

    def _open_pending_later(self) -> None:
        self._open_scheduled = False
        self._open_pending()

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
                f = self.fetchers[leader_id] = self._new_fetcher(leader_id, b.endpoint)
            f.set_partitions(parts)

    def _new_fetcher(self, leader_id: int, endpoint: str) -> ReplicaFetcher:
        cfg = self.config.replication
        client = RpcClient(self.ctx, self.reactor, endpoint, identity=self.name)
        leader = LeaderEndpoint(client, endpoint, leader_id, self.broker_id,
                                blocked=lambda: self.faults.blocks_broker(leader_id),
                                topic_ids_of=lambda topics: self.metadata.topic_ids_of(topics),
                                incarnation=lambda: self.accepted_incarnation)
        return ReplicaFetcher(leader, FetchSettings(cfg.transport == "fetch", cfg.replica_fetch_wait_ms,
                                                    cfg.replica_fetch_bytes_max),
                              self.reactor.call_later, self.core.follower_appended, self.counters)

    def _pub_endpoint_of(self, broker_id: int) -> str | None:
        b = self.metadata.brokers.get(broker_id)
        return None if b is None else b.pub_endpoint

    def _on_faults(self, req: wire.Request) -> dict:
        """The nodes' fault injection, and ``fail_next_fsync``: the next data fdatasync of this
        broker (on the reactor or the flusher thread) fails with EIO -- which stops it
        (``engines.api.StorageFailed``)."""
        if self.faults.enabled and req.header.get("fail_next_fsync") is True:
            inject_sync_failure(errno.EIO)
            log.warning("fault injection: the next fdatasync fails")
            return {"fail_next_fsync": True}
        return super()._on_faults(req)

    def _on_metadata_request(self, req: wire.Request) -> dict:
        return {"metadata": self.metadata.to_wire()}

    def _send_alter_isr(self, header: dict, callback: Any) -> None:
        # names the process (the coordinator refuses a proposal of one it does not take for
        # this broker's: a duplicate's, refused, still leading in its own view)
        self.coordinator.request(P.ALTER_ISR, dict(header, incarnation=self.accepted_incarnation), callback=callback,
                                 timeout_ms=ALTER_ISR_TIMEOUT_MS)

    def _reregister_as_new_incarnation(self) -> None:
        """We were fenced (another broker leads a partition we thought ours): announce a new
        process incarnation, which the coordinator treats as a restart -- it moves leadership
        away from epochs this process may not have all the data of -- and start over from the
        metadata it answers with. Only for real fencing: a stale ISR view just refreshes."""
        self.incarnation = os.urandom(8).hex()
        self._registered = False
        self.reactor.call_later(0, self._register)

    def _persist_identity(self) -> None:
        try:
            self.guard.persist()
        except EngineError as e:
            log.error("cannot write %s: %s", self.guard.path, e)

    # -- stats / lifecycle ------------------------------------------------------------------
    def heartbeat_fields(self) -> dict[str, Any]:
        return dict(super().heartbeat_fields(), broker_id=self.broker_id, incarnation=self.incarnation,
                    metadata_version=self.metadata.version, cluster_id=self.guard.cluster_id,
                    directory_id=self.guard.directory_id or None)

    def _on_ping(self, req: wire.Request) -> dict:
        return dict(super()._on_ping(req), engine=self.storage.engine, strays=len(self.dirs.strays),
                    metadata_refused=self.guard.last_refusal)

    def stats(self) -> dict[str, Any]:
        parts = []
        for (t, p), part in sorted(self.partitions.items()):
            parts.append({"topic": t, "partition": p, "role": part.role, "leader_epoch": part.leader_epoch,
                          "log_start_offset": part.log_start_offset, "log_end_offset": part.log_end_offset,
                          "high_watermark": part.high_watermark, "isr": sorted(part.isr),
                          "size_bytes": part.engine.size_bytes,
                          # >0: the idempotent-producer table may lack producers whose batches lie
                          # below this offset (it refuses their possibly written retries until the
                          # log start passes it; nodes/broker/producers.py)
                          "producers_forgot_below": part.producers.forgot_below})
        return {"broker_id": self.broker_id, "engine": self.storage.engine, "partitions": parts,
                "parked": self.handlers.parking.size, "metadata_version": self.metadata.version,
                "fetchers": [f.stats() for f in self.fetchers.values()],
                "replication_stream": dict(self.repl_sub.stream.counters),  # its connections' counts
                "metadata_stream": dict(self.sub.counters),  # the coordinator's pushes: the same counts
                "disk": _disk_usage(self.data_dir), "cluster_id": self.guard.cluster_id,
                "metadata_refused": self.guard.last_refusal, "strays": len(self.dirs.strays),
                "stray_partitions": sorted(self.dirs.strays)[:STRAYS_SHOWN_MAX],
                "other_engine_data": dict(self.dirs.other_engines)}

    def close(self) -> None:
        if self._refresh_retry is not None:
            self._refresh_retry.cancel()
        for f in self.fetchers.values():
            f.close()
        self.repl_sub.stream.close()
        self.core.close()
        self._persist_identity()
        self.coordinator.close()
        self.sub.close()
        super().close()


def _disk_usage(path: Path) -> dict:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {"total_bytes": total, "free_bytes": free, "used_percent": round(100 * (1 - free / total), 1) if total else 0}
