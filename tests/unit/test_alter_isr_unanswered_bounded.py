"""Unanswered ISR proposals are remembered only for partitions the broker still leads: a
proposal whose partition was deleted (or moved away) while its answer was lost is forgotten at
the next check, so topic churn cannot grow the proposer's memory (or keep closed partitions
alive) without bound.
"""

from __future__ import annotations

from fabric import protocol as P
from fabric.errors import RemoteError
from tests.unit.builders_broker import broker_3_due_back_in_the_isr

ROUNDS = 5


def test_lost_answers_for_deleted_topics_are_not_kept(nodes) -> None:  # noqa: ANN001, F811
    broker, coord, loop = nodes
    for _ in range(ROUNDS):  # create t, propose, lose the answer, delete t
        broker_3_due_back_in_the_isr(broker, coord, loop)
        broker._check_isr()
        (_, _, callback), = loop.requests
        loop.requests = []
        callback(None, [], RemoteError(P.REQUEST_TIMED_OUT, "no answer"))
        assert len(broker.isr_proposer._unanswered) == 1
        del coord.state.topics["t"]
        coord.commit()
        loop.run_until_idle()
        assert ("t", 0) not in broker.partitions
        broker._check_isr()
    assert not broker.isr_proposer._unanswered, \
        f"{len(broker.isr_proposer._unanswered)} proposals of deleted partitions kept"
