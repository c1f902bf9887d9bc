"""The producer client: partitions, batches, sends, retries.

``send()`` (any thread) appends the record to its partition's open batch and returns a
``RecordFuture``; a batch closes at ``batch_records_max`` / ``batch_bytes_max`` or after
``linger_ms``. One I/O thread (a reactor) packs closed batches, sends them to partition
leaders -- at most one request in flight per partition, carrying every batch queued for it, so
order holds and retries cannot reorder -- and resolves futures. Retriable errors
(not_leader, timeouts, not_enough_replicas…) refresh metadata and retry until
``delivery_timeout_ms``. With ``idempotent=True`` (default) every batch carries the producer
id and a per-partition sequence, so a retried batch is never written twice.

Thread-safety: ``send``, ``flush`` and ``close`` are thread-safe.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fabric.client.accumulator import (AccumulatorSettings, BatchState, DeliveryCallback, RecordAccumulator,
                                       RecordFuture, RecordMetadata)
from fabric.client.bootstrap import parse_bootstrap
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import Clock
from fabric.errors import ClientTimeoutError, FabricError, RecordSizeExceededError, TopicNotInMetadataError
from fabric.records import COMPRESSION_CODECS, partition_for_key

log = logging.getLogger(__name__)

__all__ = ["ACKS", "RECORD_OVERHEAD_BYTES", "BatchState", "Producer", "RecordFuture", "RecordMetadata"]

ACKS = {"0": 0, "1": 1, "all": -1, "-1": -1, 0: 0, 1: 1, -1: -1}
RECORD_OVERHEAD_BYTES = 24


class Producer:
    """The application's side: settings, partitioning, ``send``/``flush``/``close``. Records go
    to a ``RecordAccumulator``; a ``Sender`` thread takes its batches to the brokers and keeps
    a ``MetadataCache`` fresh."""

    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 acks: int | str = "all", linger_ms: int = 5, batch_records_max: int = 1000,
                 batch_bytes_max: int = 1024 * 1024, buffer_bytes_max: int = 64 * 1024 * 1024,
                 max_block_ms: int = 60_000, delivery_timeout_ms: int = 120_000,
                 request_timeout_ms: int = 30_000, idempotent: bool = True, compression: str = "none",
                 record_bytes_max: int = 1024 * 1024) -> None:
        if acks not in ACKS:
            raise FabricError(f"acks must be 0, 1 or all, not {acks!r}")
        if compression not in COMPRESSION_CODECS:
            raise FabricError(f"compression must be one of {', '.join(COMPRESSION_CODECS)}")
        self.acks = ACKS[acks]
        self.max_block_ms = max_block_ms
        self.record_bytes_max = record_bytes_max
        self._closed = False
        clock = Clock()
        # the sender is built last but woken first: a late-bound wake-up
        self.metadata = MetadataCache(wake=lambda: self.sender.wake())
        self.accumulator = RecordAccumulator(
            AccumulatorSettings(linger_ms=linger_ms, batch_records_max=batch_records_max, batch_bytes_max=batch_bytes_max,
                                buffer_bytes_max=buffer_bytes_max, max_block_ms=max_block_ms),
            clock, wake=lambda: self.sender.wake())
        self.sender = Sender(
            SenderSettings(acks=self.acks, compression=COMPRESSION_CODECS[compression], idempotent=idempotent,
                           delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=request_timeout_ms,
                           linger_ms=linger_ms),
            self.accumulator, self.metadata, parse_bootstrap(bootstrap, config_path), clock=clock)
        self.sender.start()

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             on_delivery: DeliveryCallback | None = None) -> RecordFuture:
        """Queue one record. Blocks (up to max_block_ms) while the buffer is full, then raises
        ``BufferExhaustedError``; raises ``RecordSizeExceededError`` for an oversized record and
        ``TopicNotInMetadataError`` for a topic or partition the metadata does not have (all
        local ``ClientError``s, with the protocol code of the condition)."""
        # the hot path of every application: kept to a few dict and attribute operations
        if value.__class__ is not bytes and not isinstance(value, (bytes, bytearray)):
            raise FabricError("value must be bytes")
        size = len(value) + RECORD_OVERHEAD_BYTES if key is None else len(value) + len(key) + RECORD_OVERHEAD_BYTES
        if size > self.record_bytes_max:
            raise RecordSizeExceededError(f"record of {size} bytes is over {self.record_bytes_max}")
        if self._closed:
            raise FabricError("producer is closed")
        if self.sender.failure is not None:
            raise self.sender.failure
        if partition is None and key is None:
            # sticky: valid until the open batch closes (a racing close only starts a new batch)
            partition = self.accumulator.sticky.get(topic)
            if partition is None:
                partition = self.accumulator.sticky_partition(topic, self._partition_count(topic))
        else:
            nparts = self._partition_count(topic)
            if partition is None:
                partition = partition_for_key(key, nparts)  # type: ignore[arg-type]
            elif not 0 <= partition < nparts:
                raise TopicNotInMetadataError(f"{topic} has no partition {partition}")
        ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
        return self.accumulator.append(topic, partition, ts, key, value, headers, size, on_delivery)

    def _partition_count(self, topic: str) -> int:
        t = self.metadata.current.topics.get(topic)
        return len(t.partitions) if t is not None else self.metadata.partition_count(topic, self.max_block_ms)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait until every batch is acknowledged or failed.
        Raises ``ClientTimeoutError`` if that takes longer than ``timeout`` seconds."""
        pending = self.accumulator.close_all()
        self.sender.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for b in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.event.wait(left):
                raise ClientTimeoutError("flush timed out")

    def close(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self.accumulator.close()
            self.sender.stop()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


