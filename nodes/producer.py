"""The producer service: produce on behalf of the gateway and thin clients.

SERVICE_PRODUCE ``{topic, acks (0 | 1 | -1 | "all"), records: [[key, value, headers,
partition|null], ...]}`` -> ``{topic, results: [[partition, offset, error, message], ...]}``
(one result per record, in order; error 0 and offset -1 for acks=0).

Records without an explicit partition are partitioned by ``fabric.records.partition_for_key``
(the client library's hash) when they have a key, and by the sticky partitioner otherwise.
Records of many requests are batched together (``services.producer_linger_ms``) by one
``fabric.client.Producer`` per acks level, which retries through failovers and is
idempotent for acks 1 and all.

Backpressure: the bytes of records accepted but not yet answered are bounded by
``services.producer_buffer_bytes_max``; a request that does not fit is refused at once with
``buffer_full`` (retriable) -- memory never grows without bound.

Threads: the reactor thread owns the ROUTER; one worker thread hands records to the
producers (``send`` may wait for metadata); the producers' I/O threads report deliveries,
which come back to the reactor through a queue and an inproc wake-up socket.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any


from fabric import protocol as P
from fabric import wire
from fabric.client.producer import ACKS, RECORD_OVERHEAD_BYTES, Producer
from fabric.config import LoomConfig
from fabric.errors import FabricError, RemoteError
from fabric.waker import Waker
from fabric.rpc import DEFER
from nodes.base import Node

log = logging.getLogger(__name__)

JOBS_MAX = 10_000                  # requests accepted and not yet answered
DELIVERY_TIMEOUT_MS = 30_000       # a record not acknowledged by then fails (request_timed_out)
SEND_BLOCK_MS = 5000               # how long the worker waits for a topic's metadata


class _Job:
    """One SERVICE_PRODUCE request in flight. ``results`` is filled by producer I/O threads."""

    __slots__ = ("req", "topic", "acks", "records", "size_bytes", "results", "remaining", "lock")

    def __init__(self, req: wire.Request, topic: str, acks: int, records: list, size_bytes: int) -> None:
        self.req, self.topic, self.acks, self.records, self.size_bytes = req, topic, acks, records, size_bytes
        self.results: list[list | None] = [None] * len(records)
        self.remaining = len(records)
        self.lock = threading.Lock()

    def resolve(self, index: int, result: list) -> bool:
        """Record one result; True when it was the last one."""
        with self.lock:
            if self.results[index] is not None:
                return False
            self.results[index] = result
            self.remaining -= 1
            return self.remaining == 0


class ProducerService(Node):
    role = "producer"

    def __init__(self, config: LoomConfig, name: str, **kw: Any) -> None:
        super().__init__(config, name, **kw)
        self.services = config.services
        self._buffered_bytes = 0  # reactor thread only
        self._jobs: queue.Queue[_Job | None] = queue.Queue(JOBS_MAX)
        self._done: deque[_Job] = deque()
        self._producers: dict[int, Producer] = {}
        self._stopping = False
        self._waker = Waker(self.ctx, "producer-service")
        self.reactor.add_socket(self._waker.sock, self._on_wake)
        self.server.route(P.SERVICE_PRODUCE, self._on_produce)
        self._worker = threading.Thread(target=self._work, name="loom-producer-service", daemon=True)
        self._worker.start()
        self.metrics.add_collector(lambda: (("loom_producer_service_buffer_bytes", (), self._buffered_bytes),
                                            ("loom_producer_service_buffer_max_bytes", (), self.services.producer_buffer_bytes_max)))

    # -- reactor thread ------------------------------------------------------------------------
    def _on_produce(self, req: wire.Request) -> Any:
        topic = req.get("topic", str)
        acks_raw = req.header.get("acks", -1)
        if acks_raw not in ACKS or isinstance(acks_raw, bool):
            raise RemoteError(P.MALFORMED_REQUEST, "acks must be 0, 1, -1 or \"all\"")
        records = req.get("records", list)
        if not 1 <= len(records) <= P.SERVICE_RECORDS_PER_REQUEST_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, f"records must hold 1 to {P.SERVICE_RECORDS_PER_REQUEST_MAX} records")
        size = 0
        for i, r in enumerate(records):
            if not (isinstance(r, (list, tuple)) and len(r) == 4 and isinstance(r[1], bytes)
                    and (r[0] is None or isinstance(r[0], bytes)) and (r[2] is None or _valid_headers(r[2]))
                    and (r[3] is None or (isinstance(r[3], int) and not isinstance(r[3], bool)))):
                raise RemoteError(P.INVALID_RECORD, f"record {i} must be [key bytes|null, value bytes, "
                                                    "headers [[name, bytes]...]|null, partition int|null]")
            # headers count too: a request of small values with large headers must not slip
            # past the bound
            size += len(r[1]) + len(r[0] or b"") + RECORD_OVERHEAD_BYTES + _headers_bytes(r[2])
        if self._buffered_bytes + size > self.services.producer_buffer_bytes_max:
            self.counters["buffer_full"] += 1
            raise RemoteError(P.BUFFER_FULL, f"the producer service buffer ({self.services.producer_buffer_bytes_max} "
                                             f"bytes) is full: retry later")
        job = _Job(req, topic, ACKS[acks_raw], records, size)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.counters["buffer_full"] += 1
            raise RemoteError(P.BUFFER_FULL, f"{JOBS_MAX} produce requests are waiting: retry later") from None
        self._buffered_bytes += size
        self.counters["produce_requests"] += 1
        self.counters["produce_records"] += len(records)
        self.metrics.inc("loom_producer_service_records_total", (topic,), len(records))
        return DEFER

    def _on_wake(self, frames: list[bytes]) -> None:
        while self._done:
            job = self._done.popleft()
            self._buffered_bytes -= job.size_bytes
            self.server.reply(job.req, {"topic": job.topic, "results": job.results})

    def _wake(self) -> None:
        self._waker.wake()

    def _producer(self, acks: int) -> Producer:
        p = self._producers.get(acks)
        if p is None:
            p = self._producers[acks] = Producer(
                self.config.bootstrap(), acks=acks, linger_ms=self.services.producer_linger_ms,
                buffer_bytes_max=2 * self.services.producer_buffer_bytes_max, max_block_ms=SEND_BLOCK_MS,
                delivery_timeout_ms=DELIVERY_TIMEOUT_MS, request_timeout_ms=DELIVERY_TIMEOUT_MS // 2,
                record_bytes_max=self.config.limits.message_bytes_max)
        return p

    def _work(self) -> None:
        while not self._stopping:
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if job is None:
                return
            try:
                self._send_job(job)
            except Exception as e:  # a bug must not strand the request
                log.exception("produce job failed")
                for i in range(len(job.records)):
                    self._finish(job, i, [-1, -1, P.UNKNOWN, f"internal error: {e}"])

    def _send_job(self, job: _Job) -> None:
        producer = self._producer(job.acks)
        fatal: RemoteError | None = None
        for i, (key, value, headers, partition) in enumerate(job.records):
            if fatal is not None:  # e.g. an unknown topic: fail the rest without waiting again
                self._finish(job, i, [-1, -1, fatal.code, fatal.message])
                continue

            def delivered(md: Any, err: Exception | None, i: int = i) -> None:
                if err is None:
                    self._finish(job, i, [md.partition, md.offset if job.acks != 0 else -1, 0, ""])
                else:
                    code = err.code if isinstance(err, RemoteError) else P.UNKNOWN
                    self._finish(job, i, [-1, -1, code, str(err)])
            try:
                producer.send(job.topic, value, key=key, headers=headers, partition=partition, on_delivery=delivered)
            except RemoteError as e:
                self._finish(job, i, [-1, -1, e.code, e.message])
                if e.code in (P.UNKNOWN_TOPIC_OR_PARTITION, P.BUFFER_FULL) and partition is None:
                    fatal = e
            except FabricError as e:
                self._finish(job, i, [-1, -1, P.INVALID_RECORD, str(e)])

    def _finish(self, job: _Job, index: int, result: list) -> None:
        if job.resolve(index, result):
            self._done.append(job)
            self._wake()

    # -- stats / lifecycle -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"buffered_bytes": self._buffered_bytes, "buffer_bytes_max": self.services.producer_buffer_bytes_max,
                "jobs_waiting": self._jobs.qsize()}

    def close(self) -> None:
        self._stopping = True
        self._worker.join(timeout=5)
        for p in self._producers.values():
            try:
                p.close(timeout=5)
            except RemoteError as e:
                log.warning("producer close: %s", e)
        self.reactor.remove_socket(self._waker.sock)
        self._waker.close()
        super().close()


def _valid_headers(headers: Any) -> bool:
    return isinstance(headers, list) and len(headers) <= 1000 and all(
        isinstance(h, (list, tuple)) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], (bytes, type(None)))
        for h in headers)


def _headers_bytes(headers: list | None) -> int:
    return sum(len(name) + len(value or b"") for name, value in headers or ())
