"""Loading an offsets partition (at a start, and read again while running) at its edges: an
offset_out_of_range answer in the middle of the read -- the log start passed the read position
(retention), or the log end went back below it (an unclean election lost a part the read had
applied) -- once had the read go on from the log start over what it had applied, so that a
key set only by the part now gone stayed in the table (a stale committed offset; a deleted
group's offset back). The table must be what a fresh read of the log builds. The real
GroupCoordinator, OffsetStore and OffsetsLoader on a FakeGroupContext with a RecordingClient."""

from __future__ import annotations

from pathlib import Path

import msgpack

from engines import batch as B
from fabric import protocol as P
from fabric.records import build_batch
from nodes.coordinator import snapshots as S
from nodes.coordinator.store import StateStore
from tests.unit.fakes import FakeGroupContext, group_coordinator, two_partition_state


def _commit_batch(base: int, group: str, partition: int, offset: int | None) -> bytes:
    key = msgpack.packb([group, "t", partition], use_bin_type=True)
    value = b"" if offset is None else msgpack.packb([offset, "", 1, ""], use_bin_type=True)
    data = bytearray(build_batch([(1, key, value, None)]))
    B.set_base_offset(data, base)
    return bytes(data)


def _loading(tmp_path: Path):  # noqa: ANN202 - (gc, context, client, q of "g")
    context = FakeGroupContext(two_partition_state(), store=StateStore(tmp_path))
    gc, client = group_coordinator(context)
    gc.offsets.ensure_topic()
    gc.offsets.start_loading()
    return gc, context, client, gc.offsets.partition_for_group("g")


def _answer_fetches(client, q: int, answer) -> None:  # noqa: ANN001
    """Answer every unanswered FETCH: of partition ``q`` with ``answer(offset)`` -> (error, hw,
    leo, log start, batches), of the others with an empty log."""
    from nodes.coordinator.offsets import OFFSETS_TOPIC
    for i in [i for i in client.unanswered if client.sent[i][0] == P.FETCH]:
        client.unanswered.remove(i)
        (_, part, offset, _) = client.sent[i][1]["parts"][0]
        if part != q:
            client.sent[i][3]({"parts": [[OFFSETS_TOPIC, part, 0, 0, 0, 0, None]]}, [b""], None)
            continue
        error, hw, leo, start, batches = answer(offset)
        client.sent[i][3]({"parts": [[OFFSETS_TOPIC, q, error, hw, leo, start, None]]}, [b"".join(batches)], None)


def _offsets(gc) -> dict:  # noqa: ANN001
    return {g: {tp: c.offset for tp, c in t.items()} for g, t in gc.offsets.table.items() if t}


def test_a_log_start_that_passed_the_read_position_restarts_the_read_into_a_fresh_table(tmp_path: Path) -> None:
    """g sets t-0 at 0, deletes it at 1, sets t-1 at 2. The read applied offset 0, then the log
    start moved to 2 (retention): the log holds only g's t-1, and so must the table."""
    gc, context, client, q = _loading(tmp_path)
    log = {0: _commit_batch(0, "g", 0, 5), 1: _commit_batch(1, "g", 0, None), 2: _commit_batch(2, "g", 1, 3)}
    _answer_fetches(client, q, lambda off: (0, 3, 3, 0, [log[0]]))  # one batch a read
    assert not gc.offsets.loaded and _offsets(gc) == {"g": {("t", 0): 5}}
    for _ in range(10):
        context.reactor.advance(200)
        _answer_fetches(client, q, lambda off: (P.OFFSET_OUT_OF_RANGE, 3, 3, 2, []) if off < 2
                        else (0, 3, 3, 2, [log[o] for o in range(off, 3)]))
    assert gc.offsets.loaded
    assert _offsets(gc) == {"g": {("t", 1): 3}}, "a key set only by the part of the log now gone stayed"


def test_a_log_end_that_went_back_below_the_read_position_restarts_the_read_into_a_fresh_table(
        tmp_path: Path) -> None:
    """The read applied offsets 0 and 1 (below the HW); the new leader (an unclean election)
    holds only offset 0 and answers offset_out_of_range for 2."""
    gc, context, client, q = _loading(tmp_path)
    first = {0: _commit_batch(0, "g", 0, 5), 1: _commit_batch(1, "g", 1, 9)}
    _answer_fetches(client, q, lambda off: (0, 2, 3, 0, [first[o] for o in range(off, 2)]))
    assert _offsets(gc) == {"g": {("t", 0): 5, ("t", 1): 9}}
    for _ in range(10):
        context.reactor.advance(200)
        _answer_fetches(client, q, lambda off: (P.OFFSET_OUT_OF_RANGE, 1, 1, 0, []) if off > 1
                        else (0, 1, 1, 0, [first[0]][off:]))
    assert gc.offsets.loaded
    assert _offsets(gc) == {"g": {("t", 0): 5}}, "an offset the log no longer holds stayed in the table"
