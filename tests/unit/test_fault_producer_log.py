"""The fault workload's producer log (``tests/faults/producer_log.py``): what it reads of a
sender stuck on a retriable error, so that a nemesis run that got too few acknowledgements says
why -- the partition's leader and ISR as the producer sees them, the batches queued with their
last error, the request in flight and its age, and no producer id while one is asked for."""

from __future__ import annotations

from collections.abc import Callable

from fabric import protocol as P
from tests.faults.producer_log import describe
from tests.unit.builders_sender import LEADER, Rig


def test_a_retried_batch_shows_queued_with_its_error_and_the_producer_id_it_waited_for(
        make_sender_rig: Callable[..., Rig]) -> None:
    rig = make_sender_rig()
    rig.send("a")
    rig.sender.run_pass()
    now = rig.sender.clock.now_ms()
    state = describe(rig.sender, "t", now)
    assert state["producer_id"] == (-1, -1, 0) and state["queued"][0][0] == 1 and state["flights"] == []
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    state = describe(rig.sender, "t", now + 30)
    assert state["producer_id"] == (7, 0, 0)
    assert state["flights"] == [(0, LEADER, 3, 1, 30)] and state["queued"] == {}
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]})
    state = describe(rig.sender, "t", now)
    assert state["leaders"] == {0: (1, 3, (1, 2))} and state["flights"] == []
    [(count, sequence, error)] = state["queued"].values()
    assert (count, sequence) == (1, 0) and "isr of 1" in error
    assert rig.sender.errors[P.error_name(P.NOT_ENOUGH_REPLICAS)] == 1
    assert describe(rig.sender, "other", now)["queued"] == {}
