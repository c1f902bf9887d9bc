"""``GroupConsumer.assign`` called from a callback that ``poll`` runs (``on_commit``, in the
poll's reactor pass). With ``enable_auto_commit`` the assign commits the positions of the
partitions it drops. Were the pass run after the poll took its records (as it was before the
poll ran it first), the dropped partition's position was already past records the application
had not got: the assign committed them, and a poll cut before it handed them over (a Ctrl-C
while they are unpacked) could not give them back -- the partition was no longer assigned --
so whoever read it next skipped them. The pass runs before the take now: this pins that an
assign there commits exactly what the application got.

A real GroupConsumer, assigned t-0, on a ManualClock with a fake broker and a coordinator whose
answers land in the consumer's next reactor pass (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric.records import RecordBatchView
from tests.unit.builders_group_consumer import T0, HeldWorld

OTHER = ("u", 0)  # what the callback assigns instead of t-0


def test_an_assign_in_a_callback_inside_poll_commits_only_records_the_application_got(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def on_commit(offsets: dict, err: Exception | None) -> None:
        if T0 in c.assignment():
            c.assign([OTHER])  # drops t-0: auto-commit commits its position first

    world = HeldWorld(P.DESCRIBE_GROUPS, on_commit=on_commit)  # nothing held: every answer in the next pass
    c = world.consumer
    try:
        c.assign([T0])
        returned: list[int] = []
        for _ in range(20):
            returned = [r.offset for r in c.poll(100, max_records=10)]
            if returned:
                break
        assert returned == list(range(10))
        c.commit({T0: 5}, asynchronous=True)  # answered in the next poll's pass: on_commit assigns there

        def cut(self: RecordBatchView) -> Any:  # a Ctrl-C while the poll unpacks what it took
            raise KeyboardInterrupt
        monkeypatch.setattr(RecordBatchView, "records", cut)
        try:
            returned += [r.offset for r in c.poll(0, max_records=10)]
        except KeyboardInterrupt:
            pass
        monkeypatch.undo()
        assert c.assignment() == [OTHER], "the callback did not run inside the poll"
        for _ in range(5):  # the dropped partition's commit is answered
            c.poll(0)
        assert world.coordinator.committed.get(T0) == max(returned) + 1, \
            f"the assign committed {world.coordinator.committed.get(T0)} for t-0; the application got up to " \
            f"{max(returned)}: the next reader skips what lies between"
    finally:
        world.close()
