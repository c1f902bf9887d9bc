"""The producer client: partitions, batches, sends, retries.

``send()`` (any thread) appends the record to its partition's open batch and returns a
``RecordFuture``; ``send_many()`` queues a list of records at once -- packed into batches by
C-backed calls, with no Python per record for keyless fixed-size values -- and returns one
``RecordFutures`` for them all. A batch closes at ``batch_records_max`` / ``batch_bytes_max`` or after
``linger_ms``. One I/O thread (a reactor) packs closed batches, sends them to partition
leaders -- up to ``max_in_flight`` requests per partition (2 by default: a record sent while
one is on its way leaves at once), each carrying the batches queued for it, with the answers
read in sending order so that order holds and retries cannot reorder
(``fabric.client.sender_flights``; a producer with ``idempotent=False`` keeps one: without
sequences, a broker could not refuse a batch that overtakes an earlier one refused before its
write) -- and resolves futures. Retriable errors (not_leader, timeouts, not_enough_replicas…)
refresh metadata and retry until ``delivery_timeout_ms``, each retry after a backoff:
``retry_backoff_ms`` (100) doubled per retry of the batch up to ``retry_backoff_max_ms`` (1000),
+/- 20 % jitter, during which the partition's later records wait behind it (skipped once the
metadata names a new leader). With ``idempotent=True`` (default) every batch carries the producer
id and a per-partition sequence, so a retried batch is never written twice. A record queued for
a partition that fresh metadata shows gone (the topic deleted and re-created with fewer
partitions) fails at once with ``UnknownTopicOrPartitionError``; keyed and keyless records sent
after that metadata arrived go to partitions the topic has.

Delivery callbacks and ``on_complete`` hooks run on the I/O thread, so nothing they call may
wait for it: a ``send``/``send_many`` there naming a partition beyond the count held (added
since the last refresh) is queued on trust, and the I/O thread checks it against fresh metadata
once the callback returns (failing its records with ``TopicNotInMetadataError`` if that has no
such partition either); one that would wait for a topic's metadata or for buffer space raises
``TopicNotInMetadataError`` or ``BufferExhaustedError`` at once; ``flush``, and a wait on a
future not yet done (``BatchState.wait``), raise ``FabricError``; ``close`` closes without
waiting (as ``close(0)``: what is not sent fails).

Thread-safety: ``send``, ``send_many``, ``flush`` and ``close`` are thread-safe.
"""

from __future__ import annotations

import logging
import time
from itertools import repeat
from typing import Any, Callable, Sequence

from engines import batch as B
from fabric.client.accumulator import BATCH_RECORDS_MAX, AccumulatorSettings, RecordAccumulator
from fabric.client.bootstrap import parse_bootstrap
from fabric.client.completion import Completion
from fabric.client.futures import BatchState, DeliveryCallback, RecordFuture, RecordFutures, RecordMetadata
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import STOP_JOIN_S, Sender, SenderSettings
from fabric.client.sender_flights import MAX_IN_FLIGHT_MAX
from fabric.client.sender_replies import RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS, RETRY_BACKOFF_MS_LIMIT
from fabric.clock import Clock
from fabric.errors import (BufferExhaustedError, ClientTimeoutError, FabricError, ProducerClosedError,
                           RecordSizeExceededError, TopicNotInMetadataError)
from fabric.metadata import ClusterMetadata
from fabric.records import COMPRESSION_CODECS, frozen_headers, pack_records, pack_values, partition_for_key

log = logging.getLogger(__name__)

__all__ = ["ACKS", "RECORD_OVERHEAD_BYTES", "BatchState", "Producer", "RecordFuture", "RecordFutures", "RecordMetadata"]

