"""/ws/consume: past PENDING_MARKS_MAX marks not yet committed, the older half is merged into
one mark. A partition's offsets need not ascend from message to message (a position moved back
between fetches: a rebalance that handed it back at a lower committed offset, a seek), so the
merge keeps each partition's highest offset, as a commit of the marks one by one does; it kept
the last one, and a commit then moved the group's offset back below what the client read. The
merged mark is covered only by a ``through`` at or past its last message, so nothing past what
the client confirmed is committed. ``Delivered`` for real, with an outbox and an instance that
record."""

from __future__ import annotations

from types import SimpleNamespace

from webui import ws_consume as consumemod

P0 = ("t", 0)


class _Outbox:
    def __init__(self, marks: list) -> None:
        self.marks = marks

    def take_sent_marks(self) -> list:
        marks, self.marks = self.marks, []
        return marks


class _Instance:
    """Owns p0, whose group has committed nothing; records the commits it gets."""

    def __init__(self) -> None:
        self.commits: list[dict] = []

    def owned(self) -> list:
        return [P0]

    def committed(self, tps: list) -> dict:
        return {}

    def commit(self, offsets: dict) -> None:
        self.commits.append(dict(offsets))


def _delivered(marks: list) -> tuple[consumemod.Delivered, _Instance]:
    instance = _Instance()
    gw = SimpleNamespace(agent=SimpleNamespace(call_instance=lambda _g, _n, op: op(instance)))
    return consumemod.Delivered(_Outbox(marks), gw, "g", "i-1", named=True), instance  # type: ignore[arg-type]


def test_merged_marks_keep_each_partitions_highest_offset_and_no_later_one() -> None:
    half = (consumemod.PENDING_MARKS_MAX + 1) // 2  # the messages merged into one mark
    # p0 read up to offset 1000 by message half - 1, then moved back: message ``half`` sent 0..9
    offsets = [1000 - (half - 1) + seq for seq in range(1, half)] + [10]
    offsets += [5000 + seq for seq in range(half + 1, 2 * half + 2)]  # later messages: not confirmed
    marks = [(seq, {P0: offset}) for seq, offset in enumerate(offsets, start=1)]
    assert len(marks) > consumemod.PENDING_MARKS_MAX
    delivered, instance = _delivered(marks)
    delivered.collect()
    assert len(delivered.pending) <= consumemod.PENDING_MARKS_MAX

    delivered.commit(through=half - 1)  # inside the merged mark: it is not confirmed whole
    assert instance.commits == []
    delivered.commit(through=half)
    assert instance.commits == [{P0: 1000}], "the merged mark lost the highest offset the client confirmed"
