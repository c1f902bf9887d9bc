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
