"""What the producer service answers for records its producers still hold when a stop's drain
runs out of time (``nodes.producer``: the producers are closed): ``request_timed_out``, retriable,
saying whether an earlier send of the record may have been written -- never the ``unknown``
code a closed producer's error used to map to, which told a client neither. Real producer and
sender, the sender driven by the test (tests/unit/driven_producer.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.services import ServiceProducer
from fabric.config import load_config
from fabric.errors import ClientTimeoutError
from nodes import producer as producer_service
from tests.harness import make_config
from tests.unit.driven_producer import driven_producer, send_pass


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


STOP_BOUND_S = 3.0  # the drain's deadline below and the stop after it: far inside the supervisor's 15 s


class _Request(threading.Thread):
    """One SERVICE_PRODUCE of a record of ``value`` to partition 0 on its own thread: ``rows``
    once answered."""

    def __init__(self, endpoint: str, value: bytes) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.value = endpoint, value
        self.rows: Any = None

    def run(self) -> None:
        sp = ServiceProducer(self.endpoint, timeout_ms=30_000)
        try:
            self.rows = sp.produce_rows("t", [(None, self.value, None, 0)], acks="all")
        finally:
            sp.close()


def test_a_stop_with_the_worker_blocked_on_a_full_producer_buffer_ends_within_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker blocks in a send for up to SEND_BLOCK_MS while the producer's buffer is full
    (its leader does not answer). The stop waited for the worker before closing the producers --
    the one thing that ends that wait -- then closed them, then waited for the answers: past
    the supervisor's SIGKILL in the worst case, and every request in flight then got 50302 at
    the gateway. The whole stop ends within its bound, and both requests taken are answered
    truthfully: nothing of either was sent. A real service in this process, its reactor driven
    by the test; its acks=all producer a real one whose sender never sends."""
    drain_ms = 200
    config = load_config(make_config(tmp_path, 1, extra_nodes=("producer",),
                                     overrides={"services": {"producer_drain_timeout_ms": drain_ms}}))
    stuck = driven_producer(monkeypatch, buffer_bytes_max=1000, max_block_ms=producer_service.SEND_BLOCK_MS)
    service = producer_service.ProducerService(config, "producer", make_producer=lambda acks: stuck)
    endpoint = config.node("producer").endpoint
    requests = [_Request(endpoint, b"a" * 600), _Request(endpoint, b"b" * 600)]  # the second does not fit
    closed = False
    try:
        for r, held_bytes in zip(requests, (600, 1200)):
            r.start()
            service.drive_until(lambda _now, held=held_bytes: service.stats()["jobs_waiting"] == 0  # type: ignore[misc]
                                and service.intake.buffered_bytes >= held, service.clock.now_ms() + 5000)
        assert stuck.accumulator.buffered_bytes > 0 and service.intake.buffered_bytes >= 1200, "the worker is not stuck"
        service.draining = True  # as Node.run does on SIGTERM
        started = time.monotonic()
        service.drain()
        service.close()
        closed, took_s = True, time.monotonic() - started
    finally:
        if not closed:
            service.close()
    for r in requests:
        r.join(5)
    assert took_s < STOP_BOUND_S, f"the stop took {took_s:.1f} s"
    first, second = (r.rows[0] for r in requests)
    assert first[2] == P.REQUEST_TIMED_OUT and "nothing written" in first[3], first
    assert second[2] in P.RETRIABLE and "nothing written" in second[3], second
