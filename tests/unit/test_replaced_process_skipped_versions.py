"""A leader that never held the metadata naming one of a follower's processes: the follower
restarted twice in quick succession (A, B, C) and the leader missed the push of B's restart (a
PUB drops what its subscriber cannot take), so a snapshot took it from A straight to C. Only A
was then known to it as replaced; a report of B read late counted as if B were a process not
committed yet -- and B's log end may be above what C holds (B's unflushed tail)."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata
from nodes.coordinator.node import Coordinator
from tests.harness import make_config
from tests.unit.builders_broker import isr_after_the_next_check, led_with_broker_2_named, start
from tests.unit.fakes import request


def test_a_late_report_of_a_process_the_leader_never_saw_named_does_not_count(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    part = led_with_broker_2_named(broker, coord, loop, "process-a")
    coord._observe_incarnation(2, "process-b")
    loop.take_pushes()  # the push of B's restart never reaches the leader
    coord._observe_incarnation(2, "process-c")
    for frames in loop.take_pushes():
        loop.push(frames)  # a delta the leader cannot apply: it asks for a snapshot
    loop.run_until_idle()
    assert broker.metadata.brokers[2].incarnation == "process-c" and part.isr == {1, 3}
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="process-b",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.followers[2].log_end_offset == -1, "a replaced process's log end counts"
    assert isr_after_the_next_check(broker, coord, loop) == [1, 3], "broker 2 back in the ISR on B's report"


def test_a_restarted_coordinator_still_knows_the_replaced_processes(tmp_path) -> None:  # noqa: ANN001
    """Kept in memory only, the replaced processes were forgotten at a coordinator restart: the
    snapshot a leader then asked for listed none of them, and a replaced process's late
    registration or heartbeat was taken for a restart again (the live process fenced, named
    replaced, made to register once more)."""
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    coord = Coordinator(config, "coordinator")
    try:
        for process in ("process-a", "process-b", "process-c"):
            coord._observe_incarnation(2, process)
    finally:
        coord.close()
    # the same coordinator restarted: its data dir, fresh ports (a closed ZeroMQ socket may not
    # have let go of its port yet)
    coord = Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator")
    try:
        assert ClusterMetadata.from_wire(coord.metadata_wire()).brokers[2].replaced == ("process-a", "process-b")
        version = coord.state.version
        with pytest.raises(RemoteError) as refused:
            coord._on_register(request(P.BROKER_REGISTER, broker_id=2, incarnation="process-b"))
        assert refused.value.code == P.STALE_BROKER_EPOCH
        coord._observe_incarnation(2, "process-a")
        assert coord.state.incarnations[2] == "process-c" and coord.state.version == version
    finally:
        coord.close()


def test_the_answer_to_a_superseded_registration_starts_no_registration_loop(nodes) -> None:  # noqa: ANN001
    """The broker registers again as a new process (the metadata named another process of it)
    and, before that is answered, once more (a fenced ISR proposal): two registrations in
    flight, of two processes. Taken as this process's, the first answer made it registered with
    metadata naming the previous process -- another re-registration, whose predecessor's
    answer did the same: one restart after another (every partition of the broker fenced each
    time), for good."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    broker._reregister_as_new_incarnation()
    broker.reactor.run_once(0)
    broker._reregister_as_new_incarnation()  # the ISR proposer's on_fenced
    broker.reactor.run_once(0)
    for _ in range(6):  # the answers, each read in a pass of its own
        answers = loop.serve(P.BROKER_REGISTER)
        for answer in answers:
            loop.deliver([answer])
            broker.reactor.run_once(0)
        for frames in loop.take_pushes():
            loop.push(frames)
        broker.reactor.run_once(0)
    assert not loop.requests, "the broker keeps registering as new processes"
    assert broker._registered and coord.state.incarnations[1] == broker.incarnation
