"""A follower restarted as a new process (its unflushed tail possibly lost under fsync
``interval``) must not be taken back into the ISR on the log end its *old* process reported
(Kafka's KIP-903). The coordinator takes a restarted broker out of every ISR; the leader's next
ISR check, before the new process had fetched once, proposed it again on the old report, and
the coordinator accepted: a replica holding less than the high watermark was in the ISR, and an
election could pick it and lose acknowledged records. Now the coordinator gives every partition
of a restarted broker a new partition epoch (a proposal made before the restart is refused as
stale), and a leader forgets what followers outside the ISR reported at a new partition epoch."""

from __future__ import annotations

from fabric import protocol as P
from fabric.errors import RemoteError
from tests.unit.builders_broker import BATCH_MAX, batch, start


def test_a_restarted_follower_does_not_rejoin_the_isr_on_its_old_process_log_end(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    part = broker.partitions[("t", 0)]
    part.append_as_leader([batch(10)], BATCH_MAX)
    now = broker.clock.now_ms()
    part.record_follower_fetch(2, 10, now)  # broker 2's old process: LEO 10 (its last 4 unflushed)
    part.record_follower_fetch(3, 8, now)
    assert part.high_watermark == 8
    coord._observe_incarnation(2, "old-process")
    coord._observe_incarnation(2, "new-process")  # restarted (power loss: its log now ends at 6)
    assert coord.state.topics["t"].partitions[0].isr == [1, 3]
    for frames in loop.take_pushes():
        loop.push(frames)
    assert part.isr == {1, 3}
    part.record_follower_fetch(3, 10, broker.clock.now_ms())  # committed by the ISR {1, 3}
    assert part.high_watermark == 10
    broker._check_isr()  # the leader's next ISR check, before broker 2's new process fetched once
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert 2 not in part.isr and 2 not in (part.pending_isr or set()), \
        f"broker 2 is back in the ISR {sorted(part.isr)} on the log end its old process reported"
    part.record_follower_fetch(2, 6, broker.clock.now_ms())  # the new process: behind the HW
    broker._check_isr()
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert 2 not in coord.state.topics["t"].partitions[0].isr
    part.record_follower_fetch(2, 10, broker.clock.now_ms())  # caught up: it joins again
    broker._check_isr()
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert coord.state.topics["t"].partitions[0].isr == [1, 2, 3] and part.isr == {1, 2, 3}


def _broker_3_caught_up_outside_the_isr(nodes):  # noqa: ANN001, ANN202
    """t-0 led by broker 1 with ISR [1, 2], 10 records on 1 and 2, and broker 3's (old)
    process reporting all 10: due to join the ISR."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2], partitions=1)
    part = broker.partitions[("t", 0)]
    part.append_as_leader([batch(10)], BATCH_MAX)
    now = broker.clock.now_ms()
    part.record_follower_fetch(2, 10, now)
    part.record_follower_fetch(3, 10, now)
    return broker, coord, loop, part


def test_an_isr_expansion_proposed_before_a_follower_restarted_is_not_applied_after_it(nodes) -> None:  # noqa: ANN001
    """The leader proposes a caught-up follower (its old process), the follower restarts before
    the coordinator judges the proposal (an ALTER_ISR delayed, or sent again after a timeout):
    the proposal is stale."""
    broker, coord, loop, part = _broker_3_caught_up_outside_the_isr(nodes)
    broker._check_isr()  # proposes [1, 2, 3]; the request has not reached the coordinator yet
    coord._observe_incarnation(3, "old-process")
    coord._observe_incarnation(3, "new-process")
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert 3 not in coord.state.topics["t"].partitions[0].isr, \
        f"the ISR {coord.state.topics['t'].partitions[0].isr} takes broker 3's new process on its old one's report"


def test_an_expansion_sent_again_after_a_timeout_is_not_accepted_after_the_follower_restarted(nodes) -> None:  # noqa: ANN001
    """The proposal's request got no answer and is sent again after the restart's new partition
    epoch was applied: it names the epoch it was made on, and is refused as stale."""
    broker, coord, loop, part = _broker_3_caught_up_outside_the_isr(nodes)
    coord._observe_incarnation(3, "old-process")
    for frames in loop.take_pushes():
        loop.push(frames)  # the metadata names broker 3's process
    broker._check_isr()  # proposes [1, 2, 3] on the old report
    assert part.pending_isr == {1, 2, 3}
    (_, _, callback), = loop.requests  # lost: never reaches the coordinator
    loop.requests = []
    callback(None, [], RemoteError(P.REQUEST_TIMED_OUT, "no answer"))
    coord._observe_incarnation(3, "new-process")
    for frames in loop.take_pushes():
        loop.push(frames)  # the new partition epoch, the ISR still [1, 2]
    assert part.partition_epoch == coord.state.topics["t"].partitions[0].partition_epoch
    broker._check_isr()
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert 3 not in coord.state.topics["t"].partitions[0].isr, \
        f"ISR {coord.state.topics['t'].partitions[0].isr}: broker 3 added on its old process's report"


def test_the_high_watermark_does_not_wait_on_a_pending_expansion_whose_member_was_forgotten(nodes) -> None:  # noqa: ANN001
    broker, coord, loop, part = _broker_3_caught_up_outside_the_isr(nodes)
    coord._observe_incarnation(3, "old-process")
    for frames in loop.take_pushes():
        loop.push(frames)  # the metadata names broker 3's process
    broker._check_isr()  # proposes [1, 2, 3]; in flight
    coord._observe_incarnation(3, "new-process")
    for frames in loop.take_pushes():
        loop.push(frames)
    part.append_as_leader([batch(5)], BATCH_MAX)
    part.record_follower_fetch(2, 15, broker.clock.now_ms())  # the ISR [1, 2] holds 15
    assert part.high_watermark == 15, \
        f"HW {part.high_watermark}: held by pending member 3 at LEO {part.followers[3].log_end_offset}"
    loop.deliver(loop.serve(P.ALTER_ISR))  # the stale proposal's answer changes nothing
    assert coord.state.topics["t"].partitions[0].isr == [1, 2] and part.isr == {1, 2}
