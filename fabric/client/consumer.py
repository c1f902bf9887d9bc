"""The consumer client: assign partitions, seek, poll.

``poll()`` runs a reactor in the caller's thread: it keeps one FETCH in flight per leader
broker (covering every assigned partition that broker leads), buffers what comes back, and
returns records in offset order per partition. ``poll_batch()`` returns the same records as
``RecordBatchView``s, one per partition run, counted from the batch headers and unpacked only
when read (the batch path: no Python object per record unless asked for). Reads stop at the high watermark, so a
consumer never sees a record that could still be lost. ``poll(max_bytes=...)`` returns at most
that many bytes of keys and values and keeps the rest buffered (``_put_back``: positions and
epochs as a give-back leaves them, nothing fetched again); a give-back right after puts back what
it returned of the partition it cut, from the answer it cut (``_put_back_returned``), instead of
dropping the partition's buffer and fetching it all again. The buffer -- taking runs off it,
putting them back, dropping a partition's part of it -- is ``ConsumerBuffer``
(``fabric.client.consumer_buffer``), mixed in.

The fetching -- the FETCH per leader, the prefetch, what an answer is checked against, the
LIST_OFFSETS of a partition without a position -- is ``ConsumerFetch``
(``fabric.client.consumer_fetch``), mixed in. Failover -- a stalled fetch makes the consumer ask for metadata (with a backoff), and a
request whose leader moved is cancelled and sent to the new one at the same position -- is
``ConsumerFailover`` (``fabric.client.consumer_failover``), mixed in. Seeking, resets, the topic
id a position belongs to, give-back and the errors of a partition that cannot be positioned are
``ConsumerPositions`` (``fabric.client.consumer_positions``, the epochs: its base ``ConsumerEpochs``), mixed in too.

Consumer groups (``subscribe``/``commit``) build on this class; see ``fabric.client.group``.

Thread-safety: not thread-safe; use one Consumer per thread -- except ``wakeup``, which any
thread may call (Kafka's ``KafkaConsumer.wakeup``).
"""

from __future__ import annotations

import logging
import operator
import threading
from collections import deque
from typing import Any, Callable, Protocol

from fabric import protocol as P
from fabric.client.bootstrap import parse_bootstrap
from fabric.client.consumer_buffer import ConsumerBuffer
from fabric.client.consumer_failover import (METADATA_BACKOFF_MS, METADATA_BACKOFF_MS_MAX, METADATA_RETRY_MS,
                                             METADATA_TIMEOUT_MS, ConsumerFailover)
# AUTO_RESET and ResetSpec live in consumer_positions; importable from here as before
from fabric.client.consumer_positions import AUTO_RESET, ConsumerPositions, ResetSpec
# the fetch limits and _InFlight live in consumer_fetch; importable from here as before
from fabric.client.consumer_fetch import (BUFFERED_BYTES_MAX, FETCH_BYTES_MAX, FETCH_RETRY_BACKOFF_MS, FETCH_STALL_MS,
                                          FETCH_WAIT_MS, PARTITION_FETCH_BYTES_MAX, ConsumerFetch, _InFlight)
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.clock import Clock
from fabric.errors import FabricError, RemoteError, TopicNotInMetadataError
from fabric.metadata import ClusterMetadata
from fabric.reactor import Reactor
from fabric.decoded_batches import HeldBytes
from fabric.records import Record, RecordBatchView
from fabric.rpc import RpcClient
from fabric.zmq_context import context as zmq_context

# the metadata limits live in consumer_failover, the fetch ones in consumer_fetch; importable from here as before
__all__ = ["AUTO_RESET", "FETCH_RETRY_BACKOFF_MS", "FETCH_STALL_MS", "FETCH_WAIT_MS", "METADATA_BACKOFF_MS",
           "METADATA_BACKOFF_MS_MAX", "METADATA_RETRY_MS", "METADATA_TIMEOUT_MS", "ResetSpec", "STALL_CHECK_INTERVAL_MS",
           "Consumer", "ConsumerClient", "TopicPartition", "_InFlight"]

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
_KEY, _VALUE = operator.itemgetter(4), operator.itemgetter(5)  # of a Record
STALL_CHECK_INTERVAL_MS = 100  # how often requests in flight are checked for a stall
# ``poll(max_bytes=...)`` unpacks a view in pieces of this many records at least: about what fits,
# not all that the take moved off the buffer (``_piece_records``)
CUT_PIECE_RECORDS_MIN = 64


