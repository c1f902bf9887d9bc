"""Metadata the broker cannot read is an operating error wherever it comes from. The broker
entries' list of replaced processes (their seventh element) is read as a list of names: a
string was taken for one, each of its characters a replaced process -- enough of them pushed
the real ones out of what a leader keeps, and a replaced process's late report counted again."""

from __future__ import annotations

from fabric import protocol as P
from fabric import wire
from tests.unit.builders_broker import BATCH_MAX, batch, start
from tests.unit.fakes import request


def test_replaced_processes_that_are_not_a_list_of_names_make_a_push_unreadable(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    for process in ("process-a", "process-b", "process-c"):
        coord._observe_incarnation(2, process)
    for frames in loop.take_pushes():
        loop.push(frames)
    loop.run_until_idle()
    part = broker.partitions[("t", 0)]
    part.append_as_leader([batch(10)], BATCH_MAX)
    coord.commit()  # a delta with nothing changed
    [frames] = loop.take_pushes()
    msg = wire.decode_pub(frames, (P.PUB_METADATA_DELTA,))
    for entry in msg.header["brokers"]:
        if entry[0] == 2:
            entry[6] = "0123456789abcdef"  # a string, not a list of processes
    loop.push([frames[0], frames[1], frames[2], wire.pack(msg.header)])
    assert broker.counters["sub_malformed"] == 1, "a string read as a list of one-character processes"
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="process-b",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.followers[2].log_end_offset == -1, "a replaced process's report counts again"
