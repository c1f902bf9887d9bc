"""The producer service: produce on behalf of the gateway and thin clients.

SERVICE_PRODUCE ``{topic, acks (0 | 1 | -1 | "all"), count}`` + one payload frame of records
``[[key, value, headers, partition|null], ...]`` -> ``{topic, count}`` + one payload frame of
results ``[[partition, offset, error, message], ...]`` (one result per record, in order; error 0
and offset -1 for acks=0). Records without key and headers, all for one partition (or none),
may come in the ``values`` form (``form: "values"``, ``partition``; the frame an array of
values) and are then answered, when every one succeeded, in the ``columns`` form (``form:
"columns"``; the frame ``[partitions, offsets]``): no array per record either way. The frames are ``fabric.client.services.pack_rows``; keeping records
out of the header keeps them out of its 1 MiB bound and its field-by-field decoding. A request
with ``records`` in its header instead is answered with ``results`` in the header.

Records without an explicit partition are partitioned by ``fabric.records.partition_for_key``
(the client library's hash) when they have a key, and by the sticky partitioner otherwise.
One ``fabric.client.Producer`` per acks level sends them, retrying through failovers,
idempotent for acks 1 and all. Its linger (``services.producer_linger_ms``) is 0 by default:
a request arrives as a batch already, and while one request per partition is in flight the
records of the requests arriving meanwhile gather into the next one; a linger would only add
its length to every request's latency (5 ms of linger put the p50 of a single-record produce
at 10 ms).

Backpressure: the bytes of records accepted but not yet answered are bounded by
``services.producer_buffer_bytes_max``; a request that does not fit is refused at once with
``buffer_full`` (retriable) -- memory never grows without bound.

Threads: the reactor thread owns the ROUTER; one worker thread hands records to the
producers (``nodes.producer_jobs.JobSender``: ``send_many`` per run of records without headers to one partition
or none, ``send`` for the others; either may wait for metadata); the producers' I/O threads
report the outcome of each run at once (``on_complete``) and of the other records one by one;
a finished request comes back to the reactor through a queue and an inproc wake-up socket.

Stopping (SIGTERM/SIGINT: ``drain``, run by ``nodes.base.Node.run`` with the reactor still
turning): a request arriving from then on is refused at once with ``buffer_full`` saying nothing
of it was written, with ``stopping: true`` (PING says ``stopping`` too: the gateway sends it to
another producer service, or answers 503 / 50301 when none takes work);
every request already taken is sent and answered as its records are acknowledged, within
``services.producer_drain_timeout_ms``. The drain ends once nothing is left and no request came
for DRAIN_QUIET_MS (the gateway's health watcher has seen the service stopping: no request is
in flight to it when its port closes). At the deadline the producers close: each record still
unacknowledged is answered ``request_timed_out``, saying whether an earlier send of it may have
been written, and a send of the worker waiting on them (for buffer space or metadata) ends at
once, its records answered not sent; then the worker stops -- a request it has not started is
answered not sent. A record still without a result then is answered too (not sent, unless a
producer's I/O thread did not stop: may have been written), and those answers go out before
the port closes: the whole stop takes at most the drain's deadline and DRAIN_STOP_MS, far
inside the supervisor's SIGKILL. No request taken goes unanswered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, deque
from itertools import repeat
from typing import Any, Callable, Sequence


from fabric import protocol as P
from fabric import wire
from fabric.client.producer import ACKS, RECORD_OVERHEAD_BYTES, Producer
from fabric.client.services import VALUES_FORM, unpack_rows, unpack_values
from fabric.config import LoomConfig
from fabric.errors import CodedError, ProducerClosedError, RemoteError
from fabric.waker import Waker
from fabric.records import headers_bytes
from fabric.rpc import DEFER
from nodes.base import Node
from nodes.producer_jobs import NOT_SENT_MESSAGE, Job, JobSender, error_code, error_message

log = logging.getLogger(__name__)

JOBS_MAX = 10_000                  # requests accepted and not yet answered
DELIVERY_TIMEOUT_MS = 30_000       # a record not acknowledged by then fails (request_timed_out)
SEND_BLOCK_MS = 5000               # how long the worker waits for a topic's metadata
# Stopping (the module doc). The supervisor SIGKILLs a node 15 s after SIGTERM
# (nodes.running_cluster.STOP_TIMEOUT_S): producer_drain_timeout_ms (at most 6 s) and DRAIN_STOP_MS
# after it bound the whole stop, whatever the worker is blocked on (a send waits up to
# SEND_BLOCK_MS for buffer space or metadata: closing the producers ends that wait at once).
DRAIN_STOP_MS = 2000               # after the drain's deadline: producers closed, worker stopped, answers out
DRAIN_ANSWERS_MS = 500             # of DRAIN_STOP_MS: for the last answers to go out
CLOSE_FLUSH_S = 5.0                # ``close`` without a drain: how long the producers may flush
# A topic's records counter goes once the producers' metadata no longer has the topic and no
# record of it came for a whole sweep (``sweep_topic_counters``).
TOPIC_COUNTERS_SWEEP_MS = 60_000
STOPPING_MESSAGE = ("the producer service is stopping: nothing of the request was written; send it again "
                    "(another producer service takes it, or this one once it is back)")


class ProduceIntake:
    """The service's bounded intake: checks a SERVICE_PRODUCE request, counts its bytes against
    ``buffer_bytes_max`` and queues it for the worker (at most ``jobs_max`` waiting); a request
    that does not fit is refused with ``buffer_full``. ``buffered_bytes`` and ``release`` belong
    to the reactor thread; ``jobs`` is the (thread-safe) queue the worker takes from."""

    def __init__(self, buffer_bytes_max: int, counters: Counter[str], jobs_max: int = JOBS_MAX) -> None:
        self.buffer_bytes_max = buffer_bytes_max
        self.buffered_bytes = 0
        self.counters = counters
        self.jobs: queue.Queue[Job | None] = queue.Queue(jobs_max)

    def admit(self, req: wire.Request) -> Job:
        """Raises RemoteError (malformed_request, invalid_record, buffer_full)."""
        topic = req.get("topic", str)
        acks_raw = req.header.get("acks", -1)
        if acks_raw not in ACKS or isinstance(acks_raw, bool):
            raise RemoteError(P.MALFORMED_REQUEST, "acks must be 0, 1, -1 or \"all\"")
        framed = "records" not in req.header
        values_form = framed and req.header.get("form") == VALUES_FORM
        if values_form:
            records, size = self._framed_values(req)
        else:
            records = self._framed_records(req) if framed else req.get("records", list)
            size = 0
        if not 1 <= len(records) <= P.SERVICE_RECORDS_PER_REQUEST_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, f"records must hold 1 to {P.SERVICE_RECORDS_PER_REQUEST_MAX} records")
        if not values_form:
            size = _records_bytes(records)
        if self.buffered_bytes + size > self.buffer_bytes_max:
            self._refuse_full()
        job = Job(req, topic, ACKS[acks_raw], records, size, framed, values_form)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.counters["buffer_full"] += 1
            raise RemoteError(P.BUFFER_FULL, f"{self.jobs.maxsize} produce requests are waiting: retry later") from None
        self.buffered_bytes += size
        self.counters["produce_requests"] += 1
        self.counters["produce_records"] += len(records)
        return job

    def _framed_records(self, req: wire.Request, unpack: Callable[[bytes, int], Sequence] | None = None) -> Sequence:
        """The records (or, with ``unpack_values``, the values) of a request that carries them
        in its one payload frame. A frame that could not fit in the buffer is refused before it
        is decoded (its decoded records take more memory than its bytes)."""
        count = req.get("count", int)
        if len(req.payloads) != 1:
            raise RemoteError(P.MALFORMED_REQUEST, f"records travel in one payload frame, not {len(req.payloads)}")
        frame = req.payloads[0]
        if self.buffered_bytes + len(frame) > self.buffer_bytes_max:
            self._refuse_full()
        records = unpack_rows(frame, P.SERVICE_RECORDS_PER_REQUEST_MAX, None) if unpack is None \
            else unpack(frame, P.SERVICE_RECORDS_PER_REQUEST_MAX)
        if len(records) != count:
            raise RemoteError(P.MALFORMED_REQUEST, f"count is {count} but the frame holds {len(records)} records")
        return records

    def _framed_values(self, req: wire.Request) -> tuple[list, int]:
        """The records of a ``values`` form request as (None, value, None, partition) rows, and
        the bytes they hold against the buffer. Raises RemoteError (malformed_request,
        invalid_record, buffer_full)."""
        partition = req.header.get("partition")
        if partition is not None and (partition.__class__ is not int or partition < 0):
            raise RemoteError(P.MALFORMED_REQUEST, "partition must be null or an integer >= 0")
        values = self._framed_records(req, unpack_values)
        if any(v.__class__ is not bytes for v in values):
            raise RemoteError(P.INVALID_RECORD, "a values frame is an array of byte strings")
        size = sum(map(len, values)) + RECORD_OVERHEAD_BYTES * len(values)
        return list(zip(repeat(None), values, repeat(None), repeat(partition))), size

    def _refuse_full(self) -> None:
        self.counters["buffer_full"] += 1
        raise RemoteError(P.BUFFER_FULL, f"the producer service buffer ({self.buffer_bytes_max} bytes) is full: retry later")

    def release(self, job: Job) -> None:
        """The job was answered: its bytes leave the buffer."""
        self.buffered_bytes -= job.size_bytes


class ProducerService(Node):
    role = "producer"

    def __init__(self, config: LoomConfig, name: str, *, make_producer: Callable[[int], Producer] | None = None,
                 **kw: Any) -> None:
        """``make_producer(acks)``: the client producer for an acks level (default: to the
        cluster of ``config``), made once per level when a request first needs it."""
        super().__init__(config, name, **kw)
        self.services = config.services
        self._make_producer = make_producer or self._new_producer
        self.intake = ProduceIntake(self.services.producer_buffer_bytes_max, self.counters)
        self._jobs = self.intake.jobs
        self._done: deque[Job] = deque()
        self._producers: dict[int, Producer] = {}
        # the drain's deadline passed (or close): the worker sends nothing more, and no producer
        # is made (under the lock, which the worker takes to get its producer)
        self._stopping = False
        self._producers_lock = threading.Lock()
        self._taken: set[Job] = set()  # requests taken and not yet answered (reactor thread)
        # topics counted since the last sweep (reactor thread)
        self._counted_since_sweep: set[str] = set()
        self._waker = Waker()
        self.reactor.add_waker(self._waker, self._on_wake)
        self._job_sender = JobSender(self._producer, self._answer)
        self.server.route(P.SERVICE_PRODUCE, self._on_produce)
        self._worker = threading.Thread(target=self._work, name="loom-producer-service", daemon=True)
        self._worker.start()
        self.metrics.add_collector(lambda: (("loom_producer_service_buffer_bytes", (), self.intake.buffered_bytes),
                                            ("loom_producer_service_buffer_max_bytes", (), self.services.producer_buffer_bytes_max)))
        self.reactor.call_every(TOPIC_COUNTERS_SWEEP_MS, self.sweep_topic_counters)

    # -- reactor thread ------------------------------------------------------------------------
    def _on_produce(self, req: wire.Request) -> Any:
        self.take_request(req, STOPPING_MESSAGE)
        job = self.intake.admit(req)
        self._taken.add(job)
        self.metrics.inc("loom_producer_service_records_total", (job.topic,), len(job.records))
        self._counted_since_sweep.add(job.topic)
        return DEFER

    def sweep_topic_counters(self) -> None:
        """Every TOPIC_COUNTERS_SWEEP_MS: forget the records counter of each topic that no
        producer's metadata has (deleted, or never made) and that no record came for since the
        last sweep, as brokers forget a deleted topic's counters. Kept, every topic ever named
        in a request stayed in each scrape, and past SERIES_PER_METRIC_MAX names a new topic's
        records went uncounted. A topic written between two sweeps keeps its counter (a
        producer's metadata may not have a new topic yet); one written again counts from 0.
        Nothing is forgotten while no producer has heard the cluster."""
        with self._producers_lock:
            caches = [p.metadata for p in self._producers.values() if p.metadata.answers]
        if caches:
            known = set().union(*(c.current.topics for c in caches), self._counted_since_sweep)
            for labels in self.metrics.labels("loom_producer_service_records_total"):
                if labels[0] not in known:
                    self.metrics.forget("loom_producer_service_records_total", labels)
        self._counted_since_sweep = set()

    def _on_wake(self) -> None:
        while self._done:
            job = self._done.popleft()
            self.intake.release(job)
            self._taken.discard(job)
            self.server.reply(job.req, *job.reply())

    def _answer(self, job: Job) -> None:
        """Any thread: every record of ``job`` has its result."""
        self._done.append(job)
        self._waker.wake()

    def _producer(self, acks: int) -> Producer:
        """The worker's producer for ``acks``. Raises ProducerClosedError once the service
        stopped sending (``_stop_sending`` closes every producer made before)."""
        with self._producers_lock:
            if self._stopping:
                raise ProducerClosedError()
            p = self._producers.get(acks)
            if p is None:
                p = self._producers[acks] = self._make_producer(acks)
            return p

    def _new_producer(self, acks: int) -> Producer:
        return Producer(self.config.bootstrap(), acks=acks, linger_ms=self.services.producer_linger_ms,
                        buffer_bytes_max=2 * self.services.producer_buffer_bytes_max, max_block_ms=SEND_BLOCK_MS,
                        delivery_timeout_ms=DELIVERY_TIMEOUT_MS, request_timeout_ms=DELIVERY_TIMEOUT_MS // 2,
                        record_bytes_max=self.config.limits.message_bytes_max,
                        record_bytes_max_setting="limits.message_bytes_max of the cluster config")

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                if self._stopping:
                    return
                continue
            if job is None:
                return
            if self._stopping:  # the drain's deadline passed before it was sent: answered, not sent
                self._job_sender.refuse(job, P.BUFFER_FULL, NOT_SENT_MESSAGE)
                continue
            try:
                self._job_sender.send(job)
            except Exception as e:  # a bug: stop the node (it restarts), not answer and carry on
                self.fail_from_thread(e)
                return

    # -- stats / lifecycle -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"buffered_bytes": self.intake.buffered_bytes, "buffer_bytes_max": self.services.producer_buffer_bytes_max,
                "jobs_waiting": self._jobs.qsize()}

    def drain(self) -> None:
        """SIGTERM/SIGINT (``Node.run``, the reactor still usable): see the module doc. Returns
        once every request taken is answered and those answers are handed to the kernel, or
        when the drain's time is up: within ``producer_drain_timeout_ms`` + DRAIN_STOP_MS."""
        timeout_ms = self.services.producer_drain_timeout_ms
        log.info("stopping: draining %d produce requests (at most %d ms)", len(self._taken), timeout_ms)
        self.drive_until(lambda now_ms: not self._taken and self.quiet(now_ms), self.clock.now_ms() + timeout_ms)
        if self._taken:
            log.warning("stopping: %d produce requests still unanswered after %d ms: their records not yet "
                        "acknowledged are answered request_timed_out", len(self._taken), timeout_ms)
        stop_deadline_ms = self.clock.now_ms() + DRAIN_STOP_MS
        self._stop_sending(0, stop_deadline_ms - DRAIN_ANSWERS_MS)
        self._answer_unfinished()
        self.drive_until(lambda _now_ms: not self._taken, stop_deadline_ms)
        if self._taken:
            log.error("stopping: the answers of %d produce requests did not go out in time", len(self._taken))

    def _stop_sending(self, flush_timeout_s: float, deadline_ms: int) -> None:
        """Close the producers, waiting ``flush_timeout_s`` for what they hold: a record still
        unacknowledged then fails (ProducerClosedError: answered request_timed_out, saying
        whether it may have been written), and so does at once a send of the worker waiting for
        their buffer space or for metadata (answered not sent). Then stop the worker: a job it
        has not started is answered not sent. The waits for the producers' I/O threads and for
        the worker end by ``deadline_ms``. The producers close first because that is what frees
        a worker blocked on them: waiting for the worker first waits out its send's SEND_BLOCK_MS."""
        with self._producers_lock:
            self._stopping = True
            producers = list(self._producers.values())
        try:
            self._jobs.put_nowait(None)  # an idle worker stops at once
        except queue.Full:
            pass  # a busy one sees _stopping
        for p in producers:
            try:
                p.close(timeout=flush_timeout_s, stop_timeout_s=self._left_s(deadline_ms))
            except CodedError as e:
                log.info("producer close: %s", e)
        self._worker.join(timeout=self._left_s(deadline_ms))
        if self._worker.is_alive():
            log.warning("stopping: the worker is still handing over a request: its records left are answered not sent")

    def _left_s(self, deadline_ms: int) -> float:
        return max(0, deadline_ms - self.clock.now_ms()) / 1000

    def _answer_unfinished(self) -> None:
        """After ``_stop_sending``: answer the records of the requests taken that still have no
        result. With every producer stopped (closed, its I/O thread ended, every batch it held
        failed) such a record never reached one that could send it -- the worker had not handed
        it over, or handed it over as its producer closed --: not sent, nothing written. A
        producer whose I/O thread did not end in time may still be sending it: it may have been
        written."""
        stopped = all(p.stopped for p in self._producers.values())
        error = ProducerClosedError(possibly_written=not stopped)
        row = [-1, -1, error_code(error), error_message(error)]
        for job in list(self._taken):
            if job.resolve_rest(row):
                self._answer(job)

    def close(self) -> None:
        if not self._stopping:  # no drain ran (a test, an embedding); after one nothing is left to wait for
            self._stop_sending(CLOSE_FLUSH_S, self.clock.now_ms() + int(CLOSE_FLUSH_S * 1000) + DRAIN_STOP_MS)
        self.reactor.remove_waker(self._waker)
        self._waker.close()
        super().close()


def _records_bytes(records: list | tuple) -> int:
    """The bytes ``records`` hold against the buffer -- headers too: a request of small values
    with large headers must not slip past the bound. Raises RemoteError(invalid_record) for a
    record that is not ``[key bytes|null, value bytes, headers [[name, bytes|null]...]|null,
    partition int|null]``. The per-record cost of every request: exact class checks."""
    size = 0
    for i, r in enumerate(records):
        if (r.__class__ is tuple or r.__class__ is list) and len(r) == 4:
            key, value, headers, partition = r
            if (value.__class__ is bytes and (key is None or key.__class__ is bytes)
                    and (partition is None or partition.__class__ is int)):
                size += len(value) + RECORD_OVERHEAD_BYTES
                if key is not None:
                    size += len(key)
                if headers is None:
                    continue
                extra = headers_bytes(headers)
                if extra >= 0 and len(headers) <= 1000:
                    size += extra
                    continue
        raise RemoteError(P.INVALID_RECORD, f"record {i} must be [key bytes|null, value bytes, "
                                            "headers [[name, bytes]...]|null, partition int|null]")
    return size


