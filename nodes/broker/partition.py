"""One partition replica on a broker: the log (an engine), leader/follower state, the high
watermark, the ISR view, the leader-epoch cache and idempotent-producer state.

The leader advances the high watermark (HW) to the smallest log end offset (LEO) among the ISR
members; followers report their LEO in every replica fetch. Reads for consumers stop at the HW.
The HW is checkpointed to ``directory`` -- the engine's folder of the partition, beside its epoch
checkpoint, since both describe that engine's log (nodes/broker/partition_dirs.py) -- and
recovered from it at open, so a restarted leader serves it before its followers fetch (the file:
nodes/broker/hw_checkpoint.py).
Producer and epoch state follow the log: recorded after the write they describe, trimmed when
it is cut, and checked against the log's batch headers at open (a leader epoch that
contradicts the epoch checkpoint cuts the log there); the producer table is also snapshotted
beside the checkpoints (at close and periodically: nodes/broker/partition_snapshots.py) and
restored from a snapshot at open. What a follower does to its log (append
the leader's batches, truncate, reset, take the leader's HW) is the partition's follower half,
nodes/broker/partition_follower.py.

Invariants, checked after every method that changes the partition: ``log_start_offset <=
high_watermark <= log_end_offset``; the engine stores a follower's batches at the offsets they
carry, continuing the log end; the epoch cache increases in both columns (epochs.py). A
violation is a bug: AssertionError, which stops the node (nodes/run.py) so that the supervisor
restarts it from disk -- never an error reply.
Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from engines import batch as B
from engines.api import Engine, EngineError, StorageFull, verified_append_kwargs
from fabric import protocol as P
from fabric.buffers import Payload, stampable
from fabric.errors import RemoteError
from nodes.broker.epochs import EpochCache
from nodes.broker.hw_checkpoint import HighWatermarkCheckpoint
from nodes.broker.partition_follower import PartitionFollowerMixin
from nodes.broker.partition_snapshots import PartitionSnapshotsMixin
from nodes.broker.producer_snapshots import ProducerSnapshots
from nodes.broker.producers import ProducerStateTable
from nodes.broker.tail_recovery import learn_log_start, recover_tail

log = logging.getLogger(__name__)

LEADER = "leader"
FOLLOWER = "follower"


@dataclass(slots=True)
class FollowerState:
    log_end_offset: int = -1
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    leo_at_last_fetch: int = 0  # the leader's LEO when this follower last fetched


class Partition(PartitionFollowerMixin, PartitionSnapshotsMixin):
    def __init__(self, topic: str, partition: int, broker_id: int, engine: Engine, directory: str | None) -> None:
        self.topic = topic
        self.partition = partition
        self.broker_id = broker_id
        self.engine = engine
        # appends of batches whose CRC we verified: the engine need not check it again, when it
        # takes crc_checked (an engine written before that keyword checks it itself)
        self._verified_kwargs = verified_append_kwargs(engine)
        self.epochs = EpochCache(directory)
        self.producers = ProducerStateTable()
        # the producer table's snapshots (nodes/broker/producer_snapshots.py); none for an engine
        # that keeps nothing on disk (its log starts empty at every open)
        self.producer_snapshots = ProducerSnapshots(directory) \
            if directory is not None and engine.name != "memory" else None
        # (log end, monotonic ms) of the last snapshot written or restored; ms None: not timed yet
        self._snapshot_at: tuple[int, int | None] = (-1, None)
        # monotonic ms of the last periodic snapshot that failed (None: the last one did not)
        self._snapshot_failed_ms: int | None = None
        self.role: str | None = None
        self.leader_id = -1
        self.leader_epoch = -1
        self.replicas: list[int] = []
        self.isr: set[int] = set()
        self.pending_isr: set[int] | None = None  # proposed to the coordinator, not yet applied
        # the coordinator's partition epoch of the leader/ISR state applied here (-1: none yet);
        # the broker applies no state older than this, by push or by reply
        self.partition_epoch = -1
        self._epoch_start_offset = 0  # the log end when we last became leader: the ISR join floor
        self.followers: dict[int, FollowerState] = {}
        self._hw_checkpoint = HighWatermarkCheckpoint(directory)
        self.high_watermark = 0
        # called with this partition after a change of its (leader epoch, HW, LEO) -- the
        # replication heartbeat's position -- is seen by _check_offsets, which every method that
        # changes the partition runs; None: nobody listens (nodes/broker/replication.py)
        self.on_moved: Callable[[Partition], None] | None = None
        # run once, before this replica's first durable write -- its epoch checkpoint, its log
        # (_before_write); kept until it succeeds. The broker makes the replica's directory and
        # topic id durable here (nodes/broker/partition_dirs.py, make_durable)
        self.before_first_write: Callable[[], None] | None = None
        self._position_seen = (-1, -1, -1)  # (leader epoch, HW, LEO) at the last _check_offsets
        # recovery may have cut a tail the checkpoint already named (an epoch written down just
        # before its first batch, or a batch that was not durable): forget such epochs, or a
        # returning replica would keep records the leader has overwritten (Kafka does the same)
        self.epochs.truncate_from_end(self.log_end_offset)
        # (the snapshot restored: a newer, damaged one at the log end is replaced at close)
        self._snapshot_at = (recover_tail(self), None)
        self.high_watermark = self._hw_checkpoint.load(self.log_start_offset, self.log_end_offset)
        self._check_offsets()

    # -- offsets ---------------------------------------------------------------------------
    @property
    def log_end_offset(self) -> int:
        return self.engine.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.engine.log_start_offset

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    def _check_offsets(self) -> None:
        """log_start_offset <= high_watermark <= log_end_offset, or AssertionError (a bug:
        raised explicitly so that it holds under ``python -O`` too). Then ``on_moved`` hears of
        a position (leader epoch, HW, LEO) other than the one this last saw."""
        engine = self.engine  # run after every change and every idle heartbeat: no property layer
        start, hw, end = engine.log_start_offset, self.high_watermark, engine.log_end_offset
        if not start <= hw <= end:
            raise AssertionError(f"{self.topic}-{self.partition}: log start {start} <= high watermark {hw} "
                                 f"<= log end {end} does not hold")
        position = (self.leader_epoch, hw, end)
        if position != self._position_seen:
            self._position_seen = position
            if self.on_moved is not None:
                self.on_moved(self)

    def _before_write(self) -> None:
        if self.before_first_write is not None:
            self.before_first_write()
            self.before_first_write = None

    # -- role changes --------------------------------------------------------------------------
    def become_leader(self, epoch: int, replicas: list[int], isr: list[int], now_ms: int) -> None:
        """Lead from ``epoch`` on. Nothing is written: the epoch is checkpointed with its first
        batch (``append_as_leader``, before the batch), as Kafka assigns an epoch from the
        batches it appends. Until then every answer the epoch cache gives is the one it would
        give with (epoch, log end) in it -- the latest epoch's end is the log end either way
        -- and a leader that writes nothing at ``epoch`` leaves no entry to truncate away
        later. Becoming leader of 333 partitions so cost no 666 fsyncs on the reactor."""
        # where our leadership began, for the ISR rule -- the log end now, even when the epoch's
        # entry is older (the same epoch led again after a restart): the HW checkpoint may be
        # behind the HW that was acknowledged, and a follower must hold everything we had
        self._epoch_start_offset = self.log_end_offset
        self.role = LEADER
        self.leader_id = self.broker_id
        self.leader_epoch = epoch
        self.replicas = list(replicas)
        self.isr = set(isr)
        self.pending_isr = None
        self.followers = {r: FollowerState(last_caught_up_ms=now_ms) for r in replicas if r != self.broker_id}
        self.high_watermark = min(max(self.high_watermark, self.log_start_offset), self.log_end_offset)
        self.maybe_advance_high_watermark()
        self._check_offsets()

    def become_follower(self, leader_id: int, epoch: int, replicas: list[int], isr: list[int]) -> None:
        self.role = FOLLOWER
        self.leader_id = leader_id
        self.leader_epoch = epoch
        self.replicas = list(replicas)
        self.isr = set(isr)
        self.pending_isr = None
        self.followers = {}
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self._check_offsets()

    def update_isr(self, isr: list[int]) -> None:
        """The coordinator applied an ISR change for the current epoch (its partition epoch
        comes with the metadata: ``set_partition_epoch``)."""
        self.isr = set(isr)
        self.pending_isr = None
        self.maybe_advance_high_watermark()
        self._check_offsets()

    def follow_isr(self, isr: list[int]) -> None:
        """A follower learns the leader's ISR (it does not count it: no high watermark moves)."""
        self.isr = set(isr)
        self._check_offsets()

    def set_partition_epoch(self, partition_epoch: int) -> None:
        """The coordinator's partition epoch of the leader/ISR state now applied here."""
        self._new_partition_epoch(partition_epoch)
        self.maybe_advance_high_watermark()
        self._check_offsets()

    def _new_partition_epoch(self, partition_epoch: int) -> None:
        """A newer coordinator state of the partition (its ISR already applied): what a follower
        outside the ISR reported may come from a process that has restarted since -- the
        coordinator took it out of the ISR, or fenced a proposal naming it, because it may have
        lost an unflushed tail -- so it joins the ISR again only on what it reports from now on.
        Taken back on its old process's log end, it could hold less than the high watermark and
        then be elected (Kafka's KIP-903)."""
        if partition_epoch > self.partition_epoch and self.role == LEADER:
            for r, st in self.followers.items():
                if r not in self.isr:
                    st.log_end_offset = -1
                    if self.pending_isr is not None and r in self.pending_isr:
                        # a proposal made on that report: the coordinator refuses it as stale
                        # (it names the older partition epoch), and until then it must not hold
                        # the high watermark at the forgotten report
                        self.pending_isr = None
        self.partition_epoch = partition_epoch

    def propose_isr(self, isr: set[int]) -> None:
        """The leader proposed ``isr`` to the coordinator: until it is applied or dropped the
        high watermark counts the larger of both (Kafka's maximal ISR)."""
        self.pending_isr = isr
        self._check_offsets()

    def drop_proposed_isr(self) -> None:
        """The pending proposal was refused, or something newer was applied."""
        self.pending_isr = None
        self._check_offsets()

    # -- leader: appends ---------------------------------------------------------------------
    def append_as_leader(self, batches: list[Payload], batch_bytes_max: int, flags: Sequence[int] = ()
                         ) -> tuple[list[tuple[int, int, str]], list[bytearray]]:
        """Validate and append batches (one durability point). Returns per batch
        (base_offset, error_code, message) -- error batches are not written, retried duplicates
        answer with their original offset and message "duplicate" (a duplicate of a batch earlier
        in this call fails with its write) -- and the batches written
        (for the replication stream). A written batch is stamped with our leader epoch: an
        ``OwnedFrame`` (the request's own buffer, fabric/buffers.py) in place, anything else
        in a copy; the batches returned are those stamped buffers. ``flags[i]``, the part's
        flags of batch i (a bool: possibly written or not): ``P.PART_POSSIBLY_WRITTEN``, an
        earlier send of it may be in a log (absent: possibly written); ``P.PART_FOLLOWS``, it
        follows a batch its client has no answer for yet (see nodes/broker/producers.py)."""
        results: list[tuple[int, int, str]] = []
        to_write: list[bytearray] = []
        headers: list[B.BatchHeader] = []
        slots: list[int] = []
        dups_here: list[int] = []  # duplicates of a batch earlier in this call: as good as its write
        end = self.engine.log_end_offset  # nothing is written before the engine's append below
        next_offset = end  # where the next batch to write will start
        self.producers.begin_write()
        for i, data in enumerate(batches):
            f = flags[i] if i < len(flags) else P.PART_POSSIBLY_WRITTEN
            written_maybe, follows = bool(f & P.PART_POSSIBLY_WRITTEN), bool(f & P.PART_FOLLOWS)
            try:
                h = self._validate(data, batch_bytes_max)
                dup = self.producers.check(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count,
                                           possibly_written=written_maybe, follows=follows)
            except RemoteError as e:
                dup = self._retry_over_limit(data, written_maybe, follows) if e.code == P.RECORD_TOO_LARGE else None
                if dup is None:
                    results.append((-1, e.code, e.message))
                    continue
            if dup is not None:
                if dup >= end:
                    dups_here.append(len(results))
                results.append((dup, 0, "duplicate"))
                continue
            buf = stampable(data)
            B.set_leader_epoch(buf, self.leader_epoch)
            to_write.append(buf)
            headers.append(h)
            slots.append(len(results))
            results.append((-1, 0, ""))
            # producer state must see in-request ordering before the write (several batches of
            # one producer in one request)
            self.producers.update(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, next_offset)
            next_offset += h.record_count
        if not to_write:
            self.producers.end_write()
            return results, []
        try:
            self._before_write()
            if self.epochs.latest_epoch != self.leader_epoch:
                self.epochs.assign(self.leader_epoch, end)  # the epoch's first batch: checkpointed before it
            offsets = self.engine.append_many(to_write, **self._verified_kwargs)  # _validate verified each CRC
        except (StorageFull, EngineError) as e:
            self.producers.undo_write()  # the failed write left the log as it was: the table too
            for i in slots + dups_here:  # a retry read in the same pass as its first copy fails with it
                results[i] = (-1, P.STORAGE_ERROR, str(e))
            return results, []
        self.producers.end_write()
        self._check_stored_at(end, [h.record_count for h in headers], offsets)
        for i, off in zip(slots, offsets):
            results[i] = (off, 0, "")
        self.maybe_advance_high_watermark()
        self._check_offsets()
        return results, to_write

    def _check_stored_at(self, end: int, record_counts: list[int], offsets: list[int], stored: bool = True) -> None:
        """Batches of ``record_counts`` records at ``offsets`` continue the log end ``end`` (the
        one before the append) without gap or overlap, and (``stored``) the engine's log end is
        now after the last of them; else AssertionError (a bug)."""
        expected = []
        for n in record_counts:
            expected.append(end)
            end += n
        if list(offsets) != expected or (stored and self.log_end_offset != end):
            raise AssertionError(f"{self.topic}-{self.partition}: batches stored at {list(offsets)} with log end "
                                 f"{self.log_end_offset}, not contiguously at {expected} up to {end}")

    def _retry_over_limit(self, data: bytes, possibly_written: bool, follows: bool) -> int | None:
        """The original offset of the batch ``data`` retries, when the log holds it already and
        only the size limit (the topic's max.message.bytes, lowered since) refused the retry;
        None when ``data`` is no such retry (it stays refused). The limit guards what is
        written: a retry answered record_too_large told its producer that a write in the log
        had failed."""
        try:
            h = self._validate(data, len(data))
            return self.producers.check(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count,
                                        possibly_written=possibly_written, follows=follows)
        except RemoteError:
            return None

    def _validate(self, data: bytes, batch_bytes_max: int) -> B.BatchHeader:
        if len(data) > batch_bytes_max:
            raise RemoteError(P.RECORD_TOO_LARGE, f"batch of {len(data)} bytes is over {batch_bytes_max} "
                                                  "(the topic's max.message.bytes, at most limits.batch_bytes_max "
                                                  "of the cluster config)")
        try:
            h = B.verify(data)
        except B.BatchError as e:
            raise RemoteError(P.CORRUPT_MESSAGE, str(e)) from e
        if h.size_bytes != len(data):
            raise RemoteError(P.CORRUPT_MESSAGE, f"frame holds {len(data)} bytes, batch says {h.size_bytes}")
        return h

    # -- leader: follower tracking, HW, ISR -----------------------------------------------------
    def record_follower_fetch(self, follower_id: int, fetch_offset: int, now_ms: int,
                              log_end_offset: int | None = None) -> bool:
        """A follower fetched from ``fetch_offset`` (= its LEO). Returns True if the HW moved.
        ``log_end_offset``: ours, when the caller has just read it (a REPLICA_ACK's check)."""
        st = self.followers.get(follower_id)
        if st is None:
            return False
        leo = self.engine.log_end_offset if log_end_offset is None else log_end_offset
        if fetch_offset >= leo:
            st.last_caught_up_ms = now_ms
        elif fetch_offset >= st.leo_at_last_fetch:
            st.last_caught_up_ms = max(st.last_caught_up_ms, st.last_fetch_ms)
        st.log_end_offset = fetch_offset
        st.last_fetch_ms = now_ms
        st.leo_at_last_fetch = leo
        moved = self.role == LEADER and self._advance_high_watermark(leo)
        self._check_offsets()
        return moved

    def _hw_members(self) -> set[int]:
        # while an expansion is pending, count the larger set (Kafka's "maximal ISR"); the ISR
        # itself is not copied: callers only read it
        return self.isr | self.pending_isr if self.pending_isr else self.isr

    def maybe_advance_high_watermark(self) -> bool:
        """The leader's HW up to what its HW members hold; True if it moved. The caller runs
        ``_check_offsets`` after it, as every method of this class does after a change: that is
        how the replication heartbeat hears of the move (``on_moved``)."""
        if not self.is_leader:
            return False
        return self._advance_high_watermark(self.log_end_offset)

    def _advance_high_watermark(self, leo: int) -> bool:
        """The leader's HW to the smallest LEO among the HW members (``leo`` is ours)."""
        hw = leo
        me, followers = self.broker_id, self.followers
        for r in self._hw_members():
            if r != me:
                st = followers.get(r)
                if st is None:
                    hw = -1
                    break
                if st.log_end_offset < hw:
                    hw = st.log_end_offset
        if hw > self.high_watermark:
            self.high_watermark = hw
            return True
        return False

    def isr_changes(self, now_ms: int, lag_time_max_ms: int) -> set[int] | None:
        """The ISR the leader should propose now, or None when no change is due."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        if self._isr_unchanged(now_ms, lag_time_max_ms):
            return None
        new = set(self.isr) | {self.broker_id}
        for r, st in self.followers.items():
            lagging = now_ms - st.last_caught_up_ms > lag_time_max_ms
            if r in new and lagging:
                new.discard(r)
            elif r not in new and not lagging and st.log_end_offset >= self.high_watermark \
                    and st.log_end_offset >= self._epoch_start_offset:
                new.add(r)
        return new if new != self.isr else None

    def _isr_unchanged(self, now_ms: int, lag_time_max_ms: int) -> bool:
        """True when ``isr_changes`` would find nothing to change, decided without building a
        set (the check runs for every led partition several times a second): we are in the
        ISR, every follower in it is within the lag bound and every one outside it lags (a
        caught-up outsider may join: the full rules decide)."""
        isr = self.isr
        if self.broker_id not in isr:
            return False
        for r, st in self.followers.items():
            if (now_ms - st.last_caught_up_ms > lag_time_max_ms) == (r in isr):
                return False  # a lagging member or a caught-up outsider: the full rules decide
        return True

    def divergence(self, fetch_offset: int, last_epoch: int) -> list | None:
        """Leader side of KIP-320: if a follower's last epoch ended earlier in our log than its
        fetch offset, [epoch, end offset] tells it where our logs part; else None. Our own
        epoch counts from its start even before its first batch checkpointed it."""
        if last_epoch < 0:
            return None
        if last_epoch >= self.leader_epoch > self.epochs.latest_epoch and self.is_leader:
            epoch, end = self.leader_epoch, self.log_end_offset  # (become_leader wrote no entry)
        else:
            epoch, end = self.epochs.end_offset_for(last_epoch, self.log_end_offset)
        if epoch == last_epoch and end >= fetch_offset:
            return None
        if epoch < 0:
            return [-1, self.log_start_offset]
        return [epoch, end]

    def consumer_divergence(self, fetch_offset: int, last_epoch: int) -> list | None:
        """``divergence`` for a consumer, which names the epoch of the last record it read: an
        epoch older than every one we know is answered too. All our records were then written
        after the one it read (an unclean election to a replica that held none of its epoch), and
        our log parts from its at our first epoch's start (at least our log start) -- answered
        none (-1), it read on from its position, or was reset by its policy, past them. A position
        at or below that point is not a divergence: below our log start it is out of range."""
        diverging = self.divergence(fetch_offset, last_epoch)
        if diverging is None or diverging[0] >= 0:
            return diverging
        if not self.epochs.entries:
            return None  # no epoch known at all: nothing says where the logs part
        end = max(self.epochs.entries[0][1], self.log_start_offset)
        return [last_epoch, end] if end < fetch_offset else None

    # -- retention ----------------------------------------------------------------------------
    def apply_retention(self, now_wall_ms: int) -> None:
        """Delete whole segments/batches that retention allows, never past the high watermark
        (records not on every ISR member yet are not deletable), and the epochs before the new
        log start; the producer table learns the new log start. Raises EngineError."""
        self.engine.apply_retention(now_wall_ms, self.high_watermark)
        self.epochs.truncate_from_start(self.log_start_offset)
        learn_log_start(self)
        if self.producer_snapshots is not None:
            self.producer_snapshots.delete_from_start(self.log_start_offset)
        self._check_offsets()

    # -- reads ------------------------------------------------------------------------------
    @property
    def high_watermark_known(self) -> bool:
        """A leader knows the end consumers may see once its HW has reached the start of its
        epoch (KIP-207): elected, it starts from its follower view of the HW, which may lag the
        HW the deposed leader acknowledged and consumers read to, until its followers fetch."""
        return self.high_watermark >= self._epoch_start_offset

    def offset_for_spec(self, spec: int) -> int | None:
        """LIST_OFFSETS: -2 the log start, -1 the high watermark (the end consumers see), else
        the first offset at or after timestamp ``spec`` (the HW when there is none). None when
        the answer would be the HW and the HW is not known yet (``high_watermark_known``)."""
        if spec == -2:
            return self.log_start_offset
        offset = None if spec == -1 else self.engine.offset_for_timestamp(spec)
        if offset is not None and offset < self.high_watermark:
            return offset
        return self.high_watermark if self.high_watermark_known else None

    def read(self, offset: int, max_bytes: int, upto_offset: int) -> bytes:
        """Whole batches from ``offset`` that end at or before ``upto_offset`` (the HW for
        consumers, the LEO for followers)."""
        if offset >= upto_offset:
            return b""
        data = self.engine.read(offset, max_bytes)
        if upto_offset >= self.log_end_offset:
            return data
        cut = 0
        for h, view in B.iter_batches(data):
            if h.next_offset > upto_offset:
                break
            cut += len(view)
        return data[:cut]

    def checkpoint_high_watermark(self) -> None:
        """Write the HW to the partition directory if it moved since the last write, without
        fsync (nodes/broker/hw_checkpoint.py says why). Raises nothing: a failed write
        (StorageFull / EngineError) is logged and leaves the previous file whole, and the next
        call tries again."""
        try:
            self._hw_checkpoint.save(self.high_watermark)
        except EngineError as e:
            log.error("%s-%d: cannot checkpoint the high watermark: %s", self.topic, self.partition, e)

    def close(self) -> None:
        self.checkpoint_high_watermark()
        self._snapshot_producers(sync=True)
        self.engine.close()
