"""The coordinator appends to ``__consumer_offsets`` as an idempotent producer, so that the
table follows the log.

An append the coordinator gave up on (no reply within APPEND_TIMEOUT_MS + APPEND_REPLY_GRACE_MS:
a paused broker, a request held in a queue) can still reach the leader later. Written then, it
landed after the end that a read again of the partition had seen (the table lacked it until a
restart), or -- a first send of a commit that a retry had already written -- after the group's
next commit (a restart then moved the committed offset back). Waiting for every outstanding
request cannot be done (a request the client gave up on is never answered), so what was sent
is fenced, with the brokers' idempotent-producer state (nodes/broker/producers.py):

- Each offsets partition has a producer id and epoch of its own, kept in the state file
  (``ClusterState.offsets_producer``; the epoch is raised, and written, before it is used), and a
  sequence.
- An append is built once; every retry sends the same bytes (the same sequence), flagged
  ``possibly_written`` once an earlier send may have landed: a late copy of a batch that a retry
  wrote is a duplicate the leader does not write twice.
- An epoch begins with a fence record (acks=all; the loader skips it). Once the fence is in the
  log the leader refuses every append of an older epoch (invalid_producer_epoch): nothing sent
  before can land after it. At a start each partition is fenced after its load; a read again
  (nodes/coordinator/offsets_resync.py) fences first and then reads, so it covers all that can
  ever land of what was sent before.
- A start's fence must land where the load ended: one that lands later means something landed
  in between (a late append of an earlier run, sent before the fence), and the partition is
  read again. (After a fence nothing of an older epoch lands, so our own appends follow on.)

Giving up an append that may have landed, or a refusal by the producer state, ends the epoch:
the partition is read again under a new one (a sequence that may be taken is never reused).

A new producer id (the epochs run out; a fence refused by the producer state, e.g. a state file
put back from a copy whose epochs the brokers already saw) fences nothing sent under the old
one: the old id is first ended with a fence under EPOCH_MAX, an epoch no append uses, then the
new id begins with its own fence.

``ProducerMixin`` is that part of ``OffsetStore`` (nodes/coordinator/offsets.py): its state is
the store's own (set by ``OffsetStore.__init__``).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from fabric import protocol as P
from fabric.errors import LoomError, RemoteError
from fabric.records import build_batch
from nodes.broker.producers import sequence_add
from nodes.coordinator.offsets_client import OFFSETS_TOPIC, AppendOutcome
from nodes.coordinator.offsets_loader import FENCE_KEY
from nodes.coordinator.snapshots import SnapshotJob
from nodes.coordinator.store import PRODUCER_IDS_PER_WALL_MS

if TYPE_CHECKING:
    from nodes.coordinator.context import GroupContext
    from nodes.coordinator.offsets import _Queue
    from nodes.coordinator.offsets_client import OffsetsTopicClient
    from nodes.coordinator.offsets_commits import PendingCommit

log = logging.getLogger(__name__)

EPOCH_MAX = 32767  # a producer epoch is 16 bits; past it the partition takes a new producer id
# refusals by the leader's producer state: the epoch (or producer id) cannot go on
PRODUCER_STATE_ERRORS = frozenset({P.INVALID_PRODUCER_EPOCH, P.OUT_OF_ORDER_SEQUENCE, P.DUPLICATE_SEQUENCE,
                                   P.UNKNOWN_PRODUCER_ID})


@dataclass
class Sent:
    """One append of an offsets partition, built once and sent as it is until it is
    acknowledged or given up."""

    batch: bytes
    records: int
    ts: int                                        # the records' timestamp
    take: list = field(default_factory=list)       # the PendingCommits it carries
    fence: bool = False
    possibly_written: bool = False                 # a send of it may be in the log
    retire: bool = False                           # the fence that ends a producer id (EPOCH_MAX)


class ProducerMixin:
    """``OffsetStore``'s producer id, epochs and sequences, its fences and the check that the
    table follows the log. Part of OffsetStore (its state is the store's own)."""

    # the store's state this part uses (set by OffsetStore.__init__)
    context: GroupContext
    reactor: Any
    client: OffsetsTopicClient
    counters: Any
    _queues: dict[int, _Queue]
    _resyncing: dict

    if TYPE_CHECKING:  # OffsetStore's, never these
        def _finish(self, pc: PendingCommit, error: RemoteError | None) -> None: ...
        def _send_commits(self, q: int) -> None: ...
        def _snapshot_step(self, q: int, job: SnapshotJob) -> None: ...
        def _pump(self, q: int) -> None: ...
        def _pause(self, q: int) -> None: ...
        def _resync(self, q: int) -> None: ...
        def _read_again(self, q: int) -> None: ...

    def _new_sent(self, q: int, records: list, take: list | None = None, *, fence: bool = False) -> Sent:
        """The next append of partition ``q`` (the next sequence of its epoch)."""
        pid, epoch = self.context.state.offsets_producer[q]
        batch = build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=self._queues[q].seq)
        return Sent(batch, len(records), records[0][0], take or [], fence)

    def _send(self, q: int, sent: Sent, on_outcome: Callable[[AppendOutcome], None]) -> None:
        """Send the pinned append (again); the queue stays busy until its outcome."""
        queue = self._queues[q]
        queue.busy = True
        attempt = queue.attempts = queue.attempts + 1

        def outcome(out: AppendOutcome) -> None:
            if queue.sent is not sent or queue.attempts != attempt:  # not the send outstanding: never
                self.counters["offsets_stale_append_outcomes"] += 1  # acted on (a newer state is there)
                log.warning("offsets partition %d: an outcome of an append no longer outstanding is ignored", q)
                return
            sent.possibly_written |= out.maybe_written
            on_outcome(out)
        if not self.client.append(q, sent.batch, sent.possibly_written, outcome):
            self._pause(q)  # no live leader: nothing left

    def _resend(self, q: int) -> None:
        """Send the pinned append again (its retry pause is over), or give it up."""
        sent = self._queues[q].sent
        assert sent is not None
        if sent.fence:
            self._fence_step(q)
            return
        if not sent.take:  # a snapshot's record
            job = self._queues[q].items[0]
            assert isinstance(job, SnapshotJob)
            self._snapshot_step(q, job)
            return
        if min(pc.deadline_ms for pc in sent.take) <= self.reactor.clock.now_ms():
            self._queues[q].sent = None  # given up: its sequence is taken if it may be in the log
            for pc in sent.take:
                pc.maybe_in_log |= sent.possibly_written
                self._finish(pc, RemoteError(P.REQUEST_TIMED_OUT, "the offset commit was not replicated in time"))
            self._pump(q)
            return
        self._send_commits(q)

    def _expire_waiting(self, q: int) -> None:
        """Answer the waiting commits whose deadline passed (while nothing is appended)."""
        queue = self._queues[q]
        now = self.reactor.clock.now_ms()
        expired = [pc for pc in queue.items if not isinstance(pc, SnapshotJob) and (pc.finished or pc.deadline_ms <= now)]
        if expired:
            gone = {id(pc) for pc in expired}
            queue.items = deque(pc for pc in queue.items if id(pc) not in gone)
            for pc in expired:
                self._finish(pc, RemoteError(P.REQUEST_TIMED_OUT, "the offset commit was not replicated in time"))

    def _acked(self, q: int, base_offset: int) -> bool:
        """The pinned append is in the log at ``base_offset``: unpinned, its sequence taken.
        False when it does not begin where the table's part of the log ended (something landed
        in between)."""
        queue = self._queues[q]
        sent, queue.sent = queue.sent, None
        assert sent is not None
        queue.seq = sequence_add(queue.seq, sent.records)
        expected, queue.log_end = queue.log_end, base_offset + sent.records
        return expected is None or base_offset == expected

    def _fence_step(self, q: int) -> None:
        """Begin a new epoch of partition ``q`` with its fence record (sent again until it is in
        the log); then the read again, if one waits, or the commits."""
        queue = self._queues[q]
        if OFFSETS_TOPIC not in self.context.state.topics:
            return  # nothing sent before it can land: fenced when it is made (the first commit's pump)
        if queue.sent is None:
            try:
                self._new_epoch(q)
            except (OSError, LoomError) as e:  # not durable: never used (a restart could use it again)
                log.warning("offsets partition %d: the new producer epoch could not be stored (%s): retrying", q, e)
                self._pause(q)
                return
            pid, epoch = self.context.state.offsets_producer[q]
            ts = self.reactor.clock.wall_ms()
            queue.sent = self._new_sent(q, [(ts, FENCE_KEY, msgpack.packb([pid, epoch]), None)], fence=True)
            queue.sent.retire = epoch == EPOCH_MAX
        sent = queue.sent

        def on_outcome(out: AppendOutcome) -> None:
            if out.ok:
                queue.busy = False
                in_order = self._acked(q, out.base_offset)
                if sent.retire:  # the old producer id is fenced for good: the next fence takes a new one
                    if not in_order:
                        self._resync(q)  # read after that fence
                    self._pump(q)
                    return
                queue.fenced = True
                if q in self._resyncing:
                    self._read_again(q)  # it reads past the fence
                elif not in_order:
                    self._resync(q)
                self._pump(q)
            elif out.code in PRODUCER_STATE_ERRORS:
                # an epoch used before (a state file put back from a copy): a new producer id
                log.warning("offsets partition %d: its fence was refused (%s): a new producer id", q, out.message)
                queue.sent, queue.new_producer_id = None, True
                self._pause(q)
            else:  # sent again as it is: a copy already written is a duplicate
                self.counters["offsets_fence_retries"] += 1
                self._pause(q)
        self._send(q, sent, on_outcome)

    def _new_epoch(self, q: int) -> None:
        """Raise partition ``q``'s producer epoch, stored before it is used: a producer id left
        (its epochs run out, or asked) gets EPOCH_MAX, its retiring fence, and then a new id.
        Raises what the state write raises."""
        state = self.context.state
        queue = self._queues[q]
        before = (state.offsets_producer.get(q), state.next_producer_id)
        pid, epoch = before[0] or (-1, EPOCH_MAX)
        ending = pid >= 0 and (queue.new_producer_id or epoch + 1 >= EPOCH_MAX) and queue.ended_id != pid
        if ending:
            # the id is left: first a fence under its last epoch, which no append uses, so that
            # nothing sent under it can land later (a new id's fence fences only the new id); also
            # when EPOCH_MAX is stored already (a run that died before that fence landed)
            epoch = EPOCH_MAX
        elif pid < 0 or epoch >= EPOCH_MAX or queue.new_producer_id:
            # above every id handed out, and above the wall clock's floor (as the coordinator's own
            # blocks: nodes/coordinator/node.py), so a state put back from a copy never reuses one
            pid = max(state.next_producer_id, self.reactor.clock.wall_ms() * PRODUCER_IDS_PER_WALL_MS)
            state.next_producer_id, epoch = pid + 1, 0
        else:
            epoch += 1
        state.offsets_producer[q] = [pid, epoch]
        try:
            self.context.save_state()
        except BaseException:
            if before[0] is None:
                state.offsets_producer.pop(q, None)
            else:
                state.offsets_producer[q] = before[0]
            state.next_producer_id = before[1]
            raise
        queue.seq, queue.new_producer_id, queue.fenced = 0, False, False
        if ending:
            queue.ended_id = pid
        self.counters["offsets_producer_epochs"] += 1
