"""What comes back to the producer's I/O thread: a PRODUCE reply, batch by batch -- done,
retried (back at the head of its partition's queue, after its retry backoff), sent again in two
pieces (refused as too large), or failed -- the producer-id reset that a numbered batch's
failure brings, and failing every batch at once (close, or a programmer error on the I/O
thread). ``SenderReplies`` is that part of ``fabric.client.sender.Sender``, which mixes it in:
its state is the sender's own (set by ``Sender.__init__``); the choice of what goes is in
``fabric.client.sender``, numbering, packing and sending in ``fabric.client.sender_requests``.

The retry backoff (Kafka's ``retry.backoff.ms`` / ``retry.backoff.max.ms``, KIP-580): a batch
an answer sends again -- a retriable error (not_leader, not_enough_replicas, buffer_full...),
no answer (a request's timeout, a lost connection), or out of order behind such a batch -- is
not sent before ``retry_at_ms``: ``retry_backoff_ms`` doubled per attempt of that batch (sent to
the same leader: a refusal by another leader, or the same at another epoch, starts over), capped
at ``retry_backoff_max_ms``, times a jitter of +/- ``retry_jitter`` (capped again), counted
from the answer. Its partition sends nothing before then (``Sender._send_ready`` looks at the
head of its queue: the batches behind it wait, and go with it; other partitions do not wait)
and the I/O thread's wait ends then (``_due_soon``). The wait is skipped once the metadata names
another leader, or the same at a newer epoch, than the one that refused the batch (Kafka's
KIP-951): a failover's retry goes to the new leader at once. A batch's pieces (split, refused
as too large) and batches refused out of order behind one that failed for good (numbered
again, or keeping their numbers as they may be in a log) go at once, and so do the batches of
a request the producer ended itself because newer metadata names another leader for one of its
partitions (``LeadershipMoved``, ``SenderAsks._reroute_in_flight``; no attempt counted): nothing
in the cluster is to be waited for. A batch's delivery timeout still ends during its backoff
(``SenderQueues._expire``, ``fabric.client.sender_queues``).

Not thread-safe: part of Sender, run on its I/O thread only.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict, deque
from typing import TYPE_CHECKING, Callable

from engines import batch as B
from fabric import protocol as P
from fabric.client.futures import BatchState
from fabric.client.metadata_cache import MetadataCache
from fabric.clock import Clock
from fabric.errors import (MAY_HAVE_BEEN_WRITTEN, CodedError, FabricError, LeadershipMoved, MalformedFrame,
                           ProducerClosedError, RemoteError)
from fabric.hoptrace import mark
from fabric.records import decode_batches
from fabric.replies import decode_produce_results

if TYPE_CHECKING:
    from fabric.client.sender import BatchSource, SenderSettings
    from fabric.client.sender_flights import Flights

# a batch sent again after a retriable answer waits RETRY_BACKOFF_MS, doubled per attempt up to
# RETRY_BACKOFF_MAX_MS, +/- RETRY_JITTER of it (Kafka's defaults): the Producer's defaults
RETRY_BACKOFF_MS = 100
RETRY_BACKOFF_MAX_MS = 1000
RETRY_JITTER = 0.2
# the longest backoff a Producer may be given (a batch's delivery timeout bounds its wait anyway)
RETRY_BACKOFF_MS_LIMIT = 3_600_000


def retry_backoff_ms(attempts: int, base_ms: int, max_ms: int, jitter: float,
                     uniform: Callable[[float, float], float] = random.uniform) -> int:
    """How long a batch sent again for the ``attempts``-th time (1: its first retry) waits:
    ``base_ms`` doubled per attempt after the first, capped at ``max_ms``, times a random factor
    in [1 - jitter, 1 + jitter] (so that producers refused together do not retry together),
    capped at ``max_ms`` again."""
    assert attempts >= 1 and 0 <= base_ms <= max_ms and 0 <= jitter < 1
    term = min(max_ms, base_ms << min(attempts - 1, 32))  # (32: past any cap, and no huge int)
    if jitter:
        term = int(term * uniform(1 - jitter, 1 + jitter))
    return min(max_ms, term)


class SenderReplies:
    """``Sender``'s handling of replies and the end of batches (see the module doc). Not
    usable alone: the attributes below are the sender's, set by ``Sender.__init__``."""

    # the sender's state this part uses
    settings: SenderSettings
    clock: Clock
    batches: BatchSource
    metadata_cache: MetadataCache
    producer_id: int
    producer_epoch: int
    _id_generation: int
    _sequences: dict[tuple[str, int], int]
    _queues: dict[tuple[str, int], deque[BatchState]]
    _flights: Flights
    _unsent_oneway: dict[int, list[BatchState]]
    _stopping: bool
    errors: Counter[str]
    splits: int

    if TYPE_CHECKING:  # Sender's and SenderRequests', never these
        def wake(self) -> None: ...
        def _requeue_lost_oneway(self) -> None: ...

    def _on_reply(self, groups: list, batches: list, header: dict | None, err: CodedError | None,
                  follows: list[bool]) -> None:
        """A PRODUCE's answer, read after those of every request sent to its broker before it
        (``fabric.client.sender_flights``). ``follows[i]``: batch i went behind another of its
        partition not yet answered."""
        mark("sender.reply")
        flights = self._flights
        # the leader each partition's request went to, and at which epoch: a batch it refused
        # backs off while that leader is the one the metadata names
        sent_to = {}
        for tp, _ in groups:
            flight = flights.landed(tp)
            sent_to[tp] = (flight.endpoint, flight.leader_epoch)
        now = self.clock.now_ms()
        try:
            results = decode_produce_results(header) if header is not None else []
        except MalformedFrame as e:  # a broker's bad answer: every batch of it failed, unknown how
            results, err = [], RemoteError(P.UNKNOWN, str(e))
        mark("sender.decoded")  # before the futures complete: the application's thread may run first
        retry: dict[tuple[str, int], list] = defaultdict(list)
        written_after = _written_after(batches, results)
        # a numbered batch of the partition failed for good here, or in an answer read before
        # this one while this request was in flight
        dead: set[tuple[str, int]] = {tp for tp, _ in groups if tp in flights.dead}
        for i, b in enumerate(batches):
            tp = (b.topic, b.partition)
            if header is not None and i < len(results):
                r = results[i]
                base, code = r.base_offset, r.error
                error = RemoteError(code, r.message) if code else None
                if base >= 0:  # written, perhaps refused after the write (acks=all not met)
                    b.possibly_written = True
            else:  # no reply (kept as found: a local condition stays a ClientError), or no result
                error = err if err is not None else RemoteError(P.UNKNOWN, "no result for this batch")
                base, code = -1, error.code
                if error.may_have_arrived:
                    b.possibly_written = True
            if code:
                self.errors[P.error_name(code)] += 1
            if error is None:  # a recognised retry also answers 0, with its offset
                self._done(tp, b, base, None, bool(retry.get(tp)))
            elif (tp in dead and not b.possibly_written and not written_after[i]
                  and (code == P.OUT_OF_ORDER_SEQUENCE or (code == P.RECORD_TOO_LARGE and b.record_count > 1))):
                # not written: a gap behind a batch of its partition that failed for good, under
                # a producer id that is gone (_finish reset it); numbered again under the next one
                if code == P.RECORD_TOO_LARGE:
                    self.metadata_cache.want_refresh()
                    flights.awaiting[tp].discard(b)  # its pieces go in its place
                b.retry_at_ms = 0  # at once, not at the end of a backoff it was sent before
                retry[tp] += self._split(b) if code == P.RECORD_TOO_LARGE else [b]  # _pack numbers them
            elif (code in P.RETRIABLE or header is None
                  or (code == P.OUT_OF_ORDER_SEQUENCE and (retry.get(tp) or flights.retrying(tp) or follows[i]))):
                # (out of order behind a batch sent again, or behind one not yet answered when it
                # left: it goes again in its place)
                retry[tp].append(b)
                if (code == P.OUT_OF_ORDER_SEQUENCE and tp in dead) or isinstance(error, LeadershipMoved):
                    # behind a batch that failed for good (keeping its number: it may be in a
                    # log), or in a request the producer ended itself because another leader
                    # took one of its partitions: nothing in the cluster to wait for, it goes at
                    # once (no attempt counted)
                    b.retry_at_ms = 0
                else:
                    self._back_off(b, sent_to[tp], now)
                if code != P.OUT_OF_ORDER_SEQUENCE:  # that one only follows an earlier batch's error
                    b.last_error = error
                if header is None or code not in (P.NOT_ENOUGH_REPLICAS, P.BUFFER_FULL):
                    self.metadata_cache.want_refresh()  # the leader may have moved (or died)
            else:
                if code == P.RECORD_TOO_LARGE:  # the topic's max.message.bytes may have fallen:
                    self.metadata_cache.want_refresh()  # the batches made from now on fit it
                    if b.record_count > 1 and not b.possibly_written and not written_after[i]:
                        # and this one goes again in two pieces (Kafka's producer splits too)
                        flights.awaiting[tp].discard(b)  # its pieces go in its place
                        retry[tp] += self._split(b)
                        continue
                if b.sequence >= 0:
                    dead.add(tp)
                if b.possibly_written and isinstance(error, RemoteError):  # the broker's words do not say so
                    error = RemoteError(code, error.message + MAY_HAVE_BEEN_WRITTEN)
                self._done(tp, b, -1, error, bool(retry.get(tp)))
        self._put_back(groups, retry, dead)

    def _back_off(self, b: BatchState, refused_by: tuple[str, int], now_ms: int) -> None:
        """``b`` goes again, after its retry backoff (see the module doc), unless the leader that
        refused it (``refused_by``: endpoint, leader epoch) is no longer the partition's."""
        s = self.settings
        # the backoff grows while one leader keeps refusing; another's (a failover) starts it over
        b.attempts = b.attempts + 1 if b.refused_by in (None, refused_by) else 1
        b.retry_at_ms = now_ms + retry_backoff_ms(b.attempts, s.retry_backoff_ms, s.retry_backoff_max_ms, s.retry_jitter)
        b.refused_by = refused_by

    def _done(self, tp: tuple[str, int], b: BatchState, base_offset: int, error: Exception | None,
              behind_retry: bool) -> None:
        """``b`` is finished -- written at ``base_offset``, or failed for good with ``error`` --:
        its future completes now, or, behind a batch of its partition that goes again
        (``behind_retry``: one the answer being read puts back), after that batch's."""
        if not self._flights.defers(tp, b, behind_retry):
            self._finish(b, base_offset, error)
            return
        if error is not None and b.sequence >= 0 and not self._stopping:
            self._reset_producer_id()  # its producer id goes now: later batches are numbered under the next
        self._flights.deferred[tp].append((b.position, b, base_offset, error))

    def _put_back(self, groups: list, retry: dict[tuple[str, int], list], dead: set[tuple[str, int]]) -> None:
        """The batches an answer sends again go back to their queues; what the answer says of
        its partitions is noted (``Flights``)."""
        flights = self._flights
        for tp, bs in retry.items():
            # behind what answers read before this one put back (earlier sequences), ahead of
            # the batches not yet sent; the partition sends nothing until its requests in
            # flight are answered
            q = self._queues[tp]
            at = flights.requeue_at(tp, len(bs))
            q.rotate(-at)
            q.extendleft(reversed(bs))
            q.rotate(at)
            flights.awaiting[tp].update(bs)  # (positions set at their first send)
        # (held: later batches are numbered under the next producer id only after these)
        flights.dead.update(dead)
        for tp, _ in groups:
            flights.settle(tp)
        # (the next pass sends them, or plans its wait for the end of their backoff: the
        # answer was read outside a pass, which is due one at once)

    def _split(self, b: BatchState) -> list[BatchState]:
        """``b``, refused as too large, as two pieces with its own producer id, epoch and
        sequence numbers (the leader refused it whole, before its sequence counted), to go
        again at the head of its partition's queue."""
        assert b.data is not None  # packed when it was sent
        h = B.parse_header(b.data)
        records = [(r.timestamp_ms, r.key, r.value, r.headers) for r in decode_batches(b.topic, b.partition, b.data)]
        self.splits += 1
        pieces = b.split(records, h.producer_id, h.producer_epoch, self.settings.compression)
        for i, c in enumerate(pieces):
            c.numbered_in = b.numbered_in  # numbered under its batch's id
            # its backoff, if the same leader refuses it again, grows on from its batch's (it goes at once)
            c.attempts, c.refused_by = b.attempts, b.refused_by
            c.position = (b.position or ()) + (i,)  # in its batch's place
        return pieces

    def _finish(self, b: BatchState, base_offset: int, error: Exception | None) -> None:
        if error is not None and b.sequence >= 0 and not self._stopping:
            self._reset_producer_id()
        self._complete(b, base_offset, error)

    def _complete(self, b: BatchState, base_offset: int, error: Exception | None) -> None:
        """``b``'s future, then those of the later batches of its partition that waited for it
        (``Flights.deferred``: their producer id, if they failed, was reset then)."""
        b.complete(base_offset, error)
        if b.parent is None:
            self.batches.release(b)
        elif b.parent.complete_from_pieces():  # the last piece of a split batch
            self.batches.release(b.parent)
        for later, offset, later_error in self._flights.finished((b.topic, b.partition), b):
            self._complete(later, offset, later_error)

    def _reset_producer_id(self) -> None:
        """A numbered batch failed for good: the broker still expects its sequence, so every
        later batch of the partition would fail out of order, forever. Start over under a new
        producer id (Kafka's producer-id reset). A batch in no log is numbered again when it is
        next packed (``_pack``); one that may be in a log keeps its numbers, so that its retry
        is still recognised as one."""
        self.producer_id = self.producer_epoch = -1
        self._id_generation += 1
        self._sequences.clear()

    def _fail_everything(self, error: Exception | None) -> None:
        """Fail every batch with ``error`` (None: closed, ProducerClosedError per batch)."""
        for waiting in self._unsent_oneway.values():
            for b in waiting:  # queued in the client: may have gone out
                b.possibly_written = True
                self._finish(b, -1, _end_error(b, error))
        self._unsent_oneway.clear()
        self._requeue_lost_oneway()  # failed with the queues below
        for q in self._queues.values():
            while q:
                b = q.popleft()
                self._finish(b, -1, _end_error(b, error))
        self.batches.close()  # first: an append after the take below is refused, not left to nobody
        for b in self.batches.take_ready(1 << 62):
            self._finish(b, -1, _end_error(b, error))
        # what a pass held in hand when a bug stopped the thread -- batches taken from their
        # queue for a request not yet sent, a reply's not yet handled, a take not yet queued:
        # in no queue, and never completed (``result()``, ``flush`` and ``on_complete`` waited
        # for ever) but for this look at every batch the accumulator has not seen finish
        for b in self.batches.close_all():
            for piece in b.pieces or (b,):  # (a batch sent in pieces completes when they all have)
                if not piece.event.is_set():
                    if piece.data is not None:  # built: it may have gone out, its answer unread
                        piece.possibly_written = True
                    self._finish(piece, -1, _end_error(piece, error))


def _end_error(b: BatchState, error: Exception | None) -> Exception:
    """The error that fails ``b`` when the producer ends: ``error`` (a bug stopped the I/O
    thread), saying so when an earlier send of ``b`` may be in the log; None: closed."""
    if error is None:
        return ProducerClosedError(b.possibly_written)
    if not b.possibly_written:
        return error
    maybe = FabricError(f"{error}{MAY_HAVE_BEEN_WRITTEN}")
    maybe.__cause__ = error.__cause__
    return maybe


def _written_after(batches: list[BatchState], results: list) -> list[bool]:
    """Per batch: a later one of its partition in the same request was written. Such a batch
    is not sent again in pieces: they would land after it, out of order."""
    after = [False] * len(batches)
    written: set[tuple[str, int]] = set()
    for i in range(min(len(batches), len(results)) - 1, -1, -1):
        tp = (batches[i].topic, batches[i].partition)
        after[i] = tp in written
        if results[i].base_offset >= 0 or not results[i].error:
            written.add(tp)
    return after
