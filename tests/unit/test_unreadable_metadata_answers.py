"""Metadata the broker cannot read is an operating error wherever it comes from: a push was
counted and dropped, but the same metadata in the answer to a registration or to a snapshot
request (METADATA) raised out of the reply callback and stopped the broker. And the broker
entries' list of replaced processes (their seventh element) is read as a list of names: a
string was taken for one, each of its characters a replaced process -- enough of them pushed
the real ones out of what a leader keeps, and a replaced process's late report counted again."""

from __future__ import annotations

import copy
from typing import Callable

from fabric import protocol as P
from fabric import wire
from tests.unit.builders_broker import BATCH_MAX, Loopback, batch, start
from tests.unit.fakes import request


def _unreadable(answers: list) -> list:
    """The answers with broker 2's list of replaced processes a number: metadata nobody can read."""
    out = []
    for callback, header, err in answers:
        header = copy.deepcopy(header)
        for entry in header["metadata"]["brokers"]:
            if entry[0] == 2:
                entry[6] = 7
        out.append((callback, header, err))
    return out


def _retried_until(loop: Loopback, done: Callable[[], bool]) -> None:
    """Run the broker, its clock moved on 50 ms at a time, until ``done()`` (within 10 s of
    its time: the retries back off to at most 2 s)."""
    for _ in range(200):
        loop.run_until_idle()
        if done():
            return
        loop.broker.clock.advance(50)
    raise AssertionError("not retried within 10 s")


def test_an_unreadable_registration_answer_is_counted_and_the_broker_registers_again(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    broker._register()
    loop.deliver(_unreadable(loop.serve(P.BROKER_REGISTER)))  # raised TypeError: the broker stopped
    assert not broker._registered and broker.counters["metadata_malformed"] == 1
    _retried_until(loop, lambda: broker._registered)
    assert broker.metadata.brokers[1].incarnation == broker.incarnation


def test_an_unreadable_snapshot_answer_is_counted_and_asked_for_again(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    version = broker.metadata.version
    coord._observe_incarnation(2, "process-a")
    loop.take_pushes()  # lost: the broker asks for a snapshot
    broker._refresh_metadata()
    loop.deliver(_unreadable(loop.serve(P.METADATA)))  # raised TypeError: the broker stopped
    assert broker.metadata.version == version and broker.counters["metadata_malformed"] == 1
    _retried_until(loop, lambda: broker.metadata.brokers[2].incarnation == "process-a")


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
