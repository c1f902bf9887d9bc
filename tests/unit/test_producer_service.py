"""The producer service's intake (``nodes.producer.ProduceIntake``): every request is checked and
its bytes -- headers included -- counted against the bounded buffer before it is queued; what
does not fit is refused with ``buffer_full`` and leaves nothing behind."""

from __future__ import annotations

from collections import Counter

import pytest

from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from nodes.producer import RECORD_OVERHEAD_BYTES, ProduceIntake
from tests.unit.fakes import request


def test_header_bytes_count_against_the_buffer() -> None:
    intake = ProduceIntake(4096, Counter(), jobs_max=10)
    req = request(P.SERVICE_PRODUCE, topic="t", acks=1, records=[[None, b"v", [["h", b"x" * 100_000]], None]])
    with pytest.raises(RemoteError) as e:
        intake.admit(req)
    assert e.value.code == P.BUFFER_FULL and intake.buffered_bytes == 0 and intake.jobs.empty()
    assert intake.counters["buffer_full"] == 1


def test_an_admitted_request_holds_its_bytes_until_released() -> None:
    intake = ProduceIntake(4096, Counter(), jobs_max=10)
    job = intake.admit(request(P.SERVICE_PRODUCE, topic="t", acks="all", records=[[b"k", b"value", None, None]]))
    assert (job.topic, job.acks) == ("t", -1) and intake.jobs.get_nowait() is job
    assert intake.buffered_bytes == len(b"k") + len(b"value") + RECORD_OVERHEAD_BYTES
    intake.release(job)
    assert intake.buffered_bytes == 0


def test_a_full_job_queue_is_buffer_full_and_holds_no_bytes() -> None:
    intake = ProduceIntake(1 << 20, Counter(), jobs_max=1)
    intake.admit(request(P.SERVICE_PRODUCE, topic="t", acks=1, records=[[None, b"a", None, None]]))
    held = intake.buffered_bytes
    with pytest.raises(RemoteError) as e:
        intake.admit(request(P.SERVICE_PRODUCE, topic="t", acks=1, records=[[None, b"b", None, None]]))
    assert e.value.code == P.BUFFER_FULL and intake.buffered_bytes == held


@pytest.mark.parametrize("header, code", [
    (dict(topic="t", acks=2, records=[[None, b"v", None, None]]), P.MALFORMED_REQUEST),
    (dict(topic="t", acks=True, records=[[None, b"v", None, None]]), P.MALFORMED_REQUEST),
    (dict(topic="t", acks=1, records=[]), P.MALFORMED_REQUEST),
    (dict(topic="t", acks=1, records=[[None, "not bytes", None, None]]), P.INVALID_RECORD),
    (dict(topic="t", acks=1, records=[[None, b"v", None, True]]), P.INVALID_RECORD),
    (dict(acks=1, records=[[None, b"v", None, None]]), P.MALFORMED_REQUEST),
])
def test_bad_requests_are_refused_with_their_code(header: dict, code: int) -> None:
    intake = ProduceIntake(4096, Counter(), jobs_max=10)
    with pytest.raises((RemoteError, MalformedFrame)) as e:
        intake.admit(request(P.SERVICE_PRODUCE, **header))
    assert e.value.code == code and intake.jobs.empty() and intake.buffered_bytes == 0
