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
reports, at most its log end -- whatever the policy, and says so. So does a group's committed
offset past the log end: the coordinator takes no offset past the high watermark it knows, so
the log held it once. A position the consumer never read up to (an application's seek past the
log end) is still reset by the policy.

A real Consumer on a ManualClock with one RecordingClient per endpoint (tests/unit/fakes.py);
broker 1 leads t-0 (tests/unit/test_consumer_fetch_positions.py's broker)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.consumer import FETCH_RETRY_BACKOFF_MS, Consumer
from fabric.client.group import GroupConsumer
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                consumer_config)
from tests.unit.fakes import FakeReactor, ScriptedCoordinatorLink, as_leader_wrote, make_batch
# ``make``: a Consumer reading t-0 from 0, its FETCH at 0 in flight (a pytest fixture)
from tests.unit.test_consumer_fetch_positions import _Broker, _offsets, make  # noqa: F401


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


# -- a committed offset the log was truncated under ------------------------------------------------
TRUNCATED_TO = 40  # the log end the out-of-range answer reports
GROWN_TO = 45      # ... and where the new leader's log has grown by the time the consumer asks again


class _TruncatedBroker(OnePartitionBroker):
    """Leader of t-0 whose log was truncated to TRUNCATED_TO under the group's committed offset
    (an unclean election): a FETCH past it is out of range, and once that is answered the log
    takes records up to GROWN_TO (then LIST_OFFSETS answers GROWN_TO for the log end)."""

    def __init__(self) -> None:
        super().__init__()
        self.end = TRUNCATED_TO

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            [[topic, partition, offset, *_]] = header["parts"]
            if offset > self.end:
                entry = [topic, partition, P.OFFSET_OUT_OF_RANGE, self.end, self.end, 0, None]
                data = b""
                self.end = GROWN_TO
            elif offset < self.end:
                entry = [topic, partition, 0, self.end, self.end, 0, None]
                data = as_leader_wrote(make_batch(self.end - offset), offset, 1)
            else:
                return 0  # a long poll at the log end: answered only when records come (never here)
            self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
            return len(self.replies)
        if command == P.LIST_OFFSETS:
            [[topic, partition, spec]] = header["parts"]
            found = [topic, partition, 0, 0 if spec == -2 else self.end]
            self.replies.append(lambda: callback({"parts": [found]}, [], None))
            return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


@pytest.mark.parametrize("policy", ["latest", "earliest"])
@pytest.mark.parametrize("mode", ["subscribed", "assigned"])
def test_a_committed_offset_the_log_was_truncated_under_is_read_from_the_truncation_point(policy: str,
                                                                                          mode: str) -> None:
    """The group committed 50 (the coordinator takes no offset past the HW it knows: the log held
    it then); the log was truncated to 40 and took 40..44 since. The member reads 40..44: reset
    to latest it went to 45, past them."""
    broker = _TruncatedBroker()
    reactor = BrokerRepliesReactor(broker)
    coordinator = OffsetsCoordinator()
    coordinator.committed[T0] = 50
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(coordinator), auto_offset_reset=policy, enable_auto_commit=False))
    try:
        c.subscribe(["t"]) if mode == "subscribed" else c.assign([T0])
        got: list[int] = []
        for _ in range(20):
            got += [r.offset for r in c.poll(100)]
            if got:
                break
        assert got == list(range(TRUNCATED_TO, GROWN_TO)), "the records taken after the truncation were skipped"
    finally:
        c.close()
