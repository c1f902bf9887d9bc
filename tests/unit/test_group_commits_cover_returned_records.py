"""What a group member commits is the position of the records ``poll`` returned -- never of
records fetched and buffered but not yet returned (the consumer prefetches: a fetch answer of 50
records serves several polls of 10) -- at every commit point: the auto-commit at a poll's
start, the commit before a revocation, ``close``, and an explicit ``commit()``. A member that
gets the partition again starts where the last returned record left off.

A real GroupConsumer on a ManualClock, a fake broker leading t-0 that hands out 50 records per
FETCH, and a scripted coordinator that keeps the committed offsets
(tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabric import protocol as P
from fabric.records import RecordBatchView
from tests.unit.builders_group_consumer import T0, SubscribedMember

AUTO_COMMIT_INTERVAL_MS = 1000


class _Member(SubscribedMember):
    def __init__(self) -> None:
        super().__init__(auto_commit_interval_ms=AUTO_COMMIT_INTERVAL_MS)

    def poll(self, max_records: int = 10) -> list[int]:
        return [r.offset for r in self.consumer.poll(1000, max_records=max_records)]

    def first_poll(self) -> list[int]:
        got: list[int] = []
        for _ in range(5):
            got = self.poll()
            if got:
                return got
        return got

    def commits(self) -> list[int]:
        return [o for c, h in self.link.calls if c == P.OFFSET_COMMIT for _, _, o, *_ in h["offsets"]]


@pytest.fixture
def member() -> Iterator[_Member]:
    m = _Member()
    yield m
    m.consumer.close()


def test_the_auto_commit_commits_the_records_returned_not_those_buffered(member: _Member) -> None:
    assert member.first_poll() == list(range(10))
    assert member.consumer._buffered_records >= 40  # 10..49 fetched, not returned
    member.reactor.advance(AUTO_COMMIT_INTERVAL_MS)
    assert member.poll() == list(range(10, 20))
    assert member.commits() == [10]


def test_close_commits_the_records_returned_not_those_buffered(member: _Member) -> None:
    assert member.first_poll() == list(range(10))
    member.consumer.close()
    assert member.coordinator.committed == {T0: 10}


def test_an_explicit_commit_of_the_positions_covers_the_records_returned_only(member: _Member) -> None:
    assert member.first_poll() == list(range(10))
    member.consumer.commit()
    assert member.coordinator.committed == {T0: 10}


def test_a_rebalance_with_records_buffered_commits_and_resumes_at_the_last_returned(member: _Member) -> None:
    assert member.first_poll() == list(range(10))
    member.consumer.request_rejoin(member.consumer.generation, reset_member=False)  # the heartbeat's news
    got: list[int] = []
    for _ in range(5):
        got = member.poll()
        if got:
            break
    assert member.coordinator.committed == {T0: 10}
    assert got == list(range(10, 20))  # nothing skipped, nothing again


# -- a poll cut short: Ctrl-C (KeyboardInterrupt) once it took records, before it returned them ----
def _interrupted_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str, when: Callable[..., bool]) -> None:
    """``target.name`` raises KeyboardInterrupt the first time ``when(*args)`` holds."""
    real = getattr(target, name)
    fired = []

    def cut(*args: Any, **kw: Any) -> Any:
        if not fired and when(*args, **kw):
            fired.append(True)
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(target, name, cut)


@pytest.mark.parametrize("where", ["decoding", "the pass after taking"])
def test_a_poll_interrupted_after_it_took_records_gives_them_back_so_close_does_not_commit_them(
        member: _Member, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A KeyboardInterrupt inside ``poll`` after the positions moved past the records it was
    returning (while it unpacked them, or in the reactor pass that lets prefetch answers land)
    left the positions past records the application never got -- and the ``close`` that
    follows (a ``with`` block, a ``finally``) committed them: skipped for the group. The
    interrupted poll now gives them back: the positions are where that poll began."""
    assert member.first_poll() == list(range(10))
    if where == "decoding":
        _interrupted_once(monkeypatch, RecordBatchView, "records", lambda view: True)
    else:
        _interrupted_once(monkeypatch, member.reactor, "run_once", lambda timeout_ms_max=1000: timeout_ms_max == 0)
    with pytest.raises(KeyboardInterrupt):
        member.poll(max_records=20)
    assert member.consumer.position(T0) == 10
    member.consumer.close()
    assert member.coordinator.committed == {T0: 10}


def test_a_poll_after_an_interrupted_one_returns_the_records_it_did_not(member: _Member,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert member.first_poll() == list(range(10))
    _interrupted_once(monkeypatch, RecordBatchView, "records", lambda view: True)
    with pytest.raises(KeyboardInterrupt):
        member.poll(max_records=20)
    got: list[int] = []
    for _ in range(5):
        got += member.poll(max_records=20)
        if got:
            break
    assert got == list(range(10, 30))
