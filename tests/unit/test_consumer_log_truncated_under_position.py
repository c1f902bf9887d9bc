"""A leader's log truncated under the consumer's position: the consumer read records up to a
high watermark a leader reported, and a later leader (an unclean election, a leader that lost
its tail) answers OFFSET_OUT_OF_RANGE because its log ends below the position.

The records the consumer read up to there are gone; the offsets from the new log end on will be
written again, by the new leader, with records the consumer never saw. Reset by
``auto_offset_reset`` ``latest``, the consumer went to the log end as a LIST_OFFSETS answered it
-- after the records the new leader took meanwhile, which were skipped (and committed past by
the next commit); ``earliest`` read the whole log again, ``none`` stopped the application with
nothing it could seek to. As Kafka's consumer does on a truncation it detects (KIP-320), the
consumer goes to the truncation point instead -- the high watermark the out-of-range answer
reports, at most its log end -- whatever the policy, and says so. A position the consumer never
read up to (a seek past the log end, a committed offset) is still reset by the policy.

A real Consumer on a ManualClock with one RecordingClient per endpoint (tests/unit/fakes.py);
broker 1 leads t-0 (tests/unit/test_consumer_fetch_positions.py's broker)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.consumer import FETCH_RETRY_BACKOFF_MS, Consumer
from tests.unit.fakes import FakeReactor
# ``make``: a Consumer reading t-0 from 0, its FETCH at 0 in flight (a pytest fixture)
from tests.unit.test_consumer_fetch_positions import T0, _Broker, _offsets, make  # noqa: F401


def _read_then_truncated(c: Consumer, broker: _Broker, reactor: FakeReactor) -> None:
    """The consumer reads 0..49 (HW 50); the prefetch at 50 is answered out of range by a leader
    whose log (and HW) ends at 40; that leader then takes records 40..44 (HW 45)."""
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    assert broker.fetch_offset() == 50
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=40)


@pytest.mark.parametrize("policy", ["latest", "earliest", "none"])
def test_a_log_truncated_under_the_position_is_read_from_the_truncation_point(
        make: Any, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    c, broker, reactor = make(policy)
    with caplog.at_level(logging.WARNING, logger="fabric.client.consumer"):
        _read_then_truncated(c, broker, reactor)
        got: list = []
        for _ in range(5):
            got += c.poll(0)
            broker.answer_list_offsets(45 if policy == "latest" else 0)  # the log end by now: 45
            offset = broker.fetch_offset()
            if offset is not None:
                broker.answer_fetch(45 - offset, hw=45)
            reactor.advance(FETCH_RETRY_BACKOFF_MS)
    assert _offsets(got) == [40, 41, 42, 43, 44], "records the new leader wrote after the truncation were skipped"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("t-0" in s and "50" in s and "40" in s and "truncated" in s for s in said), said


def test_a_seek_past_the_log_end_is_still_reset_by_the_policy(make: Any) -> None:
    """Never read up to: an application's seek past the end is not a truncation (Kafka: the
    reset policy)."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    c.seek(T0, 5000)
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=50)  # the prefetch at 50: not read after the seek
    c.poll(0)
    assert broker.fetch_offset() == 5000
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, hw=50)
    c.poll(0)
    assert broker.answer_list_offsets(0) == [-2]
    assert c.position(T0) == 0


def test_a_give_back_after_a_truncation_returns_the_records_still_in_the_log(make: Any) -> None:
    """The poll returned 0..49, the truncation moved the position to 40, then the records are
    given back (a consumer service's client never got them): they go out again from 0."""
    c, broker, reactor = make("latest")
    _read_then_truncated(c, broker, reactor)
    assert c.position(T0) == 40
    c.give_back([(T0, 0)])
    assert c.position(T0) == 0
    c.poll(0)
    assert broker.fetch_offset() == 0