class ConsumerClient(Protocol):
    """What the consumer needs of an RPC client to one endpoint (``fabric.rpc.RpcClient``)."""

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int) -> int: ...

    def cancel(self, request_id: int) -> bool: ...

    def close(self) -> None: ...


def _records_within(rows: list[Record], room: int, *, at_least_one: bool) -> tuple[int, int]:
    """How many of ``rows``, from the first, have keys and values of at most ``room`` bytes (one
    at least if ``at_least_one``), and their bytes."""
    size = sum(map(len, map(_VALUE, rows))) + sum(map(len, filter(None, map(_KEY, rows))))
    if size <= room:
        return len(rows), size  # the common case, counted without a Python-level loop
    size = 0
    for i, r in enumerate(rows):
        n = len(r.value) + len(r.key or b"")
        if size + n > room and (i or not at_least_one):
            return i, size
        size += n
    return len(rows), size


def _split_at(views: list[RecordBatchView], i: int, count: int) -> None:
    """``views[i]`` as two, its first ``count`` records (fewer than it holds) and the rest; the
    fetched bytes stay with the rest (what stays buffered longest)."""
    view = views[i]
    head, rest = view.split(count)
    assert rest is not None
    views[i:i + 1] = [head, rest]


def _piece_records(returned: int, returned_bytes: int, room: int) -> int:
    """How many records of a view ``poll(max_bytes=...)`` unpacks next, ``returned`` records of
    ``returned_bytes`` in hand and ``room`` bytes left: what fits at their average size, and a
    quarter more (all the rest once the room is far from spent: one piece more, not many)."""
    if not returned or room <= 0:
        return CUT_PIECE_RECORDS_MIN
    return max(CUT_PIECE_RECORDS_MIN, room * returned // max(1, returned_bytes) * 5 // 4)


class Consumer(ConsumerFetch, ConsumerPositions, ConsumerFailover, ConsumerBuffer):
    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 auto_offset_reset: str = "latest", fetch_bytes_max: int = FETCH_BYTES_MAX,
                 partition_fetch_bytes_max: int = PARTITION_FETCH_BYTES_MAX, fetch_wait_ms: int = FETCH_WAIT_MS,
                 buffered_bytes_max: int = BUFFERED_BYTES_MAX, request_timeout_ms: int = 10_000,
                 clock: Clock | None = None, reactor: Any = None,
                 client_factory: Callable[[str], ConsumerClient] | None = None,
                 silence: CoordinatorSilence | None = None) -> None:
        """``clock``: the consumer's monotonic clock (a test passes a ``ManualClock``);
        ``reactor`` (default: a ``Reactor`` on it) and ``client_factory`` (endpoint -> an RPC
        client on that reactor; default ``RpcClient``): a test passes fakes. ``silence``: what
        its metadata asks learn of a silent coordinator, shared with other clients of the same
        cluster on the same clock (a gateway's request threads); default: its own."""
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise FabricError("auto_offset_reset must be earliest, latest or none")
        for name, value in (("fetch_bytes_max", fetch_bytes_max), ("partition_fetch_bytes_max", partition_fetch_bytes_max),
                            ("buffered_bytes_max", buffered_bytes_max)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FabricError(f"{name} must be a positive number of bytes, got {value!r}")
        self.endpoints = parse_bootstrap(bootstrap, config_path)
        self.auto_offset_reset = auto_offset_reset
        self.fetch_bytes_max = fetch_bytes_max
        self.partition_fetch_bytes_max = partition_fetch_bytes_max
        # what it fetches ahead is bounded by bytes (fetched and not yet returned, with what the
        # fetches in flight may bring) as well as by records: records of 100 KiB, 200,000 of them
        # were 20 GB (``ConsumerFetch._send_fetches``)
        self.buffered_bytes_max = buffered_bytes_max
        self.fetch_wait_ms = fetch_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.ctx = zmq_context()
        self.clock = clock or Clock()
        self.reactor = reactor if reactor is not None else Reactor(self.clock)
        self._client_factory = client_factory or self._rpc_client
        self.metadata = ClusterMetadata.empty()
        self._md_in_flight = False      # a metadata request in flight or waiting out its backoff
        self._md_index = 0
        # a coordinator silent lately is asked after the brokers
        self._md_silence = silence if silence is not None else CoordinatorSilence()
        self._md_backoff_ms = METADATA_BACKOFF_MS
        self._md_next_ms = 0            # no metadata request before this
        self._md_asked = 0              # metadata requests sent so far
        self._md_answered = 0           # the latest of them (by that count) answered with metadata
        # auto_offset_reset "none": per partition waiting for a position, the metadata requests sent
        # when it began to (``_heard_since_waiting``)
        self._waiting_since_asked: dict[TopicPartition, int] = {}
        self._clients: dict[str, ConsumerClient] = {}
        self.positions: dict[TopicPartition, int | None] = {}  # next offset poll() returns; None: reset
        self._fetch_positions: dict[TopicPartition, int] = {}  # next offset to fetch (prefetch)
        self._reset_specs: dict[TopicPartition, ResetSpec] = {}
        self.buffered_records_max = 200_000
        self.high_watermarks: dict[TopicPartition, int] = {}
        # per assigned partition, the highest HW a fetch of its current reading was answered with,
        # or the group's committed offset it started at (none since a seek or a reset): a position
        # at or below it was in the log, and an out-of-range answer there is a truncation
        # (``ConsumerPositions._out_of_range``), not a position to reset by the policy
        self._read_hw: dict[TopicPartition, int] = {}
        # per partition, the leader epoch of the batch of the record before its position (taken),
        # and of the record before its fetch position (buffered): a fetch names it (KIP-320), and
        # the leader answers where its log parts from the one read (``_diverged``). None after a
        # seek or a reset until a take sets it again: nothing is checked meanwhile (a give-back
        # names the epoch of the record taken before where it moved: ``_move_to``)
        self._position_epochs: dict[TopicPartition, int] = {}
        self._fetch_epochs: dict[TopicPartition, int] = {}
        # per partition, (leader epoch, the first offset taken in it) for the epochs of the records
        # taken since the position was set from outside, as far as the position: a divergence into
        # an older epoch goes back to where the reading of a newer one began (``_diverged``)
        self._epoch_starts: dict[TopicPartition, list[tuple[int, int]]] = {}
        self._epochs_merged: set[TopicPartition] = set()  # past EPOCH_STARTS_KEPT: the oldest entry mixes epochs
        # fetched records not yet returned: views of runs of one partition in offset order
        # (per-run, not per-record, bookkeeping keeps poll() cheap; nothing unpacked yet)
        self._buffer: deque[RecordBatchView] = deque()
        self._buffered_records = 0
        # the fetched bytes the buffer holds: each answer's, counted on the view that holds them
        # last (``RecordBatchView.held``: a split leaves them on the rest) until it leaves the buffer
        self._buffered_bytes = 0
        # the runs the last poll returned of the partition it cut at max_bytes, as far back as they
        # are of the answer its rest put back is of (``_note_cut``): they hold no bytes the buffer
        # does not, and a give-back to them puts them back instead of fetching again
        # (``_put_back_returned``). Kept only while that rest is buffered: until the next take, or
        # until anything drops the partition's buffer (a seek, a reset, an assignment)
        self._returned_of_cut: list[RecordBatchView] = []
        # ... and what the batches decoded for the views of those answers take beside them: a
        # poll that cuts a batch leaves it decoded whole for the rest of it, buffered
        # (``fabric.decoded_batches``); counted on the view that holds the bytes, as they are
        self._decoded = HeldBytes()
        self._fetching: dict[str, _InFlight] = {}  # endpoint -> its one fetch in flight
        self._resetting: dict[TopicPartition, _InFlight] = {}  # LIST_OFFSETS in flight
        self._held_until_ms: dict[TopicPartition, int] = {}  # not fetched before (a refused fetch)
        self._init_positions()  # the state of ConsumerPositions' rules
        self._first_seen: dict[str, tuple[str | None, int]] = {}  # ``_note_first_seen``
        self._unseen: dict[str, int] = {}  # ``_began_reading``
        self._closed = False
        self._woken = threading.Event()  # ``wakeup``: the poll waiting (or the next one) returns now
        self._stall_timer = self.reactor.call_every(STALL_CHECK_INTERVAL_MS, self._check_stalls)

    # -- assignment ---------------------------------------------------------------------------
    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly these partitions (positions start per auto_offset_reset unless seeked)."""
        keep = {tp: self.positions.get(tp) for tp in partitions}
        for tp in self.positions:
            if tp not in keep:
                self._forget_reset(tp)
        self.positions = keep
        # a partition kept keeps its position, and so what the last poll's give-back may undo
        self._taken = {tp: o for tp, o in self._taken.items() if tp in keep}
        self._fetch_positions = {tp: o for tp, o in self._fetch_positions.items() if tp in keep}
        # with its fetch position: left behind, a partition assigned again named the epoch of the
        # records buffered before at the position it starts at now (a committed offset)
        self._fetch_epochs = {tp: e for tp, e in self._fetch_epochs.items() if tp in keep}
        self._read_in = {tp: i for tp, i in self._read_in.items() if tp in keep}
        self._read_hw = {tp: h for tp, h in self._read_hw.items() if tp in keep}
        self._position_epochs = {tp: e for tp, e in self._position_epochs.items() if tp in keep}
        self._epoch_starts = {tp: e for tp, e in self._epoch_starts.items() if tp in keep}
        self._epochs_merged = {tp for tp in self._epochs_merged if tp in keep}
        self._positioned_in = {tp: i for tp, i in self._positioned_in.items() if tp in keep}
        self._ahead_of_metadata = {tp: i for tp, i in self._ahead_of_metadata.items() if tp in keep}
        self._ahead_since = {tp: s for tp, s in self._ahead_since.items() if tp in keep}
        self._keep_buffered(lambda tp: tp in keep)
        self._began_reading()

    def _topics_read(self) -> set[str]:
        """The topics this consumer reads: those of its assignment (a group member: its subscription)."""
        return {t for t, _ in self.positions}

    def assignment(self) -> list[TopicPartition]:
        return sorted(self.positions)

    # -- polling ------------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 1000, max_records: int = 10_000, *, max_bytes: int | None = None) -> list[Record]:
        """Records after the current positions (advancing them); waits up to ``timeout_ms``
        for at least one. ``max_bytes``: of keys and values, at most this many (one record at
        least); the records past it stay buffered for the next poll (a consumer service's
        instance answers a REST fetch's ``max_bytes`` so). A batch that is not what its header
        says ends the records returned before it, and the next poll raises
        RemoteError(corrupt_message) with the position at it, as long as it is there (Kafka's
        consumer does the same): the positions went past every run of this poll when they were
        taken, and a corrupt batch or the runs after it left behind them would be skipped -- and
        committed by the next auto-commit. Any other exception once records were taken (a
        KeyboardInterrupt while they are unpacked) moves the positions back to where this poll
        began, for the same reason."""
        out: list[Record] = []
        views = self._poll_views(timeout_ms, max_records)
        room = max_bytes
        try:
            self._woken.clear()
            i = 0
            while i < len(views):
                if room is not None and len(views[i]) > (piece := _piece_records(len(out), max_bytes - room, room)):
                    # a piece at a time (the rest next): unpacked whole, a view of up to max_records
                    # was unpacked to return what fits, and again by every poll while put back (a
                    # REST fetch of 64 records of the 5,000 taken unpacked ~40 times what it returned)
                    _split_at(views, i, piece)
                view = views[i]
                try:
                    rows = view.records()
                except RemoteError:
                    first = view.first_batch_records()
                    if first < len(view):
                        # the corrupt batch may be a later one: the first batch alone, then the rest --
                        # else the good batches fetched with a corrupt one were never returned, and
                        # the position of the error was the run's start, not the corrupt batch's
                        _split_at(views, i, first)
                        continue
                    if not out:
                        raise
                    self.give_back([((v.topic, v.partition), v.first_offset) for v in views[i:]])
                    return out
                if room is not None:
                    fit, size = _records_within(rows, room, at_least_one=not out)
                    if fit < len(rows):
                        out += rows[:fit]
                        # put back, not given back: a give-back drops what is buffered of the
                        # partition and fetches it again (a REST client's small max_bytes read
                        # each byte from the brokers many times over, and waited for a long poll)
                        rest, returned = view, views[:i]
                        if fit:
                            head, rest = view.split(fit)  # the fetched bytes stay with the rest (``split``)
                            returned.append(head)
                        self._put_back([rest, *views[i + 1:]])
                        self._note_cut(returned, rest)
                        return out
                    room -= size
                out += rows
                i += 1
        except BaseException:  # also a KeyboardInterrupt while unpacking: none reach the application
            self.give_back([((v.topic, v.partition), v.first_offset) for v in views])
            raise
        return out

    def poll_batch(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[RecordBatchView]:
        """``poll`` as views: the records after the current positions (advancing them past
        every record returned), at most ``max_records`` in all, as one ``RecordBatchView`` per
        run of one partition, in offset order per partition; waits up to ``timeout_ms`` for
        at least one. A view reads its records from the fetched bytes when first asked
        (``values``, ``keys``...; see ``fabric.records.RecordBatchView``): a view that then
        raises (a corrupt batch) has its partition's position past it already -- seek back to
        its ``first_offset`` to read it again, as ``poll`` does for its caller."""
        views = self._poll_views(timeout_ms, max_records)
        self._woken.clear()
        return views

    def wakeup(self) -> None:
        """Any thread: the poll waiting for records returns what it has (none) within one of
        its passes (100 ms), or the next poll does, as a poll whose timeout ran out -- nothing
        is lost or skipped (a consumer service stopping answers its fetch in flight so). A
        wakeup that comes just as a poll returns can be cleared by that poll's end instead of
        cutting the next one short: a caller stopping for good checks its own flag as well (the
        consumer service does)."""
        self._woken.set()

    def _poll_views(self, timeout_ms: int, max_records: int) -> list[RecordBatchView]:
        """What ``poll`` and ``poll_batch`` share (a group consumer joins and commits here)."""
        if self._closed:
            raise FabricError("consumer is closed")
        # a give-back moves back what this poll takes, never what an earlier one took
        self._taken, self._taken_to, self._returned_of_cut = {}, {}, []
        deadline = self.clock.now_ms() + timeout_ms
        passes = 0
        while True:
            self._send_fetches()
            self._raise_position_error()
            if self._buffer:
                # the replies in flight land first (their callbacks -- ``on_commit`` -- run), before
                # the take moves any position: a callback never sees a position past records this
                # poll has not returned, nor commits one (after the take, a commit there covered them)
                self.reactor.run_once(0)
                passes += 1
                if self._buffer:  # else a seek, a reset in that pass dropped it
                    return self._take(max_records)
                continue
            left = deadline - self.clock.now_ms()
            if (left <= 0 or self._woken.is_set()) and passes:
                return []  # the wakeup is cleared by ``poll``: the group consumer's loops around this end too
            # at least one pass, without waiting when the time is up: answers already in are
            # read, so that polls with no wait (timeout 0) get what is there, as Kafka's
            # poll(0) does, instead of never reading the answers to their own fetches
            self.reactor.run_once(max(0, min(left, 100)))
            passes += 1

    def _awaits_position(self, tp: TopicPartition) -> bool:
        """``tp`` has no position, and another part finds it (a group consumer's lookup of
        the committed offset): it is not reset to ``auto_offset_reset`` meanwhile."""
        return False

    def _rpc_client(self, endpoint: str) -> RpcClient:
        # a metadata ask of a node whose port refuses the connection (dead) ends at once: the
        # next endpoint is asked, not after the ask's timeout (the coordinator's: 1 s)
        return RpcClient(self.ctx, self.reactor, endpoint, identity="consumer", fail_on_refused=(P.METADATA,))

    def _client(self, endpoint: str) -> ConsumerClient:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = self._client_factory(endpoint)
        return c

    # -- metadata, closing --------------------------------------------------------------------
    def partitions_for(self, topic: str, timeout_ms: int = 5000) -> list[int]:
        """Partition numbers of ``topic`` (waits up to ``timeout_ms`` for metadata that has it).
        Raises ``TopicNotInMetadataError``."""
        deadline = self.clock.now_ms() + timeout_ms
        while True:
            t = self.metadata.topics.get(topic)
            if t is not None:
                return [p.partition for p in t.partitions]
            if self.clock.now_ms() >= deadline:
                raise TopicNotInMetadataError(f"topic {topic!r} not found")
            self._refresh_metadata()
            self.reactor.run_once(100)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stall_timer.cancel()  # the reactor may be shared and live on (a consumer service)
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        # what was fetched ahead, let go now: reference cycles (the reactor's callbacks, the
        # clients', a heartbeat thread's) keep a closed consumer until a full collection, which
        # a node runs seldom (nodes/run.py), and a consumer service whose instances came and went
        # grew by every one's buffered records meanwhile
        self._keep_buffered(lambda tp: False)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
