"""A SERVICE_PRODUCE request's job and the hand-over of its records to the client producers
(the producer service, nodes/producer.py): ``Job`` holds a request's records and their results
as they become known; ``JobSender`` hands the records to the producer for the request's acks
level and calls ``answer(job)`` once every record has its result. ``error_code`` and
``error_message`` make a record's result row from the error it failed with.

Thread-safety: ``JobSender.send`` runs on the service's worker thread; results arrive on the
producers' I/O threads, and each ``Job`` locks its own.
"""

from __future__ import annotations

import threading
from itertools import repeat
from typing import Any, Callable, Sequence

from fabric import protocol as P
from fabric import wire
from fabric.client.producer import Producer, RecordFutures
from fabric.client.services import COLUMNS_FORM, HEADERS_OF, KEY_OF, PARTITION_OF, VALUE_OF, pack_rows
from fabric.errors import MAY_HAVE_BEEN_WRITTEN, BufferExhaustedError, CodedError, FabricError, ProducerClosedError

NOT_SENT_MESSAGE = "not sent: the producer service stopped before sending it; nothing written"


class Job:
    """One SERVICE_PRODUCE request in flight. ``results`` is filled by producer I/O threads."""

    __slots__ = ("req", "topic", "acks", "records", "size_bytes", "framed", "results", "remaining", "lock",
                 "values_form", "columns")

    def __init__(self, req: wire.Request, topic: str, acks: int, records: list | tuple, size_bytes: int,
                 framed: bool = False, values_form: bool = False) -> None:
        self.req, self.topic, self.acks, self.records, self.size_bytes = req, topic, acks, records, size_bytes
        self.framed = framed  # records came in a payload frame: results go back in one
        self.values_form = values_form  # ... in the values form: all-good results go back as columns
        self.columns: tuple[list, list] | None = None  # (partitions, offsets) of every record, all delivered
        self.results: list[list | None] = [None] * len(records)
        self.remaining = len(records)
        self.lock = threading.Lock()

    def reply(self) -> tuple[dict, list[bytes]]:
        """The answer (header, payload frames) once every record has its result: the results
        in a frame when the records came in one (as columns when they can be), else in the
        header."""
        if self.columns is not None:
            return {"topic": self.topic, "count": len(self.results), "form": COLUMNS_FORM}, [pack_rows(self.columns)]
        if self.framed:
            return {"topic": self.topic, "count": len(self.results)}, [pack_rows(self.results)]
        return {"topic": self.topic, "results": self.results}, []

    def resolve_columns(self, partitions: list[int], offsets: list[int]) -> bool:
        """Every record delivered at once (one run, in order): True unless some were known."""
        with self.lock:
            if self.remaining != len(self.results):
                return False
            self.columns = (partitions, offsets)
            self.remaining = 0
            return True

    def resolve_many(self, start: int, positions: Sequence[int], rows: list) -> bool:
        """Record the results of records ``start + positions[j]`` (``rows[j]``), each not yet
        known; True when they were the last ones. One lock for them all."""
        with self.lock:
            if positions.__class__ is range and positions.step == 1:
                self.results[start + positions.start:start + positions.stop] = rows
            else:
                for pos, row in zip(positions, rows):
                    self.results[start + pos] = row
            self.remaining -= len(rows)
            return self.remaining == 0

    def resolve_rest(self, row: list) -> bool:
        """Give ``row`` to every record without a result; True if there was one (the job is
        now complete). A result that comes after is dropped (``resolve``) or changes nothing
        the answer depends on (``resolve_many``: ``remaining`` below 0)."""
        with self.lock:
            if self.remaining <= 0:
                return False
            self.results = [row if r is None else r for r in self.results]
            self.remaining = 0
            return True

    def resolve(self, index: int, result: list) -> bool:
        """Record one result; True when it was the last one."""
        with self.lock:
            if self.results[index] is not None:
                return False
            self.results[index] = result
            self.remaining -= 1
            return self.remaining == 0