ACKS = {"0": 0, "1": 1, "all": -1, "-1": -1, 0: 0, 1: 1, -1: -1}
# what a record's msgpack takes besides its value and key, at most: array head 1, timestamp 9,
# key and value heads 5 each, nil headers 1 (records with headers add what ``frozen_headers`` counts), so
# that the counted bytes bound the batch the leader checks against max.message.bytes
RECORD_OVERHEAD_BYTES = 24
PAYLOAD_HEAD_BYTES_MAX = 5          # the payload's array head (array 32)
COMPRESSION_GROWTH_DIVISOR = 128    # incompressible input grows by at most 1/128 (lz4: 1/255) ...
COMPRESSION_FRAME_BYTES = 64        # ... plus the codec's frame
_VALUE_TYPES = frozenset((bytes, bytearray))
# the timestamps a batch holds: its header's fields are int64 (engines.batch)
TIMESTAMP_MS_MIN, TIMESTAMP_MS_MAX = -(1 << 63), (1 << 63) - 1
_time_ns = time.time_ns
_KEY_TYPES = frozenset((bytes, bytearray, type(None)))


def _checked_timestamp(timestamp_ms: object) -> int:
    """``timestamp_ms`` as the int a batch holds. Raises ``FabricError`` for anything else
    (a bool, a float, an int beyond 64 bits): caught at the call, it cannot fail the packing of
    other records' batches on the I/O thread, nor another record's ``send``."""
    if isinstance(timestamp_ms, int) and not isinstance(timestamp_ms, bool) \
            and TIMESTAMP_MS_MIN <= timestamp_ms <= TIMESTAMP_MS_MAX:
        return int(timestamp_ms)
    raise FabricError(f"timestamp_ms must be an int of 64 bits (ms since the epoch), not {timestamp_ms!r}")


