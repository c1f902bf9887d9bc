"""A commit of a position read in a topic that was deleted and made again before its answer came
is an offset of the old topic: it says nothing of the new one. An assigned group consumer whose
partition starts again in the new topic looks the group's committed offset of it up, and a commit
of its own answered meanwhile wins over that lookup's answer -- but not one of the old topic:
taken, the new topic was read from the old topic's offset, its records below it skipped.

A real GroupConsumer on the fake broker of tests/unit/test_partitions_newer_than_the_reading.py and
a scripted coordinator whose commit answers wait until the test lets them through.
"""

from __future__ import annotations

from typing import Any, Callable

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from tests.unit.builders_group_consumer import T0, consumer_config
from tests.unit.fakes import ScriptedCoordinatorLink
from tests.unit.test_partitions_newer_than_the_reading import (NEW_ID, _first_below, _GroupOfT, _GrowingBroker,
                                                               _LongPollReactor, _made_again, _poll_until)


class _LateCommitAnswers(ScriptedCoordinatorLink):
    """A commit is applied when it is sent; its answer comes once the next committed-offset
    lookup has gone out, before that lookup's answer."""

    def __init__(self, answer: Callable[[bytes, dict], dict]) -> None:
        super().__init__(answer)
        self.late: list[Callable[[], None]] = []

    def request(self, command: bytes, header: dict, *, callback: Callable, timeout_ms: int = 0) -> None:
        if command == P.OFFSET_COMMIT:
            reply: Any = self.call(command, header)
            self.late.append(lambda: callback(reply, [], None))
            return
        late, self.late = (self.late, []) if command == P.OFFSET_FETCH else ([], self.late)

        def answered(h: dict | None, payloads: list, err: Any) -> None:
            for answer in late:
                answer()
            callback(h, payloads, err)
        super().request(command, header, callback=answered, timeout_ms=timeout_ms)


def test_a_commit_of_the_old_topic_answered_after_it_was_made_again_does_not_position_the_new_one() -> None:
    broker = _GrowingBroker()
    coordinator = _GroupOfT(broker)
    coordinator.committed[T0] = 900
    link = _LateCommitAnswers(coordinator)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, _LongPollReactor(broker), link, auto_offset_reset="latest"))
    try:
        c.assign([T0])
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        c.commit(asynchronous=True)  # of the old topic (id-t): applied, its answer late
        assert link.late, "the commit was not sent"
        # the coordinator forgets the old topic's offsets; the consumer learns of the new topic and
        # looks its committed offset up, and the commit's answer comes meanwhile
        _made_again(broker, coordinator, NEW_ID)
        assert _first_below(c, 900) == ("t", 0, 0), \
            f"position {c.position(T0)}: the new topic was read from the old topic's committed offset"
    finally:
        c.close()