class JobSender:
    """Hands the records of each job to the producer for its acks level and fills in the
    job's results as they become known; ``answer(job)`` is called (on whichever thread knew
    the last result) once all are. Runs on the service's worker thread; the results arrive on
    the producers' I/O threads (``Job`` locks them)."""

    def __init__(self, producer_for: Callable[[int], Producer], answer: Callable[[Job], None]) -> None:
        self._producer_for = producer_for
        self._answer = answer

    def send(self, job: Job) -> None:
        """Hand the job's records to the producer: each run of consecutive records without
        headers and with the same partition (or none) in one ``send_many`` -- answered by one
        completion hook, with no Python per record on the I/O thread -- the others one by one.
        Runs keep the request's order within every partition, as one ``send`` per record did."""
        try:
            producer = self._producer_for(job.acks)
        except ProducerClosedError:  # the service stopped sending as the job began
            self.refuse(job, P.BUFFER_FULL, NOT_SENT_MESSAGE)
            return
        records, n = job.records, len(job.records)
        partitions = list(map(PARTITION_OF, records))
        if partitions.count(partitions[0]) == n and list(map(HEADERS_OF, records)).count(None) == n:
            self._send_run(job, producer, 0, n, partitions[0])  # the common case: one run
            return
        i = 0
        fatal: CodedError | None = None
        while i < n:
            if fatal is not None:  # e.g. an unknown topic: fail the rest without waiting again
                self._finish_many(job, i, range(n - i), [[-1, -1, fatal.code, fatal.message]] * (n - i))
                return
            partition = partitions[i]
            end = i + 1
            if records[i][2] is None:
                while end < n and partitions[end] == partition and records[end][2] is None:
                    end += 1
            fatal = self._send_run(job, producer, i, end, partition)
            i = end

    def _send_run(self, job: Job, producer: Producer, start: int, end: int, partition: int | None) -> CodedError | None:
        """Send records start..end-1 (no headers unless it is one record), all to
        ``partition``; returns the error that fails every later record of the job, if any."""
        if end - start == 1:
            return self._send_one(job, producer, start)
        run = job.records[start:end]
        try:
            producer.send_many(job.topic, list(map(VALUE_OF, run)), list(map(KEY_OF, run)), partition=partition,
                               on_complete=lambda futures: self._run_done(job, start, futures))
        except BufferExhaustedError as e:  # the records queued are answered by the hook
            queued = set(e.futures.positions)  # type: ignore[attr-defined]
            left = [i for i in range(end - start) if i not in queued]
            self._finish_many(job, start, left, [[-1, -1, e.code, e.message]] * len(left))
            return e if partition is None else None
        except CodedError as e:
            if e.code != P.UNKNOWN_TOPIC_OR_PARTITION:
                return self._send_each(job, producer, start, end)  # e.g. one record too big: only it fails
            self._finish_many(job, start, range(end - start), [[-1, -1, e.code, e.message]] * (end - start))
            return e if partition is None else None
        except FabricError:
            return self._send_each(job, producer, start, end)
        return None

    def _send_each(self, job: Job, producer: Producer, start: int, end: int) -> CodedError | None:
        for i in range(start, end):
            fatal = self._send_one(job, producer, i)
            if fatal is not None:
                self._finish_many(job, i + 1, range(end - i - 1), [[-1, -1, fatal.code, fatal.message]] * (end - i - 1))
                return fatal
        return None

    def _send_one(self, job: Job, producer: Producer, i: int) -> CodedError | None:
        """One record by ``send``; returns the error that fails the job's later records, if any."""
        key, value, headers, partition = job.records[i]

        def delivered(md: Any, err: Exception | None) -> None:
            if err is None:  # md is (topic, partition, offset)
                self._finish(job, i, [md[1], md[2] if job.acks != 0 else -1, 0, ""])
            else:
                self._finish(job, i, [-1, -1, error_code(err), error_message(err)])
        try:
            producer.send(job.topic, value, key=key, headers=headers, partition=partition, on_delivery=delivered)
        except CodedError as e:  # a broker's answer, or the client's own (buffer full, unknown topic…)
            self._finish(job, i, [-1, -1, e.code, e.message])
            if e.code in (P.UNKNOWN_TOPIC_OR_PARTITION, P.BUFFER_FULL) and partition is None:
                return e
        except ProducerClosedError as e:  # closed at the drain's deadline with this job under way: not sent
            self._finish(job, i, [-1, -1, error_code(e), error_message(e)])
        except FabricError as e:
            self._finish(job, i, [-1, -1, P.INVALID_RECORD, str(e)])
        return None

    def _run_done(self, job: Job, start: int, futures: RecordFutures) -> None:
        """The completion hook of a run (producer I/O thread): every record's result at once."""
        positions, partitions, offsets, errors = futures.outcomes(0)
        if job.acks == 0:
            offsets = [-1] * len(offsets)
        if (job.values_form and start == 0 and positions == range(len(job.results)) and errors.count(None) == len(errors)
                and job.resolve_columns(partitions, offsets)):
            self._answer(job)
            return
        if errors.count(None) == len(errors):
            rows: list = list(zip(partitions, offsets, repeat(0), repeat("")))  # packed as arrays, as lists are
        else:
            rows = [[p, o, 0, ""] if err is None else [-1, -1, error_code(err), error_message(err)]
                    for p, o, err in zip(partitions, offsets, errors)]
        self._finish_many(job, start, positions, rows)

    def refuse(self, job: Job, code: int, message: str) -> None:
        """Answer every record of a job not sent with ``code`` and ``message``."""
        n = len(job.records)
        self._finish_many(job, 0, range(n), [[-1, -1, code, message]] * n)

    def _finish(self, job: Job, index: int, result: list) -> None:
        if job.resolve(index, result):
            self._answer(job)

    def _finish_many(self, job: Job, start: int, positions: Sequence[int], rows: list) -> None:
        if rows and job.resolve_many(start, positions, rows):
            self._answer(job)


def error_code(err: Exception) -> int:
    """A producer closed at the drain's deadline: its record timed out (retriable)."""
    if isinstance(err, ProducerClosedError):
        return P.REQUEST_TIMED_OUT
    return err.code if isinstance(err, CodedError) else P.UNKNOWN


def error_message(err: Exception) -> str:
    """The row's message: without the code's name (``str`` of a CodedError starts with it, and
    the gateway puts it in front of the message again); for a record failed by the producers'
    close at the drain's deadline, whether it may have been written."""
    if isinstance(err, ProducerClosedError):
        return ("the producer service stopped before the record was acknowledged"
                + (MAY_HAVE_BEEN_WRITTEN if err.possibly_written else ": it was not sent, nothing written"))
    return err.message if isinstance(err, CodedError) else str(err)
