"""A report of a follower's old process read after that follower restarted (Kafka's KIP-903,
its broker epoch). A leader that stalls across a follower's restart still has the old
process's last REPLICA_ACK or FETCH queued on its request port; it applies the restart's new
partition epoch (forgetting what followers outside the ISR reported) and then reads that old
report: the follower looks caught up at a log end its new process may no longer hold (an
unflushed tail lost), is proposed for the ISR at the new partition epoch, and the coordinator
accepts -- a replica short of the high watermark in the ISR, electable. Every report now names
the process that made it (its incarnation), the metadata names each broker's current process,
and a leader ignores reports of a process its metadata showed replaced (one it has not heard of
yet counts: the coordinator may be away); the coordinator ignores the heartbeats of a process
it has seen replaced (they would announce the dead process as a restart again)."""

from __future__ import annotations

import errno

from engines.errors import LoomError
from fabric import protocol as P
from fabric.rpc import DEFER
from fabric.metadata import BrokerInfo, ClusterMetadata
from nodes.broker.fetcher import FetchSettings, LeaderEndpoint
from nodes.broker.messages import FetchInput
from tests.unit.builders_broker import BATCH_MAX, batch, isr_after_the_next_check, led_with_broker_2_named, start
from tests.unit.fakes import RecordingClient, request


def _broker_2_restarted(nodes):  # noqa: ANN001, ANN202
    """t-0 led by broker 1 with 10 records; broker 2's old process ("old-process") reached 10,
    then it restarted ("new-process"): out of the ISR [1, 3], which holds all 10."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    part = broker.partitions[("t", 0)]
    part.append_as_leader([batch(10)], BATCH_MAX)
    now = broker.clock.now_ms()
    part.record_follower_fetch(3, 10, now)
    coord._observe_incarnation(2, "old-process")
    coord._observe_incarnation(2, "new-process")
    for frames in loop.take_pushes():
        loop.push(frames)
    assert part.isr == {1, 3} and part.high_watermark == 10
    return broker, coord, loop, part


def test_a_replica_ack_of_a_restarted_followers_old_process_is_ignored(nodes) -> None:  # noqa: ANN001
    broker, coord, loop, part = _broker_2_restarted(nodes)
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="old-process",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.followers[2].log_end_offset == -1, "the old process's log end counts"
    assert isr_after_the_next_check(broker, coord, loop) == [1, 3], "broker 2 back in the ISR on its old report"
    # its new process's own report counts
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="new-process",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.followers[2].log_end_offset == 10
    assert isr_after_the_next_check(broker, coord, loop) == [1, 2, 3]


def test_a_fetch_of_a_restarted_followers_old_process_is_served_but_not_counted(nodes) -> None:  # noqa: ANN001
    broker, coord, loop, part = _broker_2_restarted(nodes)
    inp = FetchInput("t", 0, 10, 1 << 20, part.leader_epoch, part.leader_epoch)
    header, _ = broker.handlers.on_fetch(request(P.FETCH, replica_id=2, incarnation="old-process", parts=[inp]))
    assert header["parts"][0].error == 0
    assert part.followers[2].log_end_offset == -1, "the old process's fetch offset counts"
    assert isr_after_the_next_check(broker, coord, loop) == [1, 3]
    broker.handlers.on_fetch(request(P.FETCH, replica_id=2, incarnation="new-process", parts=[inp]))
    assert part.followers[2].log_end_offset == 10
    assert isr_after_the_next_check(broker, coord, loop) == [1, 2, 3]


def test_reports_that_name_no_process_count_as_before(nodes) -> None:  # noqa: ANN001
    """A follower of an older version names no incarnation: its reports count, as they did."""
    broker, coord, loop, part = _broker_2_restarted(nodes)
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.followers[2].log_end_offset == 10


def test_the_metadata_names_each_brokers_current_process(nodes) -> None:  # noqa: ANN001
    broker, coord, loop, part = _broker_2_restarted(nodes)
    assert broker.metadata.brokers[2].incarnation == "new-process"
    md = coord.metadata()
    assert ClusterMetadata.from_wire(md.to_wire()).brokers[2].incarnation == "new-process"
    # an entry of five elements (an older coordinator) names none
    old = md.to_wire()
    old["brokers"] = [b[:5] for b in old["brokers"]]
    assert ClusterMetadata.from_wire(old).brokers[2] == BrokerInfo(2, md.brokers[2].host, md.brokers[2].port,
                                                                   md.brokers[2].pub_port, md.brokers[2].alive)


def test_a_follower_names_its_process_in_every_ack_and_fetch() -> None:
    client = RecordingClient()
    current = ["first"]
    leader = LeaderEndpoint(client, "tcp://leader", 1, 2, incarnation=lambda: current[0])
    leader.fetch([FetchInput("t", 0, 0, 1024, 1, -1)], FetchSettings(False, 200, 1024), callback=lambda *a: None)
    current[0] = "second"  # re-registered as a new process (fenced)

    class Part:
        topic, partition, log_end_offset, leader_epoch = "t", 0, 5, 1
    leader.ack([Part()])  # type: ignore[list-item]
    assert [(c, h["incarnation"]) for c, h, *_ in client.sent + client.oneway] == \
        [(P.FETCH, "first"), (P.REPLICA_ACK, "second")]


def test_a_heartbeat_of_a_replaced_process_is_not_a_restart_nor_a_sign_of_life(nodes) -> None:  # noqa: ANN001
    """The old process's last heartbeat, read after its successor's (the coordinator stalled
    through the restart): taken for another restart it named the dead process current again --
    leaders took its queued reports back -- and kept broker 2 alive on a dead process's word."""
    broker, coord, loop, part = _broker_2_restarted(nodes)
    version = coord.state.version
    coord._observe_incarnation(2, "old-process")
    assert coord.state.incarnations[2] == "new-process"
    assert coord.state.version == version, "the dead process's heartbeat fenced broker 2's partitions again"
    coord.alive.discard(2)
    coord._observe_incarnation(2, "old-process")
    assert 2 not in coord.alive, "a dead process's heartbeat brought broker 2 back to life"


