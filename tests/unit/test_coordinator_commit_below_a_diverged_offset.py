"""A member's commit below the group's committed offset, in a newer leader epoch than the one
the committed offset names: the committed offset was read on a log an unclean election has
since cut under it (within one log, the epoch of the record before an offset never falls as the
offset grows, so an offset lower down in a newer epoch is on another log). The member, moved
back to where the logs part (KIP-320), commits what it reads there. Refused as "going
backward", the committed offset stayed above the new leader's log end, every next owner was
sent back to the same place and its progress lost again, and ``reset-offsets`` clamped it to
the log end, where a member that started skipped the records the new leader wrote below it
(the group nemesis's unclean mode, seed 107). Going backward in the same or an older epoch,
or where either epoch is not known, is still refused: nothing says the logs differ.

The real GroupCoordinator and OffsetStore on a FakeGroupContext with a RecordingClient
(tests/unit/fakes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from tests.unit.fakes import ack_last_produce, loaded_group_coordinator


def _commit(gc, client, entry: tuple, base_offset: int) -> RemoteError | None:  # noqa: ANN001
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [entry], allow_backward=False, check_log_end=False, done=results.append)
    if not results:
        ack_last_produce(client, base_offset)
    assert len(results) == 1
    return results[0]


def _committed(gc) -> tuple[int, int]:  # noqa: ANN001
    c = gc.offsets.offsets_for("g")[("t", 0)]
    return c.offset, c.leader_epoch


def test_a_commit_below_the_committed_offset_in_a_newer_epoch_is_taken(tmp_path: Path) -> None:
    gc, _context, client = loaded_group_coordinator(tmp_path)
    assert _commit(gc, client, ("t", 0, 3314, "", 7), 0) is None
    assert _commit(gc, client, ("t", 0, 2978, "", 9), 1) is None
    assert _committed(gc) == (2978, 9)


@pytest.mark.parametrize("committed_epoch,epoch", [(7, 7), (7, 6), (-1, 9), (7, -1)],
                         ids=["same epoch", "older epoch", "committed epoch not known", "epoch not known"])
def test_a_commit_below_the_committed_offset_is_refused_where_nothing_says_the_logs_differ(
        tmp_path: Path, committed_epoch: int, epoch: int) -> None:
    gc, _context, client = loaded_group_coordinator(tmp_path)
    assert _commit(gc, client, ("t", 0, 3314, "", committed_epoch), 0) is None
    err = _commit(gc, client, ("t", 0, 2978, "", epoch), 1)
    assert err is not None and err.code == P.INVALID_COMMIT_OFFSET
    assert _committed(gc) == (3314, committed_epoch)


def test_two_commits_in_one_append_are_judged_against_each_other_with_their_epochs(tmp_path: Path) -> None:
    """The second commit of one append is judged against the first (not yet in the store)."""
    gc, _context, client = loaded_group_coordinator(tmp_path)
    results: dict[int, RemoteError | None] = {}
    for offset, epoch in ((5, 3), (3314, 7), (2978, 9), (2000, 9)):  # the first in flight: the others wait
        gc.offsets.commit("g", [("t", 0, offset, "", epoch)], allow_backward=False, check_log_end=False,
                          done=lambda err, offset=offset: results.__setitem__(offset, err))
    ack_last_produce(client, 0)
    ack_last_produce(client, 1)
    assert {o: r if r is None else r.code for o, r in results.items()} == {
        5: None, 3314: None, 2978: None, 2000: P.INVALID_COMMIT_OFFSET}
    assert _committed(gc) == (2978, 9)