class Producer:
    """The application's side: settings, partitioning, ``send``/``flush``/``close``. Records go
    to a ``RecordAccumulator``; a ``Sender`` thread takes its batches to the brokers and keeps
    a ``MetadataCache`` fresh."""

    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 acks: int | str = "all", linger_ms: int = 5, batch_records_max: int = BATCH_RECORDS_MAX,
                 batch_bytes_max: int = 1024 * 1024, buffer_bytes_max: int = 64 * 1024 * 1024,
                 max_block_ms: int = 60_000, delivery_timeout_ms: int = 120_000,
                 request_timeout_ms: int = 30_000, idempotent: bool = True, compression: str = "none",
                 record_bytes_max: int = 1024 * 1024, max_in_flight: int = 2,
                 retry_backoff_ms: int = RETRY_BACKOFF_MS, retry_backoff_max_ms: int = RETRY_BACKOFF_MAX_MS,
                 record_bytes_max_setting: str = "the producer's record_bytes_max") -> None:
        """``retry_backoff_ms``, ``retry_backoff_max_ms``: a batch sent again after a retriable
        error waits ``retry_backoff_ms`` before its first retry, doubled per retry the same
        leader refuses, up to ``retry_backoff_max_ms`` (+/- 20 % jitter; 0: no wait); its partition's later records
        wait behind it (fabric.client.sender_replies). Raises ``FabricError`` for values that
        are not ints with 0 <= retry_backoff_ms <= retry_backoff_max_ms <= RETRY_BACKOFF_MS_LIMIT.
        ``record_bytes_max_setting``: what sets ``record_bytes_max``, named in the error of a
        record over it (a producer node's is a key of the cluster config)."""
        if acks not in ACKS:
            raise FabricError(f"acks must be 0, 1 or all, not {acks!r}")
        for name, ms in (("retry_backoff_ms", retry_backoff_ms), ("retry_backoff_max_ms", retry_backoff_max_ms)):
            if ms.__class__ is not int or not 0 <= ms <= RETRY_BACKOFF_MS_LIMIT:
                raise FabricError(f"{name} must be an int 0..{RETRY_BACKOFF_MS_LIMIT}, not {ms!r}")
        if retry_backoff_max_ms < retry_backoff_ms:
            raise FabricError(f"retry_backoff_max_ms ({retry_backoff_max_ms}) must be at least retry_backoff_ms "
                              f"({retry_backoff_ms})")
        if max_in_flight.__class__ is not int or not 1 <= max_in_flight <= MAX_IN_FLIGHT_MAX:
            raise FabricError(f"max_in_flight must be an int 1..{MAX_IN_FLIGHT_MAX}, not {max_in_flight!r}")
        if compression not in COMPRESSION_CODECS:
            raise FabricError(f"compression must be one of {', '.join(COMPRESSION_CODECS)}")
        self.acks = ACKS[acks]
        self.compression = compression
        self.max_block_ms = max_block_ms
        self.record_bytes_max = record_bytes_max
        self._record_bytes_max_says = f"is over {record_bytes_max} ({record_bytes_max_setting})"
        self._closed = False
        clock = Clock()
        # the sender is built last but woken first: a late-bound wake-up
        self.metadata = MetadataCache(wake=lambda: self.sender.wake(), on_update=self._take_metadata)
        self.accumulator = RecordAccumulator(
            AccumulatorSettings(linger_ms=linger_ms, batch_records_max=batch_records_max, batch_bytes_max=batch_bytes_max,
                                buffer_bytes_max=buffer_bytes_max, max_block_ms=max_block_ms),
            clock, wake=lambda: self.sender.wake(), idle=lambda tp: self.sender.partition_idle(tp),
            frees_space=lambda: self.sender.on_io_thread(), lingering=lambda due_ms: self.sender.sleeps_past(due_ms))
        self.sender = Sender(
            SenderSettings(acks=self.acks, compression=COMPRESSION_CODECS[compression], idempotent=idempotent,
                           delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=request_timeout_ms,
                           max_in_flight=max_in_flight, retry_backoff_ms=retry_backoff_ms,
                           retry_backoff_max_ms=retry_backoff_max_ms),
            self.accumulator, self.metadata, parse_bootstrap(bootstrap, config_path), clock=clock)
        self.sender.start()
        # what send() reads per record, bound once
        self._sticky = self.accumulator.sticky
        self._append = self.accumulator.append

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             on_delivery: DeliveryCallback | None = None) -> RecordFuture:
        """Queue one record. Blocks (up to max_block_ms) while the buffer is full, then raises
        ``BufferExhaustedError``; raises ``FabricError`` for a value that is not bytes, a key
        that is not bytes or None, headers that are not (name str, value bytes|None) pairs, or
        a ``timestamp_ms`` that is not an int of 64 bits
        (a bytearray value, key or header value is copied: the record is queued as it is
        now), ``RecordSizeExceededError`` for a record whose value, key and headers are over
        ``record_bytes_max``, and
        ``TopicNotInMetadataError`` for a topic or partition the metadata does not have (a
        partition beyond the count held is looked for in fresh metadata first: it may have been
        added since the last refresh) (all
        local ``ClientError``s, with the protocol code of the condition), ``ProducerClosedError``
        after ``close`` (also one from another thread while this call runs: the record is either
        queued before it, and fails with the rest, or refused). On the I/O thread (a delivery
        callback) it never waits: see the module doc."""
        # the hot path of every application: kept to a few dict and attribute operations
        if value.__class__ is not bytes:
            if not isinstance(value, (bytes, bytearray)):
                raise FabricError("value must be bytes")
            value = bytes(value)  # queued as it is now: the caller may reuse its buffer
        if key is None:
            size = len(value) + RECORD_OVERHEAD_BYTES
        else:
            if key.__class__ is not bytes:
                if not isinstance(key, (bytes, bytearray)):
                    raise FabricError("key must be bytes or None")
                key = bytes(key)
            size = len(value) + len(key) + RECORD_OVERHEAD_BYTES
        if headers is not None:
            frozen = frozen_headers(headers)
            if frozen is None:
                raise FabricError("headers must be a list of (name str, value bytes or None) pairs")
            headers, extra = frozen
            size += extra
        if size > self.record_bytes_max:
            raise RecordSizeExceededError(f"record of {size} bytes {self._record_bytes_max_says}")
        if self._closed:
            raise ProducerClosedError()
        if self.sender.failure is not None:
            raise self.sender.failure
        if partition is None and key is None:
            # sticky: valid until the open batch closes (a racing close only starts a new batch)
            partition = self._sticky.get(topic)
            if partition is None:
                partition = self.accumulator.sticky_partition(topic, self._partition_count(topic))
        else:
            nparts = self._partition_count(topic)
            if partition is None:
                partition = partition_for_key(key, nparts)  # type: ignore[arg-type]
            elif not 0 <= partition < nparts and not 0 <= partition < self._fresh_partition_count(topic, partition):
                raise TopicNotInMetadataError(f"{topic} has no partition {partition}")
        if timestamp_ms is None:
            timestamp_ms = _time_ns() // 1_000_000
        elif timestamp_ms.__class__ is not int or not TIMESTAMP_MS_MIN <= timestamp_ms <= TIMESTAMP_MS_MAX:
            timestamp_ms = _checked_timestamp(timestamp_ms)
        return self._append(topic, partition, timestamp_ms, key, value, headers, size, on_delivery)

    def send_many(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None, *,
                  partition: int | None = None, timestamp_ms: int | None = None,
                  on_delivery: DeliveryCallback | None = None,
                  on_complete: Callable[[RecordFutures], None] | None = None) -> RecordFutures:
        """Queue ``values`` as records of ``topic``, in order, at the cost of a few C calls per
        batch rather than Python per record: the batch path for high rates.

        Records go where ``send`` would put them: all to ``partition`` if given, else keyed
        records by ``partition_for_key`` and keyless ones to the sticky partition -- without
        ``keys``, filling batches exactly as one ``send`` per record would; in a call with
        ``keys``, every record with a None key goes to the sticky partition of the call's start
        (so that a partition's records keep the call's order whatever their keys). One
        timestamp for all (``timestamp_ms``, else now); no headers (use ``send``). Within a
        partition the records keep their order. ``on_delivery`` is called once per record,
        as with ``send``. ``on_complete(futures)`` is called once, when every record of the call
        is known (delivered or failed), with the ``RecordFutures`` this returns -- the cheap
        way to learn a whole call's outcome (``futures.outcomes()``) without a callback per
        record. It runs on the I/O thread (or, when every record was known before this
        returns, on the calling thread before it returns) and must not block; an exception
        from it is logged. Returns ``RecordFutures`` (``result()`` gives each record's metadata
        in the order given).

        Raises, with nothing queued: ``FabricError`` (a value that is not bytes or bytearray,
        a key that is not bytes or None, ``keys`` of another length, a ``timestamp_ms`` that
        is not an int of 64 bits; ``ProducerClosedError``
        for a closed producer),
        ``RecordSizeExceededError`` (any record over ``record_bytes_max``),
        ``TopicNotInMetadataError``. ``BufferExhaustedError`` after ``max_block_ms`` without
        space: the records before the one that did not fit are queued (its ``futures``), and
        ``on_complete`` is still called once, with those futures, when they are known; the same
        for a ``ProducerClosedError`` of a ``close`` from another thread during the call (the
        records queued before it fail with the rest); after any other error it is never called.
        Thread-safe."""
        if self._closed:
            raise ProducerClosedError()
        if self.sender.failure is not None:
            raise self.sender.failure
        n = len(values)
        if not set(map(type, values)) <= _VALUE_TYPES:
            raise FabricError("values must be bytes")
        if keys is not None:
            if len(keys) != n:
                raise FabricError(f"{len(keys)} keys for {n} values")
            key_types = set(map(type, keys))
            if not key_types <= _KEY_TYPES:
                raise FabricError("keys must be bytes or None")
            if key_types <= {type(None)}:
                keys = None
        ts = _checked_timestamp(timestamp_ms) if timestamp_ms is not None else time.time_ns() // 1_000_000
        nparts = self._partition_count(topic) if n else 0
        if partition is not None and not 0 <= partition < nparts and n:
            nparts = self._fresh_partition_count(topic, partition)
            if not 0 <= partition < nparts:
                raise TopicNotInMetadataError(f"{topic} has no partition {partition}")
        if on_complete is None:
            return self._queue_many(topic, values, keys, partition, ts, nparts, on_delivery, None)
        completion = Completion(on_complete)
        try:
            futures = completion.futures = self._queue_many(topic, values, keys, partition, ts, nparts, on_delivery,
                                                            completion)
        except (BufferExhaustedError, ProducerClosedError) as e:
            completion.futures = e.futures  # type: ignore[attr-defined]
            completion.release()
            raise
        completion.release()
        return futures

    def _queue_many(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None,
                    partition: int | None, ts: int, nparts: int, on_delivery: DeliveryCallback | None,
                    completion: Completion | None) -> RecordFutures:
        """``send_many`` once its arguments are checked."""
        if not values:
            return RecordFutures([])
        append_many = self.accumulator.append_many
        if keys is None:
            lengths = list(map(len, values))
            shortest, longest = min(lengths), max(lengths)
            if longest + RECORD_OVERHEAD_BYTES > self.record_bytes_max:
                self._check_sizes([x + RECORD_OVERHEAD_BYTES for x in lengths])
            if shortest == longest:  # fixed-size records: no per-record sizes at all
                sizes: list[int] | int = longest + RECORD_OVERHEAD_BYTES

                def pack(a: int, b: int) -> list[bytes]:
                    return pack_values(values[a:b], ts, longest)
            else:
                sizes = list(map(RECORD_OVERHEAD_BYTES.__add__, lengths))

                def pack(a: int, b: int) -> list[bytes]:
                    return pack_values(values[a:b], ts)
            try:
                return RecordFutures(append_many(topic, partition, ts, values, sizes, pack, nparts, on_delivery, completion))
            except (BufferExhaustedError, ProducerClosedError) as e:  # (closed meanwhile: RecordAccumulator.close)
                e.futures = RecordFutures(e.segments)  # type: ignore[attr-defined]
                raise
        return self._send_keyed(topic, values, keys, partition, ts, nparts, on_delivery, completion)

    def _send_keyed(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None], partition: int | None,
                    ts: int, nparts: int, on_delivery: DeliveryCallback | None,
                    completion: Completion | None) -> RecordFutures:
        """``send_many`` of keyed records: per partition, one run in the order given."""
        append_many, n = self.accumulator.append_many, len(values)
        sizes = [RECORD_OVERHEAD_BYTES + len(v) + (len(k) if k is not None else 0) for k, v in zip(keys, values)]
        self._check_sizes(sizes)
        if partition is not None:
            parts = [partition] * n
        else:
            sticky = self.accumulator.sticky_partition(topic, nparts)
            parts = [partition_for_key(k, nparts) if k is not None else sticky for k in keys]
        # each partition's records in the order given (a stable sort), appended as one run
        order = sorted(range(n), key=parts.__getitem__)
        segments: list = []
        start = 0
        try:
            while start < n:
                p = parts[order[start]]
                end = start + 1
                while end < n and parts[order[end]] == p:
                    end += 1
                idx = order[start:end]
                gvalues, gkeys = [values[i] for i in idx], [keys[i] for i in idx]

                def pack_keyed(a: int, b: int, gkeys: list = gkeys, gvalues: list = gvalues) -> list[bytes]:
                    return pack_records(list(zip(repeat(ts), gkeys[a:b], gvalues[a:b], repeat(None))))
                segments += append_many(topic, p, ts, gvalues, [sizes[i] for i in idx], pack_keyed, nparts, on_delivery,
                                        completion)
                start = end
        except (BufferExhaustedError, ProducerClosedError) as e:
            queued = segments + e.segments  # type: ignore[attr-defined]
            e.futures = RecordFutures(queued, order[:sum(s[2] for s in queued)])  # type: ignore[attr-defined]
            raise
        return RecordFutures(segments, None if order == list(range(n)) else order)

    def _check_sizes(self, sizes: list[int]) -> None:
        biggest = max(sizes)
        if biggest > self.record_bytes_max:
            raise RecordSizeExceededError(f"record {sizes.index(biggest)} of {biggest} bytes {self._record_bytes_max_says}")

    def _take_metadata(self, md: ClusterMetadata) -> None:
        """Before ``md`` is current: topics whose ``max.message.bytes`` is under
        ``batch_bytes_max`` get batches the leader takes: the record bytes a batch may count,
        its header and array head (and, when compressed, a codec's worst-case growth) left out;
        and keyless records go to partitions each topic has now."""
        self.accumulator.set_partition_counts({name: len(t.partitions) for name, t in md.topics.items()})
        limits = {}
        for name, t in md.topics.items():
            configured = t.configs.get("max.message.bytes")
            if configured is None:
                continue
            room = int(configured) - B.HEADER_BYTES - PAYLOAD_HEAD_BYTES_MAX
            if self.compression != "none":
                room -= room // COMPRESSION_GROWTH_DIVISOR + COMPRESSION_FRAME_BYTES
            limits[name] = max(1, room)
        self.accumulator.set_topic_bytes_max(limits)

    def _partition_count(self, topic: str) -> int:
        t = self.metadata.current.topics.get(topic)
        if t is not None:
            return len(t.partitions)
        if self.sender.on_io_thread():  # only this thread could fetch the metadata waited for
            raise TopicNotInMetadataError(f"topic {topic!r} is not in the metadata the producer holds, and a send on "
                                          "its I/O thread (a delivery callback) cannot wait for it")
        return self.metadata.partition_count(topic, self.max_block_ms)

    def _fresh_partition_count(self, topic: str, partition: int) -> int:
        """The count of ``topic``'s partitions once fresh metadata was asked for: a
        ``partition`` beyond the count held may have been added since it was fetched (a refresh
        comes every few seconds), which is no reason to refuse the record. On the I/O thread,
        which cannot wait for its own refresh, the partition is taken on trust (the count
        returned has it) and the sender judges its batches by fresh metadata
        (``Sender.expect_partition``)."""
        if partition < 0:
            return self._partition_count(topic)
        if self.sender.on_io_thread():
            self.sender.expect_partition((topic, partition))
            return partition + 1
        return self.metadata.partition_count_having(topic, partition, self.max_block_ms)

    @property
    def stopped(self) -> bool:
        """Closed, and its I/O thread has ended: every record it took has its outcome."""
        return self._closed and not self.sender.is_alive()

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait until every batch is acknowledged or failed.
        Raises ``ClientTimeoutError`` if that takes longer than ``timeout`` seconds, and
        ``FabricError`` at once on the I/O thread (a delivery callback), which would wait for
        itself."""
        if self.sender.on_io_thread():
            raise FabricError("flush() on the producer's I/O thread (from a delivery callback or on_complete hook) "
                              "would wait for that thread itself")
        pending = self.accumulator.close_all()
        self.sender.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for b in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.event.wait(left):
                raise ClientTimeoutError("flush timed out")

    def close(self, timeout: float | None = 30.0, stop_timeout_s: float = STOP_JOIN_S) -> None:
        """Flush (up to ``timeout`` seconds), then stop the I/O thread, waiting up to
        ``stop_timeout_s`` for it to end; what is not delivered fails with
        ``ProducerClosedError`` -- as does a ``send`` waiting meanwhile for buffer space
        (``BufferExhaustedError`` saying so) or for metadata, which returns at once. On the I/O
        thread (a delivery callback) it does not flush, which would wait for that thread: the
        thread stops when the callback returns."""
        if self._closed:
            return
        try:
            if self.sender.on_io_thread():
                log.warning("producer closed from its I/O thread (a delivery callback): not flushed")
                return
            self.flush(timeout)
        finally:
            self._closed = True
            self.accumulator.close()
            self.sender.stop(stop_timeout_s)

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