def test_a_replaced_process_that_registers_is_refused_and_starts_over_as_a_new_one(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    first = broker.incarnation
    coord._observe_incarnation(1, "successor")  # another process of broker 1 registered after us
    loop.take_pushes()
    broker._registered = False
    broker._register()  # this (replaced) process registers again
    [(_, header, err)] = loop.serve(P.BROKER_REGISTER)
    assert header is None and err is not None and err.code == P.STALE_BROKER_EPOCH
    assert coord.state.incarnations[1] == "successor", "the replaced process was taken for a restart"
    loop.deliver([(_, header, err)])
    loop.run_until_idle()
    assert broker._registered and broker.incarnation not in (first, "successor")
    assert coord.state.incarnations[1] == broker.incarnation


def test_a_restarted_followers_new_process_counts_before_the_leader_hears_of_the_restart(nodes) -> None:  # noqa: ANN001
    """The coordinator away (or its push late): the metadata still names the old process. What
    the new process reports is its own log, so it counts -- the ISR's high watermark must not
    wait on a follower whose every report is refused."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    part = broker.partitions[("t", 0)]
    coord._observe_incarnation(2, "old-process")
    coord.commit()
    for frames in loop.take_pushes():
        loop.push(frames)
    assert broker.metadata.brokers[2].incarnation == "old-process"
    part.append_as_leader([batch(10)], BATCH_MAX)
    part.record_follower_fetch(3, 10, broker.clock.now_ms())
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="new-process",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    assert part.high_watermark == 10


def test_an_isr_answer_ahead_of_the_metadata_does_not_let_an_old_process_report_count(nodes) -> None:  # noqa: ANN001
    """The leader proposes dropping broker 2 (its old process died, it lags); broker 2 restarts
    before the coordinator reads the proposal, and the restart's fencing already left the ISR
    as proposed: the proposal is answered as applied, with the restart's partition epoch. Taken
    from that answer, the new epoch made the leader forget what broker 2 reported while its
    metadata still named the old process -- whose report, read late, then counted: broker 2
    back in the ISR on a log end its new process may not hold."""
    broker, coord, loop = nodes
    part = led_with_broker_2_named(broker, coord, loop, "old-process")
    now = broker.clock.now_ms()
    part.followers[2].last_caught_up_ms = now - broker.config.replication.replica_lag_time_max_ms - 1
    broker._check_isr()  # proposes [1, 3]: not yet read by the coordinator
    assert part.pending_isr == {1, 3}
    coord._observe_incarnation(2, "new-process")  # its push is still on its way
    assert coord.state.topics["t"].partitions[0].isr == [1, 3]
    loop.deliver(loop.serve(P.ALTER_ISR))  # "already in place", at the restart's partition epoch
    assert part.isr == {1, 3}
    broker.handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=2, incarnation="old-process",
                                           parts=[["t", 0, 10, part.leader_epoch]]))
    for frames in loop.take_pushes():
        loop.push(frames)  # the restart's metadata, naming the new process
    assert part.followers[2].log_end_offset == -1, "the old process's log end counts"
    assert isr_after_the_next_check(broker, coord, loop) == [1, 3], "broker 2 back in the ISR on its old report"


def test_a_parked_fetch_of_a_replaced_process_does_not_count_when_read_again(nodes) -> None:  # noqa: ANN001
    """The old process's last long-poll fetch (caught up, so parked) is read again after the
    restart's metadata arrived -- that metadata changed something, which wakes every parked
    fetch. Judged once, when it arrived (the old process was current then), it counted again
    at the new partition epoch: broker 2 back in the ISR on its old process's log end."""
    broker, coord, loop = nodes
    part = led_with_broker_2_named(broker, coord, loop, "old-process")
    inp = FetchInput("t", 0, 10, 1 << 20, part.leader_epoch, part.leader_epoch)
    wait_ms = broker.limits.fetch_wait_ms_max
    assert broker.handlers.on_fetch(request(P.FETCH, replica_id=2, incarnation="old-process", wait_ms=wait_ms,
                                            parts=[inp])) is DEFER
    coord._observe_incarnation(2, "new-process")
    for frames in loop.take_pushes():
        loop.push(frames)
    assert part.isr == {1, 3} and part.followers[2].log_end_offset == -1
    assert broker.handlers.parking.has_changes()
    broker.handlers.after_pass()  # the parked fetch is read again (no data: parked back)
    assert broker.handlers.parking.size == 1
    assert part.followers[2].log_end_offset == -1, "the old process's parked fetch counts"
    assert isr_after_the_next_check(broker, coord, loop) == [1, 3], "broker 2 back in the ISR on its old report"


def test_the_refusal_of_a_replaced_process_has_a_code_of_its_own() -> None:
    """Its code was the supervisor's UNKNOWN_NODE's too, whose name then stood for both: the
    refusal was logged and counted as ``unknown_node``."""
    assert P.error_name(P.STALE_BROKER_EPOCH) == "stale_broker_epoch"
    assert P.STALE_BROKER_EPOCH not in (P.UNKNOWN_NODE, P.NODE_GIVEN_UP, P.NODE_NOT_RUNNING)


def test_a_live_process_the_coordinator_took_for_replaced_registers_again(nodes) -> None:  # noqa: ANN001
    """The registration of broker 1's previous process (it died just after sending it) is read
    after the current process registered: the coordinator cannot tell which of two random ids
    is newer, takes it for a restart and the live process for replaced. Ignored from then on
    (its heartbeats no sign of life, its reports naming a process the metadata does not), the
    live process never heard of it: broker 1 stayed dead while alive, out of every ISR. The
    metadata names the process the coordinator holds current; one that sees another registers
    again as a new process."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="previous-process"))
    loop.run_until_idle()
    coord._observe_incarnation(1, broker.incarnation)  # the live process's next heartbeat
    assert coord.state.incarnations[1] == broker.incarnation and 1 in coord.alive, \
        "the live process is taken for a replaced one for good"


def test_a_restart_the_coordinator_could_not_store_leaves_no_process_replaced(nodes) -> None:  # noqa: ANN001
    """A predecessor's late registration is taken for a restart, whose write fails (disk full):
    the state goes back to naming the live process -- which had been put among the replaced
    ones all the same. Its heartbeats were then ignored for good, and the metadata naming it
    gave it no reason to register again: broker 1 dead while alive."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    save = coord.store.save

    def disk_full(state) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")
    coord.store.save = disk_full  # type: ignore[method-assign]
    try:
        coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="previous-process"))
        raise AssertionError("the failed write was not seen")
    except LoomError:
        pass  # answered with the error; the coordinator serves on
    finally:
        coord.store.save = save  # type: ignore[method-assign]
    assert coord.state.incarnations[1] == broker.incarnation
    coord._observe_incarnation(1, broker.incarnation)  # the live process's next heartbeat
    assert 1 in coord.alive, "the live process's heartbeats are ignored as a replaced one's"
