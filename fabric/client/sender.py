"""The producer's I/O thread: a reactor that packs closed batches, sends them to partition
leaders, handles replies and retries, and keeps the metadata cache fresh.

Per partition, up to ``max_in_flight`` PRODUCE requests are in flight, to one leader; each
carries the batches queued for the partition when it left (in sequence order), and batches for
all partitions led by one broker share one request. How order and exactly-once writes hold with
more than one in flight, and the order answers are read in: ``fabric.client.sender_flights``.
A retriable failure puts the batches back at the head of their queue, so order and sequence
numbers hold across retries. A partition that fresh metadata shows gone from its
topic fails its batches at once; a topic missing from the metadata altogether is waited for, up
to the delivery timeout (``fabric.client.sender_queues``).

The sender depends on three narrow things, not on the producer that owns it: its
``SenderSettings``, a ``BatchSource`` (the record accumulator: ``take_ready``, ``release``, and
``close`` and ``close_all`` when the producer ends)
and a ``MetadataCache`` (which it keeps fresh). RPC clients come from ``client_factory``
(one per broker endpoint), so tests hand it recording fakes.

What a reply does to its batches (done, retried, split, failed), the producer-id reset and
failing everything at close are ``SenderReplies`` (``fabric.client.sender_replies``), mixed in;
the asks to the cluster (metadata, a producer id) and what fresh metadata does to the requests
in flight are ``SenderAsks`` (``fabric.client.sender_asks``), mixed in too; so are
``SenderRequests`` (``fabric.client.sender_requests``: a batch's numbering and bytes, the PRODUCE
request built from what ``_send_ready`` chose, and acks=0's one-way requests until written) and
``SenderQueues`` (``fabric.client.sender_queues``: the delivery timeout of batches not yet sent,
and a partition gone from the metadata). This module keeps the thread, the pass and the choice
of what goes (``_send_ready``).

A batch sent again after a retriable answer waits out its retry backoff first (exponential,
``retry_backoff_ms`` up to ``retry_backoff_max_ms``, with jitter; skipped once the metadata
names a new leader): the partition's queue sends nothing before it ends (``_send_ready``), other
partitions go on. See ``fabric.client.sender_replies``.

Between passes the I/O thread sleeps until the first thing it has to do at a time (a lingering
batch falls due, a queued batch's delivery timeout or retry backoff ends, a metadata or
producer-id ask goes again), at most ``IDLE_WAIT_MS``; messages, timers and ``wake`` end the sleep sooner. A batch
opened while it sleeps wakes it if due before it would look (``sleeps_past``), as Kafka's sender
polls for the accumulator's next ready time. What calls for a pass and wakes nothing gets the
next one at once (``poll_wait_ms`` 0): metadata wanted or a producer id reset (by the pass, or
by a timer run after it: a stalled request, a request's timeout, the metadata's age), an answer
read after the pass, a partition the pass freed whose open batch it had left behind the
partition's queue, batches one request could not carry. (It used to pass every millisecond at
``linger_ms`` 0: 6 % of a core for an idle producer.)

Thread-safety: ``wake``, ``sleeps_past``, ``partition_idle``, ``partition_count``, ``metadata``, ``on_io_thread`` and
``stop`` may be called from any thread; everything else runs on the I/O thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable, Container, Protocol

from fabric import protocol as P
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.client.futures import BatchState
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender_flights import Flights
from fabric.client.sender_asks import METADATA_RETRY_MS, METADATA_TIMEOUT_MS, REQUEST_STALL_MS, SenderAsks
from fabric.client.sender_queues import SenderQueues
from fabric.client.sender_replies import RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS, RETRY_JITTER, SenderReplies
from fabric.client.sender_requests import SenderRequests
from fabric.clock import Clock
from fabric.errors import FabricError, RemoteError, RequestTimeout
from fabric.hoptrace import mark
from fabric.metadata import ClusterMetadata
from fabric.reactor import Reactor
from fabric.rpc import RpcClient
from fabric.waker import Waker
from fabric.zmq_context import context as zmq_context

# The longest the I/O thread sleeps with nothing due (messages, timers and wake-ups end it sooner)
IDLE_WAIT_MS = 100
# "Not asleep": what ``sleeps_past`` reads while a pass runs (a batch opened then wakes the thread)
_AWAKE = 1 << 62

# the retry backoff's defaults live in sender_replies, the asks' timings in sender_asks; importable from here as before
__all__ = ["METADATA_MAX_AGE_MS", "METADATA_RETRY_MS", "METADATA_TIMEOUT_MS", "PARTITION_BATCHES_MAX",
           "REQUEST_BATCHES_MAX", "REQUEST_BYTES_TARGET", "IDLE_WAIT_MS", "REQUEST_STALL_MS", "RETRY_BACKOFF_MAX_MS",
           "RETRY_BACKOFF_MS", "RETRY_JITTER", "BatchSource", "Sender", "SenderClient", "SenderSettings"]

log = logging.getLogger(__name__)

REQUEST_BYTES_TARGET = 8 * 1024 * 1024
REQUEST_BATCHES_MAX = 512  # payload frames per request (the wire allows P.FRAMES_MAX)
PARTITION_BATCHES_MAX = 32  # batches of one partition per request: the broker remembers as many
                            # per producer (nodes.broker.producers) to recognise a retry
METADATA_MAX_AGE_MS = 5000   # refresh at least this often (new partitions, moved leaders)
STOP_JOIN_S = 5.0            # ``stop`` waits this long at most for the I/O thread to fail what is left and end


@dataclass(frozen=True)
class SenderSettings:
    acks: int = -1                  # 0, 1 or -1 (all)
    compression: int = 0            # fabric.records.COMPRESSION_CODECS value
    idempotent: bool = True         # producer id + per-partition sequence (not with acks=0)
    delivery_timeout_ms: int = 120_000
    request_timeout_ms: int = 30_000
    max_in_flight: int = 1          # PRODUCE requests per partition in flight at once (sender_flights;
                                    # the Producer asks for 2 by default)
    # a batch sent again after a retriable answer waits retry_backoff_ms, doubled per attempt up
    # to retry_backoff_max_ms, +/- retry_jitter of it (sender_replies); 0 <= base <= max
    retry_backoff_ms: int = RETRY_BACKOFF_MS
    retry_backoff_max_ms: int = RETRY_BACKOFF_MAX_MS
    retry_jitter: float = RETRY_JITTER


class BatchSource(Protocol):
    """What the sender needs of the record accumulator."""

    next_due_ms: int | None  # when the first batch ``take_ready`` left open falls due (None: none)

    def take_ready(self, now_ms: int, busy: Container[tuple[str, int]] = ()) -> list[BatchState]: ...

    def release(self, batch: BatchState) -> None: ...

    def close(self) -> None: ...

    def close_all(self) -> list[BatchState]: ...


class SenderClient(Protocol):
    """What the sender needs of an RPC client (``fabric.rpc.RpcClient``)."""

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int) -> Any: ...

    def send_oneway(self, command: bytes, header: dict, payloads: Any = (),
                    on_written: Callable[[bool], None] | None = None) -> bool: ...

    def fail_all(self, error: RemoteError) -> None: ...

    def close(self) -> None: ...


class Sender(SenderAsks, SenderReplies, SenderRequests, SenderQueues, threading.Thread):
    def __init__(self, settings: SenderSettings, batches: BatchSource, metadata: MetadataCache,
                 endpoints: list[str], *, clock: Clock | None = None,
                 client_factory: Callable[[str], SenderClient] | None = None) -> None:
        """``client_factory(endpoint)``: the RPC client to one node (default: an ``RpcClient``
        on this thread's reactor)."""
        super().__init__(name="loom-producer-io", daemon=True)
        assert 0 <= settings.retry_backoff_ms <= settings.retry_backoff_max_ms and 0 <= settings.retry_jitter < 1, settings
        self.settings = settings
        self.batches = batches
        self.metadata_cache = metadata
        self.endpoints = endpoints
        self.idempotent = settings.idempotent and settings.acks != 0
        self.clock = clock or Clock()
        self.ctx = zmq_context()
        self._waker = Waker()
        self._client_factory = client_factory or self._rpc_client
        self._md_in_flight = False
        self._md_endpoint_index = 0
        self._md_retry_at_ms = 0  # no metadata ask before this, after one that got no answer
        self._md_silence = CoordinatorSilence()  # a coordinator silent lately is asked after the brokers
        self.producer_id = -1
        self._id_generation = 0  # producer ids had so far (a reset starts the next)
        self.producer_epoch = -1
        self._pid_in_flight = False
        self._pid_retry_at_ms = 0  # no INIT_PRODUCER_ID before this, after one that got no id
        self.producer_id_errors: Counter[str] = Counter()  # error type -> INIT_PRODUCER_IDs it ended
        self._sequences: dict[tuple[str, int], int] = defaultdict(int)
        self._queues: dict[tuple[str, int], deque[BatchState]] = defaultdict(deque)
        # partitions a send on this thread named beyond the count held -> the metadata cache's
        # answers then (``expect_partition``)
        self._expected: dict[tuple[str, int], int] = {}
        # the requests in flight. Without idempotence, one per partition: no sequence lets a
        # broker refuse a batch that overtakes an earlier one refused before its write (and
        # sent again after it), so a second request in flight could reorder the partition
        self._flights = Flights(settings.max_in_flight if settings.idempotent else 1, PARTITION_BATCHES_MAX)
        self._positions = itertools.count()  # batches' places in their partitions' order (first send)
        # acks=0: the batches of each one-way request not yet written to the kernel, and of
        # those dropped unwritten (a lost connection), to go again; by request, in sending order
        self._unsent_oneway: dict[int, list[BatchState]] = {}
        self._lost_oneway: dict[int, list[BatchState]] = {}
        self._oneway_numbers = itertools.count()
        self._clients: dict[str, SenderClient] = {}
        self._stopping = False
        self._shut = False
        # when the I/O thread next looks without being woken (``_AWAKE`` during a pass), and
        # the first time something is due as the last pass left things (None: nothing)
        self._sleeps_until_ms = _AWAKE
        self._due_ms: int | None = None
        self._passing = False  # ``run_pass`` runs (an answer read outside one is due a pass: ``_send_request``)
        self.reactor: Any = None  # a fabric.reactor.Reactor (or a test's fake), set by attach()
        self.errors: Counter[str] = Counter()  # error name -> batches that got it (retried or not)
        self.splits = 0  # batches (or pieces) refused as too large and sent again in two pieces
        self.failure: FabricError | None = None  # set if a programmer error stopped the I/O thread

    # -- any thread ------------------------------------------------------------------------
    @property
    def metadata(self) -> ClusterMetadata:
        return self.metadata_cache.current

    def wake(self) -> None:
        self._waker.wake()

    def sleeps_past(self, due_ms: int) -> bool:
        """Whether the I/O thread may be asleep past ``due_ms`` (a batch opened now, due then,
        must wake it). Read without a lock: a pass sets "awake" before it looks at the
        accumulator and the time it will sleep until only after, so a batch its look missed
        always reads one or the other."""
        return due_ms < self._sleeps_until_ms

    def partition_idle(self, tp: tuple[str, int]) -> bool:
        """Room for a request of ``tp``, and nothing queued for it -- or the I/O thread is in a
        pass, which may be sending what is queued, and has taken its batches from the
        accumulator already: the batch opened now goes at the next pass, not at an answer
        (read without a lock from another thread: a stale answer costs a wake-up)."""
        return self._flights.can_take(tp) and (not self._queues.get(tp) or self._sleeps_until_ms == _AWAKE)

    def partition_count(self, topic: str, max_block_ms: int) -> int:
        """Partitions of ``topic``; waits for metadata (up to max_block_ms) if unknown.
        Raises ``TopicNotInMetadataError``."""
        return self.metadata_cache.partition_count(topic, max_block_ms)

    def on_io_thread(self) -> bool:
        """True on the I/O thread (a delivery callback, an ``on_complete`` hook): it must never
        wait for itself."""
        return threading.current_thread() is self

    def start_sequence_at_for_testing(self, topic: str, partition: int, sequence: int) -> None:
        """Test hook: number the next batch of (topic, partition) from ``sequence``
        (0..2**31-1), so that a test reaches the 2**31 wrap without sending 2 billion records.
        Call before the first send to that partition."""
        assert 0 <= sequence <= 0x7FFFFFFF, sequence
        self._sequences[(topic, partition)] = sequence

    def stop(self, join_timeout_s: float = STOP_JOIN_S) -> None:
        """End the I/O thread, which fails every batch left (``ProducerClosedError``); waits
        up to ``join_timeout_s`` for it (it ends on its own after, within a poll)."""
        self._stopping = True
        self.metadata_cache.close()
        if self.on_io_thread():
            return  # from a callback: the loop ends when it returns, and shuts down (``run``)
        if self.is_alive():
            self.wake()
            self.join(timeout=join_timeout_s)
        elif not self._shut:
            self._shut_down()  # never started as a thread (a test drove it): release its sockets

    # -- the I/O thread ---------------------------------------------------------------------
    def run(self) -> None:
        reactor = Reactor(self.clock)
        reactor.add_waker(self._waker, _nothing)
        reactor.after_pass(self.run_pass)
        self.attach(reactor)
        try:
            while not self._stopping:
                reactor.run_once(self.poll_wait_ms())
        except Exception as e:  # a bug: every waiting record and every later send fails with it
            log.critical("the producer's I/O thread stopped on a programmer error", exc_info=True)
            self.failure = FabricError(f"the producer's I/O thread stopped: {type(e).__name__}: {e}")
            self.failure.__cause__ = e
            raise
        finally:
            reactor.remove_waker(self._waker)
            self._shut_down()

    def attach(self, reactor: Any) -> None:
        """Arm the sender's timers on ``reactor`` (``run`` does; a test passes a fake reactor
        and calls ``run_pass`` itself)."""
        self.reactor = reactor
        reactor.call_every(METADATA_MAX_AGE_MS, self.metadata_cache.want_refresh)
        reactor.call_every(REQUEST_STALL_MS // 4, self._check_stalls)

    def _shut_down(self) -> None:
        self._shut = True
        for c in self._clients.values():
            # requests in flight (a close whose flush timed out): their batches go back to the
            # queues as after any unanswered request, and are failed with the rest below
            c.fail_all(RequestTimeout("producer closed with the request in flight"))
        self._fail_everything(self.failure)  # None: ProducerClosedError, saying whether each may be written
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        self._waker.close()

    def _rpc_client(self, endpoint: str) -> RpcClient:
        # a metadata ask of a node that cannot be connected to (its port refuses: dead) ends at
        # once: the next endpoint is asked, not after the ask's timeout (the coordinator's: 1 s).
        # So does INIT_PRODUCER_ID, asked again at METADATA_RETRY_MS, each retry a connect of its
        # own: a coordinator restarted gives the id then, not at the connection's reconnect (its
        # backoff grows to seconds). Asked twice, it is harmless: each answer is a fresh id at
        # epoch 0 (nothing bumped), and an id nobody uses holds no state at any broker
        return RpcClient(self.ctx, self.reactor, endpoint, identity="producer",
                         fail_on_refused=(P.METADATA, P.INIT_PRODUCER_ID))

    def _client(self, endpoint: str) -> SenderClient:
        c = self._clients.get(endpoint)
        if c is None:
            assert self.reactor is not None
            c = self._clients[endpoint] = self._client_factory(endpoint)
        return c

    def run_pass(self) -> None:
        """One pass of the I/O thread: refresh metadata and the producer id if needed, take
        ready batches, expire the overdue, send what can go."""
        mark("sender.pass")
        self._sleeps_until_ms = _AWAKE  # before the accumulator is looked at (``sleeps_past``)
        self._passing = True
        now = self.clock.now_ms()
        if self.metadata_cache.take_wanted():
            self._refresh_metadata()
        if self.idempotent and self.producer_id < 0:
            self._init_producer_id()
        # a partition that cannot take another request now (or has batches waiting) takes no
        # lingering batch: its open batch fills meanwhile
        busy = self._flights.busy(self._queues)
        for b in self.batches.take_ready(now, busy):
            if not b.record_count:  # opened by an append a signal's exception cut before its record went in
                self._finish(b, -1, None)
                continue
            # from the batch's first send(), not from now: a batch held open behind a request in
            # flight would otherwise have the application wait up to twice the timeout
            b.deadline_ms = b.created_ms + self.settings.delivery_timeout_ms
            self._queues[(b.topic, b.partition)].append(b)
        self._requeue_lost_oneway()
        self._due_ms = self.batches.next_due_ms
        self._expire(now)  # also while waiting for a producer id: delivery_timeout_ms bounds that wait too
        if not (self.idempotent and self.producer_id < 0):  # else batches wait for the producer id
            self._send_ready()
        if busy.any_freed():
            # a partition whose open batch was left open behind its queue, and this pass sent or
            # failed that queue: it has room now (more than one request in flight), and the
            # batch goes at the next pass -- not at an answer, or the idle wake-up
            self._due_soon(now)
        self._passing = False

    def _due_soon(self, at_ms: int) -> None:
        if self._due_ms is None or at_ms < self._due_ms:
            self._due_ms = at_ms

    def poll_wait_ms(self) -> int:
        """How long the I/O thread's next poll may wait: until the first thing the last pass
        left due, at most ``IDLE_WAIT_MS``. From now until the next pass, ``sleeps_past``
        answers for that time."""
        now = self.clock.now_ms()
        # asked for since the pass looked, or by it: metadata (by the pass, or by a timer run
        # after it: a request stalled, or timed out, the metadata's age) and a producer id (a
        # pass that failed a numbered batch reset it), at once but not before their retries
        if self.metadata_cache.wanted and not self._md_in_flight:
            self._due_soon(max(now, self._md_retry_at_ms))
        if self.idempotent and self.producer_id < 0 and not self._pid_in_flight and self.metadata.coordinator:
            self._due_soon(max(now, self._pid_retry_at_ms))  # (no coordinator known: metadata is wanted)
        until = now + IDLE_WAIT_MS if self._due_ms is None else min(self._due_ms, now + IDLE_WAIT_MS)
        self._sleeps_until_ms = until
        return max(0, until - now)

    def _send_ready(self) -> None:
        by_broker: dict[str, list[tuple[tuple[str, int], list[BatchState]]]] = defaultdict(list)
        frames: dict[str, int] = defaultdict(int)
        gone: list[tuple[str, int]] = []
        more: list[tuple[tuple[str, int], str]] = []  # partitions left with batches a request could take now, and their leaders
        now = self.clock.now_ms()
        for tp, q in self._queues.items():
            if not q or (tp in self._flights and not self._flights.can_take(tp)):
                continue
            endpoint = self.metadata.leader_endpoint(*tp)
            if self._expected and endpoint is not None:
                self._expected.pop(tp, None)
            if endpoint is None:
                if tp in self._flights:
                    continue  # the answers first
                if self._partition_gone(tp):
                    gone.append(tp)
                else:
                    self.metadata_cache.want_refresh()  # no leader now, or a topic not (yet) known
                continue
            head = q[0]
            if head.retry_at_ms > now and head.refused_by is not None \
                    and not self.metadata.leader_moved(*tp, *head.refused_by):
                # backing off (sender_replies), behind it the partition's later batches; the
                # thread wakes when it ends. Another leader, or the same at a newer epoch: at once
                self._due_soon(head.retry_at_ms)
                continue
            # with more than one request in flight, batches sent again go before any batch
            # sent for the first time, and alone: a broker recognises a retry among its
            # producer's last PARTITION_BATCHES_MAX batches, so nothing is written behind a
            # batch that goes again but the batches in flight with it (a new one behind its
            # retry, whose answer is lost too, would push it out of the broker's memory:
            # refused as an old duplicate, though written). One at a time, a retry's request
            # starts with the batches put back and carries no more than the broker remembers
            again = self._flights.awaiting.get(tp) if self._flights.max_in_flight > 1 else None
            if again and q[0] not in again:
                continue  # the batches sent again are in flight: the others after them
            epoch = self.metadata.leader_epoch(*tp)
            room = self._flights.room(tp, endpoint, epoch, self._numbering(q[0]))
            if frames[endpoint] >= REQUEST_BATCHES_MAX or not room:
                if room:
                    more.append((tp, endpoint))
                continue  # next request to that broker, or after the answers of those in flight
            take: list[BatchState] = []
            size = 0
            while q and frames[endpoint] < REQUEST_BATCHES_MAX and len(take) < room and (not again or q[0] in again):
                data = self._pack(q[0], tp)
                # one producer id per partition in a request: a batch kept under an id since
                # reset (it may be in a log) goes alone, before any batch of the new id (which
                # the partition would take at any sequence, out of order, if the old one failed)
                if take and (size + len(data) > REQUEST_BYTES_TARGET or q[0].numbered_in != take[0].numbered_in):
                    break
                b = q.popleft()
                if b.position is None:
                    b.position = (next(self._positions),)
                take.append(b)
                size += len(data)
                frames[endpoint] += 1
            self._flights.sent(tp, endpoint, now, epoch, len(take), take[0].numbered_in)
            by_broker[endpoint].append((tp, take))
            if q:
                more.append((tp, endpoint))
        refused = {endpoint for endpoint, groups in by_broker.items() if not self._send_request(endpoint, groups)}
        # the next request (one broker's frames, or a partition's bytes, filled this one) goes at
        # the next pass, at once -- but not to a broker whose send queue refused a one-way
        # request: its writes, once the socket drains, end in a pass (another broker's go now)
        if any(ep not in refused and self._queues[tp] and self._flights.can_take(tp) for tp, ep in more):
            self._due_soon(now)
        for tp in gone:  # after the packing above: failing a numbered batch resets the producer id
            self._fail_partition_gone(tp, self._queues[tp])


def _nothing() -> None:
    """The I/O thread's wake-up handler: waking is all it takes (every pass runs ``run_pass``)."""
