"""The leader stamps its epoch into a produced batch without copying it when the batch is the
request's own buffer (fabric/buffers.py's OwnedFrame, as the request port delivers every large
frame), and copies anything else; a parked acks=all produce keeps that stamped buffer, which the
produces appended after it leave alone."""

from __future__ import annotations

from pathlib import Path

from engines.batch import parse_header
from fabric import protocol as P
from fabric.buffers import OwnedFrame
from fabric.metadata import PartitionInfo
from fabric.rpc import DEFER
from tests.unit.fakes import as_leader_wrote, broker_core, loom_handlers, make_batch, padded_batch, request

LEADER, FOLLOWER = 1, 2
EPOCH = 7
LATER_PRODUCES = 200


def test_an_owned_batch_is_stamped_in_place_and_any_other_is_copied(tmp_path: Path) -> None:
    core = broker_core(tmp_path, LEADER)
    part = core.open_partition("t", 0, {})
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, EPOCH, (LEADER,), (LEADER,), 1), now_ms=0)
    sent = make_batch(3)
    owned, plain, view = OwnedFrame(sent), bytes(sent), memoryview(bytearray(sent))
    results, written = part.append_as_leader([owned, plain, view], 1 << 20)
    assert [r[:2] for r in results] == [(0, 0), (3, 0), (6, 0)]
    assert written[0] is owned and parse_header(owned).leader_epoch == EPOCH
    assert written[1] is not plain and plain == sent and parse_header(written[1]).leader_epoch == EPOCH
    assert written[2] is not view.obj and bytes(view) == sent  # a view is the sender's: copied
    assert part.read(0, 1 << 20, 9) == b"".join(as_leader_wrote(sent, base, EPOCH) for base in (0, 3, 6))


def test_a_parked_produce_keeps_its_stamped_batch_while_later_produces_are_appended(tmp_path: Path) -> None:
    """acks=all with a follower that has not fetched: the produce is parked with its request
    (and its payload, the stamped OwnedFrame); LATER_PRODUCES more are appended meanwhile; the
    parked payload and the log still hold exactly what was written."""
    core = broker_core(tmp_path, LEADER)
    part = core.open_partition("t", 0, {})
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, EPOCH, (LEADER, FOLLOWER), (LEADER, FOLLOWER), 1),
                               now_ms=0)
    core.partitions_changed()
    handlers, server = loom_handlers(core)
    first = padded_batch(4, tag="first-")
    parked = request(P.PRODUCE, [OwnedFrame(first)], parts=[["t", 0]], acks=-1, timeout_ms=60_000)
    assert handlers.on_produce(parked) is DEFER
    handlers.after_pass()
    assert handlers.parking.size == 1 and not server.replies
    for i in range(LATER_PRODUCES):
        later = request(P.PRODUCE, [OwnedFrame(padded_batch(4, tag=f"later-{i}-"))], parts=[["t", 0]], acks=1)
        handlers.on_produce(later)
        handlers.after_pass()
    expected = as_leader_wrote(first, 0, EPOCH)
    assert bytes(parked.payloads[0]) == expected
    assert part.read(0, len(expected), 4) == expected
    assert part.log_end_offset == 4 * (LATER_PRODUCES + 1) and handlers.parking.size == 1
