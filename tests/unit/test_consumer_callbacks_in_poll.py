"""What an application's callback sees of the positions while ``poll`` runs it: the answers in
flight land in a reactor pass inside ``poll`` -- an asynchronous commit's calls ``on_commit``.
That pass ran after the poll had taken its records off the buffer and moved the positions
past them, before it returned them: ``position()`` in the callback named records the
application did not have yet, and a ``commit()`` there (the usual retry of a failed
asynchronous commit) committed past them -- an offset above what ``poll`` had returned. Cut
after that (a Ctrl-C while the records are unpacked), the poll gave its records back, but the
commit stood: they were skipped by whoever read the partition next.

A real GroupConsumer, assigned t-0, on a ManualClock with a fake broker and a coordinator whose
answers land in the consumer's next reactor pass (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from fabric import protocol as P
from tests.unit.builders_group_consumer import T0, HeldWorld


def test_a_commit_in_a_callback_inside_poll_covers_only_records_poll_returned() -> None:
    seen: list[tuple[int | None, int | None]] = []  # (position, committed) in each on_commit

    def on_commit(offsets: dict, err: Exception | None) -> None:
        if not seen:
            world.consumer.commit()  # what was consumed so far
        seen.append((world.consumer.position(T0), world.coordinator.committed.get(T0)))

    world = HeldWorld(P.DESCRIBE_GROUPS, enable_auto_commit=False, on_commit=on_commit)  # nothing held
    c = world.consumer
    try:
        c.assign([T0])
        got: list = []
        for _ in range(20):
            got = c.poll(100, max_records=10)
            if got:
                break
        assert [r.offset for r in got] == list(range(10))
        c.commit(asynchronous=True)  # answered in the next reactor pass: inside the next poll
        assert seen == []
        assert [r.offset for r in c.poll(0, max_records=10)] == list(range(10, 20))
        assert seen == [(10, 10)], f"(position, committed) inside the poll that returned 10..19: {seen}"
    finally:
        world.close()
