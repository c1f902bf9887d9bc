"""The broker core: every partition replica on this broker and what may be done to them (the
role of Kafka's ReplicaManager; the request handlers are Kafka's KafkaApis).

A protocol front end decodes its own requests into the typed inputs of
``nodes/broker/messages.py``, calls the core, and encodes the typed answers. The Loom ROUTER
handlers (``nodes/broker/handlers.py``) are one such front end; a new one (a Kafka-protocol
listener) goes beside them in ``nodes/broker/``, is built by ``Broker`` with the same core, and
calls it in-process -- never through Loom's wire format. It registers a ``Waiters`` with
``add_waiters`` to park requests (acks=all writes, long-poll fetches) as the Loom handlers do.

What the core guarantees, whichever front end calls it:
- ``append``: a group commit -- every produce of one reactor pass, appended per partition in
  one engine call (one durability point); only on the leader, in the leader epoch the client
  names or a newer one, with acks=all refused while the ISR is below ``min.insync.replicas``;
  idempotent-producer duplicates answered with their first offset (``Partition``).
- ``fetch``: consumers read whole batches up to the high watermark, followers up to the log
  end; a follower's fetch offset moves the high watermark and is answered with a divergence
  (KIP-320) when its last epoch parts from ours; stale leaders are fenced by epoch.
- ``list_offset``, retention (never past the high watermark), flushing, high-watermark
  checkpoints (these timers: ``nodes/broker/core_timers.py``), leader/follower transitions by
  partition epoch (never backwards) and the leader's ISR proposals (``nodes/broker/isr.py``).
- Batches are the unit of work: the core reads batch headers only, never records.
- Waiters hear of every partition that got data or whose high watermark moved, and of every
  partition whose leadership moved away (parked writes on it are not acknowledged).

It knows nothing of frames, sockets or msgpack. Not thread-safe: everything runs on the
broker's reactor thread; a front end on another thread must hand its calls to the reactor.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict, deque
from typing import Any, Callable, Iterable, Protocol

from engines.api import CacheWindow, EngineError, OffsetOutOfRange
from engines.registry import open_engine
from fabric import protocol as P
from fabric.clock import Clock
from fabric.config import LimitsConfig, StorageConfig, TopicDefaults
from fabric.hoptrace import mark
from fabric.metadata import ClusterMetadata, PartitionInfo
from fabric.stall import forgiven_ms
# the timers' limits are importable from here as well (the timers are BrokerCore's)
from nodes.broker.core_timers import (CACHE_ACTIVE_MS, CACHE_SHARE_INTERVAL_MS, UNFLUSHED_INTERVALS_MAX,
                                      CoreTimersMixin)
from nodes.broker.flusher import Flusher
from nodes.broker.isr import IsrProposer
from nodes.broker.messages import AppendRequest, FetchEntry, FetchInput, ProduceInput, ProduceResult, TopicPartition
from nodes.broker.partition import LEADER, Partition
from nodes.broker.partition_dirs import PartitionDirs

__all__ = ["BrokerCore", "Waiters", "OnAppended", "UNFLUSHED_INTERVALS_MAX", "CACHE_ACTIVE_MS",
           "CACHE_SHARE_INTERVAL_MS"]

log = logging.getLogger(__name__)

# (partition, records, batches written, their base offsets): after every leader append
OnAppended = Callable[[Partition, int, list, list], None]


class Waiters(Protocol):
    """What a front end that parks requests hears from the core."""

    def partition_changed(self, key: TopicPartition | None) -> None:
        """``key`` got data or its high watermark moved (None: something that names no
        partition changed -- metadata, an ISR): re-check what waits on it."""

    def leadership_lost(self, key: TopicPartition, code: int) -> None:
        """``key`` is no longer led here (or is gone): fail parked writes on it with ``code``."""


class BrokerCore(CoreTimersMixin):
    def __init__(self, broker_id: int, dirs: PartitionDirs, storage: StorageConfig, limits: LimitsConfig,
                 topic_defaults: TopicDefaults, clock: Clock, *, on_appended: OnAppended | None = None,
                 flusher: Flusher | None = None, counters: Counter | None = None) -> None:
        self.broker_id = broker_id
        self.counters = counters if counters is not None else Counter()
        self.dirs = dirs
        self.storage = storage
        self.limits = limits
        self.topic_defaults = topic_defaults
        self.clock = clock
        self.metadata = ClusterMetadata.empty()  # the broker installs every newer one
        self._replaced_processes: dict[int, deque[str]] = {}  # broker -> incarnations seen replaced
        self.partitions: dict[TopicPartition, Partition] = {}
        self.led_partitions: list[Partition] = []  # periodic leader work walks only these
        self.isr_proposer: IsrProposer | None = None  # set by the broker (it sends ALTER_ISR)
        self._on_appended = on_appended
        self._waiters: list[Waiters] = []
        self._unflushed: dict[TopicPartition, int] = {}  # partition -> its latest append (ms)
        # asynchronous interval flushes (nodes/broker/flusher.py): None flushes on this thread
        self.flusher = flusher
        self._flushing: dict[TopicPartition, Any] = {}  # partition -> its job in flight
        self._flush_again: set[TopicPartition] = set()  # a job dropped as stale, refused or failed
        # given to every partition opened from now on (Partition.on_moved): the replication
        # heartbeat looks only at partitions whose position moved
        self.on_moved: Callable[[Partition], None] | None = None
        # every log's page-cache window: storage.page_cache_tail_bytes shared among the partitions
        # written to lately (share_page_cache); -1 until the first share
        self.cache_window = CacheWindow()
        self._log_ends: dict[TopicPartition, tuple[int, int]] = {}  # partition -> (log end, when it moved)
        # partitions due for a producer-state snapshot, in the order found (core_timers.py)
        self._snapshots_due: dict[TopicPartition, None] = {}

    def add_waiters(self, waiters: Waiters) -> None:
        self._waiters.append(waiters)

    def changed(self, key: TopicPartition | None) -> None:
        for w in self._waiters:
            w.partition_changed(key)

    def _leadership_lost(self, key: TopicPartition, code: int) -> None:
        for w in self._waiters:
            w.leadership_lost(key, code)

    # -- topic settings ------------------------------------------------------------------------
    def _topic_configs(self, topic: str) -> dict:
        t = self.metadata.topics.get(topic)
        return t.configs if t is not None else {}

    def batch_bytes_max(self, topic: str) -> int:
        """The largest batch the leader takes for ``topic``: its ``max.message.bytes`` (as
        Kafka's, the largest record batch), never above the broker's batch limit."""
        configured = self._topic_configs(topic).get("max.message.bytes")
        return self.limits.batch_bytes_max if configured is None else min(int(configured), self.limits.batch_bytes_max)

    def min_insync_replicas(self, topic: str) -> int:
        return int(self._topic_configs(topic).get("min.insync.replicas", self.topic_defaults.min_insync_replicas))

    def _retention(self, configs: dict) -> tuple[int, int]:
        """(retention_ms, retention_bytes) of a topic: its configs, else the cluster defaults."""
        return (int(configs.get("retention.ms", self.topic_defaults.retention_ms)),
                int(configs.get("retention.bytes", self.topic_defaults.retention_bytes)))

    def apply_topic_configs(self, part: Partition, configs: dict) -> None:
        """Topic configs change at run time (``loom topic alter``), and partitions opened from
        disk at start-up did not know them yet: engines read retention from their config."""
        part.engine.config.retention_ms, part.engine.config.retention_bytes = self._retention(configs)

    # -- partitions on disk --------------------------------------------------------------------
    def open_existing(self) -> None:
        for topic, p in self.dirs.scan():
            self.open_partition(topic, p, {})
        self.dirs.report_other_engines()

    def open_partition(self, topic: str, partition: int, configs: dict, topic_id: str = "") -> Partition:
        """The replica of ``topic``-``partition`` (opened from its directory on first use).
        Raises EngineError."""
        key = (topic, partition)
        part = self.partitions.get(key)
        if part is not None:
            return part
        d = self.dirs.engine_dir(key, topic_id)  # per-engine: its log and its epoch checkpoint
        engine_config = self.storage.engine_config(*self._retention(configs), self.limits.batch_bytes_max,
                                                   self.cache_window)
        engine = open_engine(self.storage.engine, str(d / "log"), engine_config)
        if engine.recovery.truncated_bytes:
            log.warning("%s-%d: recovery cut %d bytes: %s", topic, partition,
                        engine.recovery.truncated_bytes, engine.recovery.message)
        part = Partition(topic, partition, self.broker_id, engine, str(d))
        part.on_moved = self.on_moved
        part.before_first_write = lambda: self.dirs.make_durable(key)
        self.partitions[key] = part
        return part

    def retire_partition(self, key: TopicPartition, deleted_topic_ids: tuple[str, ...]) -> None:
        """Stop serving a replica the metadata no longer has (or has under another topic id):
        delete it if its topic id was deleted explicitly, else set its directory aside."""
        self._leadership_lost(key, P.UNKNOWN_TOPIC_OR_PARTITION)
        part = self.partitions.pop(key, None)
        self._log_ends.pop(key, None)
        if part is not None:
            try:
                part.close()
            except EngineError as e:  # its descriptors are closed all the same: deleted or set aside still
                log.error("close %s-%d: %s", key[0], key[1], e)
        topic_id = self.dirs.topic_id(key)
        if topic_id and topic_id in deleted_topic_ids:
            self.dirs.delete(key)
            log.info("%s-%d: deleted (topic id %s was deleted)", key[0], key[1], topic_id)
        else:
            log.warning("%s-%d: topic id %s is not in the metadata and was not deleted: set aside as %s (kept, "
                        "not served)", key[0], key[1], topic_id or "(none)", self.dirs.set_aside(key))

    def is_other_topic_id(self, key: TopicPartition, topic_id: Any) -> bool:
        """True if a peer names this partition's topic by another id than our replica's: one of
        us has metadata from before the topic was deleted and re-created. False for a
        partition not held here."""
        if not isinstance(topic_id, str) or not topic_id or key not in self.partitions:
            return False
        held = self.dirs.topic_id(key)
        return bool(held) and held != topic_id

    def is_other_topic(self, key: TopicPartition, md: ClusterMetadata) -> bool:
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

    # -- leadership ---------------------------------------------------------------------------
    def apply_partition_state(self, part: Partition, info: PartitionInfo, now_ms: int) -> None:
        """Become leader or follower as ``info`` says, unless it is older than what we hold."""
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
            self._leadership_lost((info.topic, info.partition), P.NOT_LEADER)
            log.info("%s-%d: follower of broker %d at epoch %d", info.topic, info.partition, info.leader, info.leader_epoch)
            part.become_follower(info.leader, info.leader_epoch, info.replicas, info.isr)
        else:
            part.follow_isr(info.isr)
        part.set_partition_epoch(info.partition_epoch)

    def stand_aside(self) -> None:
        """Lead and follow nothing: this process is not its broker's (another live process of
        it is; the coordinator refused us as a duplicate). Parked writes are answered
        not_leader. The epochs held stay (nothing older is taken later): the metadata of the
        registration that takes us -- newer, our restart fences every partition of the broker
        -- says again what each partition is here."""
        for key, part in self.partitions.items():
            if part.role is not None and part.leader_id >= 0:
                self._leadership_lost(key, P.NOT_LEADER)
                part.become_follower(-1, part.leader_epoch, part.replicas, sorted(part.isr))
        self.partitions_changed()

    def partitions_changed(self) -> None:
        """Call after leadership changed anywhere: leader work walks ``led_partitions``."""
        self.led_partitions = [p for p in self.partitions.values() if p.is_leader]
        self.changed(None)

    def check_isr(self, lag_time_max_ms: int) -> None:
        """Propose the ISR changes due on the partitions we lead (one ALTER_ISR)."""
        if self.isr_proposer is not None:
            self.isr_proposer.check(self.led_partitions, self.clock.now_ms(), lag_time_max_ms)

    def forgive_stall(self, now_ms: int, stalled_ms: int) -> None:
        """Followers' lag clocks move forward by a stall of this broker (capped at now): silence
        we did not listen to drops nobody, lag we did see still counts."""
        for part in self.partitions.values():
            for st in part.followers.values():
                # the stall is forgiven, the lag heard before it is not (repeated stalls)
                st.last_caught_up_ms = forgiven_ms(st.last_caught_up_ms, now_ms, stalled_ms)

    # -- produce -------------------------------------------------------------------------------
    def append(self, requests: Iterable[AppendRequest]) -> list[list[ProduceResult]]:
        """Group commit: the batches of every request, appended per partition in one call.
        Returns per request one ProduceResult per input, in order."""
        by_partition: dict[TopicPartition, list[tuple[list, int, ProduceInput]]] = defaultdict(list)
        results: list[list[Any]] = []
        for r in requests:
            res: list[Any] = [None] * len(r.inputs)
            results.append(res)
            for pi, inp in enumerate(r.inputs):
                err = self._produce_precheck(inp, r.acks, r.topic_ids, r.internal)
                if err is not None:
                    res[pi] = err
                else:
                    by_partition[(inp.topic, inp.partition)].append((res, pi, inp))
        for key, items in by_partition.items():
            part = self.partitions[key]
            log_end_before = part.log_end_offset
            mark("produce.append")
            out, written = part.append_as_leader([inp.data for _, _, inp in items], self.batch_bytes_max(key[0]),
                                                 [inp.flags for _, _, inp in items])
            mark("produce.appended")
            epoch = part.leader_epoch
            for (res, pi, _), (offset, code, message) in zip(items, out):
                res[pi] = ProduceResult(offset, code, message, None if code else epoch)
            if written:
                self._unflushed[key] = self.clock.now_ms()
                if self._on_appended is not None:
                    self._on_appended(part, part.log_end_offset - log_end_before, written,
                                      [o[0] for o in out if o[1] == 0 and o[2] != "duplicate"])
            self.changed(key)
        return results

    def _produce_precheck(self, inp: ProduceInput, acks: int, topic_ids: dict | None,
                          internal: bool = False) -> ProduceResult | None:
        if not internal and inp.topic.startswith(P.INTERNAL_TOPIC_PREFIX):
            return ProduceResult(-1, P.INVALID_TOPIC, f"cannot append to internal topic {inp.topic}: only the "
                                                      "coordinator writes it")
        key = (inp.topic, inp.partition)
        part = self.partitions.get(key)
        if topic_ids and part is not None and self.is_other_topic_id(key, topic_ids.get(inp.topic)):
            return ProduceResult(-1, P.UNKNOWN_TOPIC_OR_PARTITION, f"{inp.topic}-{inp.partition} here is another "
                                                                   "topic of that name")
        if part is None or inp.topic not in self.metadata.topics:
            return ProduceResult(-1, P.UNKNOWN_TOPIC_OR_PARTITION, f"{inp.topic}-{inp.partition} is not on this broker")
        if not part.is_leader:
            return ProduceResult(-1, P.NOT_LEADER, f"leader is broker {part.leader_id}")
        if inp.leader_epoch > part.leader_epoch:
            # the client knows a newer epoch than ours: we are a deposed leader that has not
            # heard yet, and must not take the write
            return ProduceResult(-1, P.FENCED_LEADER_EPOCH, f"leader epoch {part.leader_epoch} is older than the "
                                                            f"client's {inp.leader_epoch}")
        if acks == -1:
            min_isr = self.min_insync_replicas(inp.topic)
            if len(part.isr) < min_isr:
                return ProduceResult(-1, P.NOT_ENOUGH_REPLICAS, f"isr {sorted(part.isr)} is smaller than "
                                                                f"min.insync.replicas={min_isr}")
        return None

    def replicated(self, key: TopicPartition, offset: int) -> bool:
        """acks=all: the high watermark of ``key`` reached ``offset`` -- or the partition is not
        led here any more (its waiters were failed by ``leadership_lost``)."""
        part = self.partitions.get(key)
        return part is None or part.role != LEADER or part.high_watermark >= offset

    def isr_shortfall(self, key: TopicPartition) -> str | None:
        """Why an acks=all write on ``key`` whose HW arrived is not acknowledged after all: an
        ISR that shrank below min.insync.replicas meanwhile holds fewer copies than acks=all
        promised (Kafka: not_enough_replicas_after_append). None: it is."""
        part = self.partitions.get(key)
        if part is not None and part.is_leader and len(part.isr) < self.min_insync_replicas(key[0]):
            return f"isr {sorted(part.isr)} shrank below min.insync.replicas"
        return None

    # -- fetch ---------------------------------------------------------------------------------
    def fetch(self, inp: FetchInput, replica_id: int, now_ms: int, budget_bytes: int,
              counts: bool = True) -> tuple[FetchEntry, bytes]:
        """Whole batches of one partition from ``inp.offset``: up to the HW for a consumer
        (``replica_id`` -1), the LEO for a follower, whose fetch offset counts as its LEO
        unless ``counts`` is False (the fetch came from a process of it that was replaced)."""
        topic, p, offset = inp.topic, inp.partition, inp.offset
        part = self.partitions.get((topic, p))
        if part is None:
            return FetchEntry.failed(topic, p, P.UNKNOWN_TOPIC_OR_PARTITION), b""
        if not part.is_leader:
            return FetchEntry.failed(topic, p, P.NOT_LEADER), b""
        max_bytes = budget_bytes if inp.max_bytes is None else min(inp.max_bytes, budget_bytes)
        diverging = None
        if isinstance(inp.current_epoch, int) and inp.current_epoch > part.leader_epoch:
            return FetchEntry.failed(topic, p, P.FENCED_LEADER_EPOCH), b""  # we are deposed
        if replica_id >= 0:
            if replica_id not in part.replicas or replica_id == self.broker_id:
                return FetchEntry.failed(topic, p, P.NOT_LEADER), b""  # only followers replicate
            diverging = part.divergence(offset, inp.last_epoch)
            if diverging is None and offset > part.log_end_offset:
                # past our log end it cannot be our data (a follower that sent no epoch): not
                # progress, as on the REPLICA_ACK path
                return FetchEntry(topic, p, P.OFFSET_OUT_OF_RANGE, part.high_watermark, part.log_end_offset,
                                  part.log_start_offset, None), b""
            if diverging is None and counts and part.record_follower_fetch(replica_id, offset, now_ms):
                self.changed((topic, p))
        elif 0 <= inp.last_epoch <= part.leader_epoch:
            # a consumer that names the epoch of the last record it read (KIP-320): told where our
            # log parts from the one it read -- a log an unclean election truncated under its
            # position -- it reads on from there; past our log end it was reset by its policy,
            # past the records written since the truncation. (An epoch newer than ours is not
            # judged: it read a newer leader, which the metadata will name.)
            diverging = part.consumer_divergence(offset, inp.last_epoch)
            if diverging is not None:
                return FetchEntry(topic, p, 0, part.high_watermark, part.log_end_offset, part.log_start_offset,
                                  diverging), b""
        upto = part.log_end_offset if replica_id >= 0 else part.high_watermark
        if replica_id < 0 and not part.log_start_offset <= offset <= part.log_end_offset:
            # a consumer past the log end (e.g. after an unclean election) must reset, not wait forever
            return FetchEntry(topic, p, P.OFFSET_OUT_OF_RANGE, part.high_watermark, part.log_end_offset,
                              part.log_start_offset, None), b""
        entry = FetchEntry(topic, p, 0, part.high_watermark, part.log_end_offset, part.log_start_offset, diverging)
        if diverging is not None or max_bytes <= 0:
            return entry, b""
        try:
            return entry, part.read(offset, max_bytes, upto)
        except OffsetOutOfRange:
            return entry._replace(error=P.OFFSET_OUT_OF_RANGE), b""
        except EngineError as e:
            log.error("%s-%d read failed: %s", topic, p, e)
            return entry._replace(error=P.STORAGE_ERROR), b""

    def current_process(self, broker_id: int, incarnation: Any) -> bool:
        """A follower's report (FETCH, REPLICA_ACK) does not come from a process of ``broker_id``
        that the metadata has shown replaced by a restart. Such a report, read late -- after the
        restart's new partition epoch made us forget what that follower reported -- must not
        count: its successor may hold less (Kafka's broker epoch, KIP-903). A process the
        metadata does not name yet counts (its restart is not committed: the coordinator may be
        away, and what it reports is its own log), as does a report naming none (an older
        follower)."""
        replaced = self._replaced_processes.get(broker_id)
        if replaced is None or incarnation not in replaced:
            return True
        b = self.metadata.brokers.get(broker_id)
        if b is not None and b.incarnation == incarnation:
            return True
        self.counters["stale_follower_reports"] += 1
        return False

    def note_replaced_processes(self, new: ClusterMetadata) -> None:
        """Before ``new`` is installed: the broker processes it shows replaced (a broker whose
        named incarnation changed, and those it lists replaced: a process named only in
        metadata we never held -- a push lost between two restarts -- is one of these), the
        latest few per broker."""
        for bid, b in new.brokers.items():
            old = self.metadata.brokers.get(bid)
            gone = list(b.replaced)
            if old is not None and old.incarnation and b.incarnation != old.incarnation:
                gone.append(old.incarnation)
            if gone:
                replaced = self._replaced_processes.setdefault(bid, deque(maxlen=P.REPLACED_PROCESSES_KEPT))
                replaced.extend(i for i in gone if i not in replaced and i != b.incarnation)

    def follower_position(self, follower_id: int, key: TopicPartition, log_end_offset: int, leader_epoch: int,
                          now_ms: int) -> None:
        """A follower's log end offset in ``leader_epoch`` (REPLICA_ACK): progress if it can be
        our data."""
        part = self.partitions.get(key)
        if part is None or leader_epoch != part.leader_epoch or part.role != LEADER:
            return
        ours = part.engine.log_end_offset  # read once: every follower's ack comes here
        # past our log end it cannot be our data (a divergent tail): not progress
        if log_end_offset <= ours and part.record_follower_fetch(follower_id, log_end_offset, now_ms, ours):
            self.changed(key)

    def follower_appended(self, part: Partition) -> None:
        """A follower's log grew (replication stream or fetch): flush it in time, wake waiters."""
        key = (part.topic, part.partition)
        self._unflushed[key] = self.clock.now_ms()
        self.changed(key)

    # -- list offsets --------------------------------------------------------------------------
    def list_offset(self, key: TopicPartition, spec: int) -> tuple[int, int]:
        """(error code, offset) for ``spec``: -2 earliest, -1 latest (the HW), >= 0 a timestamp;
        offset_not_available (retriable) with the HW so far from a new leader that does not know
        its HW yet."""
        part = self.partitions.get(key)
        if part is None:
            return P.UNKNOWN_TOPIC_OR_PARTITION, -1
        if not part.is_leader:
            return P.NOT_LEADER, -1
        offset = part.offset_for_spec(spec)
        # not known yet: the HW so far goes with the code (a lower bound of the end: every
        # offset below it is committed, which is all the coordinator's check of a commit needs)
        return (P.OFFSET_NOT_AVAILABLE, part.high_watermark) if offset is None else (0, offset)

    # -- close (the timers: nodes/broker/core_timers.py) ---------------------------------------
    def close(self) -> None:
        """Close every partition (each cancels its flush job in flight and flushes itself), then
        stop the flusher thread (bounded: FLUSHER_STOP_TIMEOUT_S)."""
        for part in self.partitions.values():
            try:
                part.close()
            except EngineError as e:
                log.error("close %s-%d: %s", part.topic, part.partition, e)
        if self.flusher is not None:
            self.flusher.stop()
            self.collect_flushes()  # what ran meanwhile: errors logged, descriptors closed
