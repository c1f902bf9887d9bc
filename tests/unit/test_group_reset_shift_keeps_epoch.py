"""A reset by shift (``loom group reset-offsets --shift-by N``, REST ``"to": "shift"``) commits each
new offset at or below the committed one with the committed offset's leader epoch (KIP-320): the
record before an offset lower in the log the group read is of that epoch or an older one, so the
member that starts there is sent back where a leader's log parts from that log below it. Without
it, a group whose committed offset an unclean election left past the new leader's log end, shifted
back (or clamped to that end), started at the new offset and skipped the records the new leader
wrote below it (the group nemesis's unclean mode). Other targets (an offset, a time, the log's
ends) name the current log, not the one the group read: no epoch. Through the real GroupAdmin over
a scripted Admin (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.group_admin import GroupAdmin
from tests.unit.test_group_reset_shift_without_commit import _GroupsAdmin


class _WithEpochs(_GroupsAdmin):
    """``_GroupsAdmin`` (topic t, three partitions, log ends 10) whose OFFSET_FETCH answers
    ``epochs`` (partition -> committed leader epoch) with the committed offsets."""

    def __init__(self, committed: dict[int, int], epochs: dict[int, int]) -> None:
        super().__init__(committed)
        self.epochs = epochs

    def call_coordinator(self, command: bytes, header: dict, retries: int = 3) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [["t", p, o, "", self.epochs.get(p, -1)] for p, o in self.committed.items()]}
        return super().call_coordinator(command, header, retries)


def _reset(admin: _WithEpochs, **target: Any) -> list:
    ga = GroupAdmin(admin)  # type: ignore[arg-type]
    ga.execute_reset("g", ga.plan_reset("g", "t", **target))
    [offsets] = admin.commits
    return offsets


def test_a_shift_back_commits_the_committed_epoch_and_a_clamp_below_the_committed_offset_too() -> None:
    # partition 2's committed 12 is past the log end 10 (an unclean election truncated the log)
    admin = _WithEpochs({0: 5, 1: 8, 2: 12}, {0: 3, 1: 3, 2: 4})
    assert _reset(admin, shift_by=-2) == [["t", 0, 3, "", 3], ["t", 1, 6, "", 3], ["t", 2, 10, "", 4]]


def test_a_shift_forward_names_no_epoch_but_where_the_log_end_clamps_it_below_the_committed_offset() -> None:
    admin = _WithEpochs({0: 5, 1: 8, 2: 12}, {0: 3, 1: 3, 2: 4})
    assert _reset(admin, shift_by=3) == [["t", 0, 8], ["t", 1, 10], ["t", 2, 10, "", 4]]


@pytest.mark.parametrize("target", [{"to_offset": 2}, {"to_earliest": True}, {"to_latest": True}])
def test_other_targets_name_no_epoch(target: dict) -> None:
    admin = _WithEpochs({0: 5, 1: 8, 2: 12}, {0: 3, 1: 3, 2: 4})
    assert all(len(e) == 3 for e in _reset(admin, **target))


def test_a_committed_offset_without_an_epoch_is_shifted_without_one() -> None:
    admin = _WithEpochs({0: 5, 1: 8, 2: 9}, {1: 2})
    assert _reset(admin, shift_by=-1) == [["t", 0, 4], ["t", 1, 7, "", 2], ["t", 2, 8]]
