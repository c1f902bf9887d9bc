"""The producer's requests in flight, per partition, and the order their answers are read in.

Up to ``max_in_flight`` PRODUCE requests of one partition may be in flight at once (Kafka's
``max.in.flight.requests.per.connection``), so that a record sent while a request is on its way
leaves at once instead of waiting out a round trip. The rules that keep a partition's records
in order and each written once with more than one request in flight:

- A partition's requests in flight all go to one broker at one leader epoch, their batches
  numbered under one producer id: a request goes to a new leader, or with batches numbered
  under the id that follows a reset, only once every request in flight is answered (a batch
  of the old id refused before its write is numbered again under the new one: it must be
  numbered before any batch behind it).
- The batches of a partition in flight, over all its requests, are at most
  ``PARTITION_BATCHES_MAX`` -- as many as a broker remembers per producer to recognise a retry
  (nodes/broker/producers.py), so the retries of every request in flight are all recognised.
- A broker's answers are read in the order their requests were sent to it (``answered``), also
  when they come back in another (a request parked for one partition's high watermark may be
  answered after a later one that does not wait for it): a partition's batches complete in
  sequence order, and an answer is read knowing what became of every earlier batch.
- Once an answer sends batches of a partition again, or fails one of its numbered batches for
  good, the partition is ``held``: no request of it goes out until every request in flight is
  answered, and the batches each answer puts back go behind those an earlier answer put back
  (``requeue_at``). A batch sent behind one that was not written is refused out of order by the
  broker (never written ahead of it: see ``follows`` below), and goes again in its place.
- Batches put back to go again (``awaiting``) go before any batch sent for the first time,
  and alone: no new batch of the partition goes while one of them is queued or in flight
  (with one request in flight, a retry's request starts with them, as before). A
  broker recognises a retry among its producer's last ``batches_max`` batches; a new batch
  written behind a retry whose answer is lost too would push the batch out of that memory
  (its next retry refused as an old duplicate, failed though written).
- A producer without idempotence keeps one request per partition in flight (the sender makes
  its ``Flights`` so): with no sequences, a broker cannot refuse a batch that overtakes an
  earlier one refused before its write.
- A batch written, or failed for good, while an earlier one of its partition goes again (its
  answer lost, or refused after its write) completes only once every earlier one has
  (``awaiting``, ``deferred``): a partition's delivery callbacks, failures too, run in the
  order its records were sent.
- A batch sent behind another of its partition not yet answered (in an earlier request in
  flight, or earlier in the same request) is marked ``follows`` on the wire: a broker that does
  not know the producer then refuses it out of order instead of taking it at any sequence (it
  would be written ahead of the earlier batch, had that one been refused before its write).

I/O thread only, but for ``can_take`` (read without a lock from the application's thread: a
stale answer costs a wake-up or a wait for the next tick).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Iterator

TopicPartition = tuple[str, int]
MAX_IN_FLIGHT_MAX = 5  # as Kafka's idempotent producer allows


@dataclass(slots=True)
class Flight:
    """One request in flight, as one partition sees it."""

    endpoint: str
    sent_ms: int
    leader_epoch: int
    batches: int  # of this partition in the request
    numbered_in: int  # the producer-id generation its batches are numbered in


class Answer:
    """A request's answer slot: filled when it comes, read in the order the requests were sent."""

    __slots__ = ("request", "reply")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.reply: Any = None  # None until answered


class Busy:
    """``Flights.busy``: a container of partitions, answered when asked; it keeps those it
    answered busy, for ``any_freed``."""

    __slots__ = ("_flights", "_queues", "_said")

    def __init__(self, flights: "Flights", queues: dict[TopicPartition, Any]) -> None:
        self._flights, self._queues = flights, queues
        self._said: list = []  # the partitions answered busy (an open batch each: asked per open batch)

    def __contains__(self, tp: object) -> bool:
        if self._busy(tp):
            self._said.append(tp)
            return True
        return False

    def _busy(self, tp: Any) -> bool:
        return bool(self._queues.get(tp)) or (tp in self._flights and not self._flights.can_take(tp))

    def any_freed(self) -> bool:
        """A partition answered busy is not any more (its queue sent, or failed, since)."""
        return any(not self._busy(tp) for tp in self._said)


