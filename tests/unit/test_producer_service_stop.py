"""What the producer service answers for records its producers still hold when a stop's drain
runs out of time (``nodes.producer``: the producers are closed): ``request_timed_out``, retriable,
saying whether an earlier send of the record may have been written -- never the ``unknown``
code a closed producer's error used to map to, which told a client neither. Real producer and
sender, the sender driven by the test (tests/unit/driven_producer.py)."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import ClientTimeoutError
from tests.unit.driven_producer import send_pass


def test_records_never_sent_are_answered_timed_out_and_not_written(make_rig) -> None:  # noqa: ANN001
    rig = make_rig()
    job = rig.job([(None, b"a", None, 0), (None, b"b", None, 0), (None, b"h", (("n", b"v"),), 1)])
    with pytest.raises(ClientTimeoutError):  # its flush: the records are still held
        rig.producer.close(timeout=0)
    assert rig.answered == [job]
    assert {r[2] for r in job.results} == {P.REQUEST_TIMED_OUT}
    assert all("nothing written" in r[3] and "may have been written" not in r[3] for r in job.results), job.results


def test_records_sent_and_unanswered_are_answered_timed_out_and_may_have_been_written(make_rig) -> None:  # noqa: ANN001
    rig = make_rig()
    job = rig.job([(None, b"a", None, 0), (None, b"b", None, 0), (None, b"h", (("n", b"v"),), 1)])
    send_pass(rig.producer)  # sent; no answer comes
    with pytest.raises(ClientTimeoutError):  # its flush: the records are still held
        rig.producer.close(timeout=0)
    assert rig.answered == [job]
    assert {r[2] for r in job.results} == {P.REQUEST_TIMED_OUT}
    assert all("may have been written" in r[3] for r in job.results), job.results


@pytest.mark.parametrize("records", [
    [(None, b"a", None, 0), (None, b"b", None, 0)],                        # one run: send_many
    [(None, b"a", None, 0), (None, b"h", (("n", b"v"),), 1), (b"k", b"c", None, None)],  # one by one: send
], ids=["run", "each"])
def test_a_job_the_worker_sends_after_the_producers_closed_is_answered_retriable_and_not_written(
        make_rig, records) -> None:  # noqa: ANN001
    """The drain's deadline closes the producers while the worker may still be inside a job (its
    join gives up after SEND_BLOCK_MS + 1 s, e.g. runs each blocking on a full buffer): the
    records it hands over after that are not written, and must be answered so -- retriable --,
    not invalid_record, which tells a client to give up on a valid record."""
    rig = make_rig()
    rig.producer.close(timeout=0)  # nothing held: closes at once
    job = rig.job(records)
    assert rig.answered == [job]
    assert all(r[2] in P.RETRIABLE for r in job.results), job.results
    assert all("nothing written" in r[3] for r in job.results), job.results
