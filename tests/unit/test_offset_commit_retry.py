"""An offset commit whose append timed out is retried as the same append, judged as it was
the first time: a rebalance in between must not turn it into illegal_generation (the first
append may well have landed, and would then be in the log but missing from the table).
Driven through the real OffsetStore with the fake reactor and broker client of the group tests."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.errors import RemoteError, RequestTimeout
from tests.unit.test_groups_followups import _loaded, _records


def _commit_with_a_recheck(tmp_path: Path):  # noqa: ANN202 - (coordinator, client, refusal, results)
    """A commit of t-0 offset 7 whose recheck answers ``refusal[0]``; its first append is sent."""
    gc, coord, client = _loaded(tmp_path)
    refusal: list[RemoteError | None] = [None]
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "")], allow_backward=False, check_log_end=False,
                      done=results.append, recheck=lambda: refusal[0])
    return gc, coord, client, refusal, results


def test_a_retried_append_is_not_rechecked_after_a_rebalance(tmp_path: Path) -> None:
    gc, coord, client, refusal, results = _commit_with_a_recheck(tmp_path)
    (first,) = client.of(P.PRODUCE)
    first[3](None, [], RequestTimeout("no reply"))  # the append may or may not have landed
    assert results == []
    # meanwhile a rebalance ends the member's generation
    refusal[0] = RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over")
    for fn in list(coord.reactor.later):
        fn()
    produces = client.of(P.PRODUCE)
    assert len(produces) == 2, "the timed-out append must be sent again, not refused"
    assert [(r.key, r.value) for r in _records(produces[1][2][0])] == [(r.key, r.value) for r in _records(first[2][0])]
    produces[1][3]({"results": [[0, 0, "", 0]]}, [], None)
    assert results == [None]
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 7


def test_a_commit_not_yet_sent_is_still_rechecked(tmp_path: Path) -> None:
    gc, coord, client = _loaded(tmp_path)
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "")], allow_backward=False, check_log_end=False, done=results.append,
                      recheck=lambda: RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over"))
    assert client.of(P.PRODUCE) == []
    assert [e.code for e in results if e is not None] == [P.ILLEGAL_GENERATION]
    assert "g" not in gc.offsets.table


def test_an_append_the_broker_refused_is_rechecked_before_the_retry(tmp_path: Path) -> None:
    gc, coord, client, refusal, results = _commit_with_a_recheck(tmp_path)
    (first,) = client.of(P.PRODUCE)
    first[3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)  # not written
    refusal[0] = RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over")
    for fn in list(coord.reactor.later):
        fn()
    assert len(client.of(P.PRODUCE)) == 1
    assert [e.code for e in results if e is not None] == [P.ILLEGAL_GENERATION]
    assert "g" not in gc.offsets.table