class Flights:
    def __init__(self, max_in_flight: int, batches_max: int) -> None:
        assert max_in_flight >= 1 and batches_max >= 1
        self.max_in_flight = max_in_flight
        self.batches_max = batches_max
        self._of: dict[TopicPartition, deque[Flight]] = {}      # oldest first; absent: none in flight
        self._answers: dict[str, deque[Answer]] = defaultdict(deque)  # per broker, in sending order
        # since a partition's requests in flight began: batches its answers put back (``retrying``),
        # and the partitions an answer failed a numbered batch of for good; either holds the
        # partition (``held``) until every request in flight is answered (``settle``)
        self._requeued: dict[TopicPartition, int] = defaultdict(int)
        self.dead: set[TopicPartition] = set()
        # batches put back to go again, not yet finished; and the batches answered after them,
        # as (position, batch, base offset, error or None), to complete in this order once
        # those have
        self.awaiting: dict[TopicPartition, set] = defaultdict(set)
        self.deferred: dict[TopicPartition, list] = defaultdict(list)

    # -- what may go ---------------------------------------------------------------------------
    def __contains__(self, tp: TopicPartition) -> bool:
        """A request of ``tp`` is in flight."""
        return tp in self._of

    def retrying(self, tp: TopicPartition) -> bool:
        """An answer read while ``tp``'s requests are in flight sent batches of it again."""
        return tp in self._requeued

    def held(self, tp: TopicPartition) -> bool:
        """No request of ``tp`` goes until every one in flight is answered."""
        return tp in self._requeued or tp in self.dead

    def can_take(self, tp: TopicPartition) -> bool:
        """Another request of ``tp`` could go now, as far as its requests in flight say (any
        thread: read without a lock)."""
        flights = self._of.get(tp)
        return flights is None or (len(flights) < self.max_in_flight and not self.held(tp)
                                   and _batches(flights) < self.batches_max)

    def busy(self, queues: dict[TopicPartition, Any]) -> "Busy":
        """The partitions that cannot take another request now, or have batches ``queues``
        waiting (their open batches keep filling): asked per open batch, never listed (a pass
        of a producer with a thousand partitions in flight would build the set every time)."""
        return Busy(self, queues)

    def room(self, tp: TopicPartition, endpoint: str, leader_epoch: int, numbered_in: int) -> int:
        """How many batches of ``tp`` a request to ``endpoint`` (the leader at ``leader_epoch``),
        numbered in producer-id generation ``numbered_in``, may carry now: 0 while it cannot go
        (held, as many requests in flight as allowed, or those in flight went to another leader
        or epoch, or are numbered under another producer id: a batch of the old id refused
        before its write is numbered again under the new one, after the batches sent meanwhile
        -- behind them in sequence, ahead of them in the queue)."""
        flights = self._of.get(tp)
        if flights is None:
            return self.batches_max
        last = flights[-1]
        if not self.can_take(tp) or last.endpoint != endpoint or last.leader_epoch != leader_epoch \
                or last.numbered_in != numbered_in:
            return 0
        return self.batches_max - _batches(flights)

    def follows(self, tp: TopicPartition) -> bool:
        """The request just ``sent`` for ``tp`` follows another of it in flight."""
        return len(self._of[tp]) > 1

    def leader_epoch(self, tp: TopicPartition) -> int:
        """The leader epoch the newest request of ``tp`` was sent at."""
        return self._of[tp][-1].leader_epoch

    def each(self) -> Iterator[tuple[TopicPartition, Flight]]:
        for tp, flights in self._of.items():
            for f in flights:
                yield tp, f

    # -- sending and answers ---------------------------------------------------------------------
    def sent(self, tp: TopicPartition, endpoint: str, now_ms: int, leader_epoch: int, batches: int,
             numbered_in: int) -> None:
        flights = self._of.get(tp)
        if flights is None:
            flights = self._of[tp] = deque()
        flights.append(Flight(endpoint, now_ms, leader_epoch, batches, numbered_in))

    def expect(self, endpoint: str, request: Any) -> Answer:
        """A request to ``endpoint`` is going out: its answer is read after those sent before it."""
        a = Answer(request)
        self._answers[endpoint].append(a)
        return a

    def answered(self, endpoint: str, answer: Answer, reply: Any) -> Iterator[tuple[Any, Any]]:
        """``answer`` came (``reply``): the (request, reply) pairs now to be read, in sending
        order -- none while an earlier request to ``endpoint`` is unanswered."""
        answer.reply = reply
        q = self._answers[endpoint]
        while q and q[0].reply is not None:
            a = q.popleft()
            yield a.request, a.reply

    def landed(self, tp: TopicPartition) -> Flight:
        """The oldest request of ``tp`` in flight is answered (its answer about to be read): it."""
        flights = self._of[tp]
        flight = flights.popleft()
        if not flights:
            del self._of[tp]
        return flight

    def settle(self, tp: TopicPartition) -> None:
        """An answer of ``tp`` was read: with no request of it left in flight, it may go again
        (what was put back is at the head of its queue, in order)."""
        if tp not in self._of:
            self.dead.discard(tp)
            self._requeued.pop(tp, None)

    def defers(self, tp: TopicPartition, batch: Any, behind_retry: bool) -> bool:
        """``batch`` of ``tp`` was written or failed for good: True if its completion waits
        (``deferred``) for an earlier batch that goes again -- one ``awaiting`` (by
        ``position``: the order of first sends), or (``behind_retry``) one the answer being
        read puts back."""
        waiting = self.awaiting.get(tp)
        if waiting:
            waiting.discard(batch)
        return behind_retry or bool(waiting) and min(b.position for b in waiting) < batch.position

    def finished(self, tp: TopicPartition, batch: Any) -> list:
        """``batch`` of ``tp`` is finished: the deferred completions no batch ``awaiting`` is
        earlier than any more, as (batch, base offset, error or None) in order, to complete now."""
        waiting = self.awaiting.get(tp)
        if waiting is not None:
            waiting.discard(batch)
            if not waiting:
                del self.awaiting[tp]
        deferred = self.deferred.get(tp)
        if not deferred:
            return []
        floor = min(b.position for b in waiting) if waiting else None
        deferred.sort(key=lambda d: d[0])
        n = len(deferred) if floor is None else sum(1 for d in deferred if d[0] < floor)
        out, deferred[:] = deferred[:n], deferred[n:]
        if not deferred:
            del self.deferred[tp]
        return [(b, offset, error) for _, b, offset, error in out]

    def requeue_at(self, tp: TopicPartition, count: int) -> int:
        """Where in ``tp``'s queue ``count`` batches an answer sends again go: behind those that
        answers read before it put back (earlier sequences), ahead of every batch not yet sent."""
        at = self._requeued[tp]
        self._requeued[tp] += count
        return at


def _batches(flights: deque[Flight]) -> int:
    """The batches of a partition in its requests in flight (at most ``max_in_flight`` of them).
    Copied first, in one C call: ``can_take`` runs on application threads, and the I/O thread
    sending or landing a request between two steps of the loop made it raise "deque mutated
    during iteration" out of ``send``."""
    return sum(f.batches for f in tuple(flights))
