"""An ALTER_ISR answered with an error that does not say the change was refused (an internal
error: the coordinator's durable write failed after it had taken the change) has an unknown
outcome, like a timeout: the leader keeps counting the proposed member in the high watermark.

Real ``Broker`` + ``Coordinator`` (the ``Loopback`` of test_isr_versions); the request is
dispatched as ``fabric.rpc``'s server does, an exception becoming an internal-error answer.
"""

from __future__ import annotations

import errno

from engines.errors import LoomError
from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from tests.unit.builders_broker import BATCH_MAX, batch, broker_3_due_back_in_the_isr


def test_isr_expansion_answered_with_an_internal_error_keeps_counting_the_new_member(nodes) -> None:  # noqa: ANN001, F811
    broker, coord, loop = nodes
    part = broker_3_due_back_in_the_isr(broker, coord, loop)
    broker._check_isr()
    (command, header, callback), = loop.requests
    loop.requests = []
    save = coord.store.save

    def disk_full(state) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")
    coord.store.save = disk_full  # type: ignore[method-assign]
    try:
        coord.server.handlers[command](wire.Request([b"broker"], command, dict(header, id=1), []))
        raise AssertionError("the failed durable write was not seen")
    except LoomError as e:  # fabric.rpc answers a handler's operating error so
        callback(None, [], RemoteError(P.UNKNOWN, f"internal error: {type(e).__name__}: {e}"))
    finally:
        coord.store.save = save  # type: ignore[method-assign]
    # the leader cannot tell whether the coordinator kept the change (it did, in memory, before
    # test_coordinator_failed_commit.py's fix; an answer lost after a stored commit is the same):
    # broker 3 may be an ISR member the coordinator elects
    part.append_as_leader([batch(2)], BATCH_MAX)
    part.record_follower_fetch(2, 5, broker.clock.now_ms())
    assert part.high_watermark == 3, f"HW {part.high_watermark} passes ISR member 3 at LEO 3"
    # the proposal is sent again and settles the state on both sides
    broker._check_isr()
    loop.run_until_idle()
    assert part.isr == {1, 2, 3} and part.pending_isr is None and part.high_watermark == 3


def test_isr_expansion_whose_answer_was_lost_is_settled_by_the_resend(nodes) -> None:  # noqa: ANN001, F811
    # the real coordinator's side of a lost answer: the resend names the old partition epoch, and
    # is answered as already applied (not STALE_ISR) with the committed state
    broker, coord, loop = nodes
    part = broker_3_due_back_in_the_isr(broker, coord, loop)
    broker._check_isr()
    (callback, _, _), = loop.serve(P.ALTER_ISR)  # committed; the answer is lost
    loop.take_pushes()  # and so is the push
    callback(None, [], RemoteError(P.REQUEST_TIMED_OUT, "no answer"))
    committed = coord.state.topics["t"].partitions[0]
    assert committed.isr == [1, 2, 3] and part.pending_isr == {1, 2, 3}
    broker._check_isr()
    answers = loop.serve(P.ALTER_ISR)
    assert answers[0][1]["parts"][0]["error"] == 0
    loop.deliver(answers)
    assert part.isr == {1, 2, 3} and part.pending_isr is None
    assert coord.counters.get("alter_isr_stale_isr", 0) == 0
    broker._refresh_metadata()  # the lost push's state, as the next version push would make it ask
    loop.run_until_idle()
    assert part.isr == {1, 2, 3} and part.partition_epoch == committed.partition_epoch
