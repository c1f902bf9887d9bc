"""An assigned group consumer's start at the committed offsets takes no answer that is out of date.

Since the lookup of the committed offsets stopped blocking ``poll``, a partition waits for
its position over several passes, and answers sent for an earlier assignment of it may land
meanwhile: a LIST_OFFSETS of a reset (``auto_offset_reset``) from before the partition was
given up, an OFFSET_FETCH sent before it was given up and assigned again, or an OFFSET_FETCH
that went out before this consumer's own commit. None of them may decide where it starts.

A real GroupConsumer and CoordinatorLink on a ManualClock; a fake broker leading t-0 (log end
1000) that may hold its LIST_OFFSETS answers, and a coordinator client that answers on the
consumer's next reactor pass and holds OFFSET_FETCH until released
(tests/unit/builders_group_consumer.py). The coordinator answers -1 for nothing committed,
as the real one does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from fabric import protocol as P
from tests.unit.builders_group_consumer import LOG_END_OFFSET, T0, HeldCoordinator, HeldWorld, OnePartitionBroker

T1 = ("t", 1)


class ResetHoldingBroker(OnePartitionBroker):
    """``OnePartitionBroker`` whose LIST_OFFSETS answers wait while ``holding_resets``, until
    ``release_resets()``; a request cancelled meanwhile is never answered (as ``RpcClient``'s)."""

    def __init__(self) -> None:
        super().__init__()
        self.holding_resets = False
        self.held_resets: dict[int, Callable[[], None]] = {}
        self._ids = 0

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command != P.LIST_OFFSETS or not self.holding_resets:
            return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        [[topic, partition, spec]] = header["parts"]
        found = [topic, partition, 0, 0 if spec == -2 else LOG_END_OFFSET]
        self._ids += 1
        self.held_resets[self._ids] = lambda: callback({"parts": [found]}, [], None)
        return self._ids

    def cancel(self, request_id: int) -> bool:
        return self.held_resets.pop(request_id, None) is not None

    def release_resets(self) -> None:
        self.holding_resets = False
        self.replies.extend(self.held_resets.values())
        self.held_resets.clear()


class SnapshotCoordinator(HeldCoordinator):
    """``HeldCoordinator`` whose held OFFSET_FETCH answers what was committed when it was
    sent (as the coordinator answers what it holds when the request reaches it)."""

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int) -> None:
        if command == self.held_command and self.holding:
            reply = self.answer(command, header)
            self.calls.append((command, dict(header)))
            entry = (lambda h, p, err, cb=callback: cb(reply, p, err), header)
            self.held.append(entry)
            self.reactor.call_later(timeout_ms, lambda: self._expire(entry))
            return
        super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


class _World(HeldWorld):
    """Group g (nothing committed yet) and an assigned consumer of it, auto_offset_reset latest,
    no auto-commit; OFFSET_FETCH held until ``release``d."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(P.OFFSET_FETCH, ResetHoldingBroker(), SnapshotCoordinator,
                         **{"auto_offset_reset": "latest", "enable_auto_commit": False, **kw})
        self.coordinator.uncommitted = -1  # as the real coordinator answers for nothing committed

    def release(self) -> None:
        self.client.release()
        self.client.holding = True

    def offsets(self, timeout_ms: int = 1000) -> list[int]:
        return [r.offset for r in self.consumer.poll(timeout_ms, max_records=5)]



@pytest.fixture
def world() -> Iterator[_World]:
    w = _World()
    yield w
    w.close()


def test_a_reset_sent_before_the_partition_was_given_up_does_not_position_it_once_assigned_again(world: _World) -> None:
    """Nothing committed: t-0 is reset to the log end, and that LIST_OFFSETS is still on its way
    when the application gives t-0 up. Then the group commits 30 (another consumer's work), and
    t-0 is assigned again: it starts at 30. The old reset's answer, landing while the new lookup
    waits, put it at the log end -- records 30..999 skipped."""
    c = world.consumer
    c.assign([T0])
    c.poll(0)
    world.broker.holding_resets = True
    world.release()
    c.poll(0)
    c.poll(0)
    assert world.broker.held_resets, "the reset to auto_offset_reset did not go out"
    c.unsubscribe()
    world.coordinator.committed[T0] = 30
    c.assign([T0])
    c.poll(0)  # the lookup goes out, and is held
    world.broker.release_resets()
    c.poll(0)  # the old reset's answer lands
    world.release()
    assert world.offsets() == [30, 31, 32, 33, 34]


def test_a_reset_policy_left_by_a_seek_is_not_taken_once_the_partition_is_assigned_again(world: _World) -> None:
    """seek_to_end and then seek: the partition is at the offset seeked. Given up and assigned
    again after the group committed 30, it starts at 30 -- not at the log end the forgotten
    seek_to_end asked for."""
    c = world.consumer
    c.assign([T0])
    c.seek_to_end([T0])
    c.seek(T0, 3)
    c.unsubscribe()
    world.coordinator.committed[T0] = 30
    c.assign([T0])
    c.poll(0)
    world.release()
    assert world.offsets() == [30, 31, 32, 33, 34]


def test_seek_to_beginning_after_seek_to_end_is_not_overtaken_by_the_first_reset(world: _World) -> None:
    c = world.consumer
    c.assign([T0])
    world.broker.holding_resets = True
    c.seek_to_end([T0])
    c.poll(0)  # its LIST_OFFSETS goes out, and is held
    c.seek_to_beginning([T0])
    world.broker.release_resets()
    assert world.offsets() == [0, 1, 2, 3, 4]


def test_a_lookup_sent_before_the_partition_was_given_up_does_not_position_it_once_assigned_again(world: _World) -> None:
    """The lookup of t-0 goes out (committed: 30); t-0 is given up by an ``assign`` of other
    partitions, the group moves on to 80, and t-0 is assigned again: it starts at 80, as the
    blocking lookup had it -- not at the answer of the lookup of its earlier assignment."""
    c = world.consumer
    world.coordinator.committed[T0] = 30
    c.assign([T0])
    c.poll(0)  # the lookup goes out, answered 30 once released
    c.assign([T1])
    world.coordinator.committed[T0] = 80
    c.assign([T0])
    world.release()
    c.maintain()  # the old answer lands and is taken up (maintain: no records taken, which would move
    c.maintain()  # the position); t-0 is looked up again
    world.release()
    assert world.offsets() == [80, 81, 82, 83, 84]


def test_the_answer_of_a_lookup_does_not_undo_what_a_later_commit_of_this_consumer_recorded(world: _World) -> None:
    """t-0 and t-1 looked up (t-0 committed 30); the application seeks t-0 to 50 and commits
    it. The lookup's answer (30) then must not make the consumer take 30 for what the group
    holds: seeked back to 30 and committed, the commit is sent -- not left out as already
    committed, the group staying at 50 and a restart skipping 30..49."""
    c = world.consumer
    world.coordinator.committed[T0] = 30
    c.assign([T0, T1])
    c.poll(0)  # the lookup goes out, answered 30 once released
    c.seek(T0, 50)
    c.commit({T0: 50})
    world.release()
    c.maintain()
    c.seek(T0, 30)
    c.commit()
    assert world.coordinator.committed[T0] == 30


def test_a_poll_of_positioned_partitions_looks_at_no_partition_one_call_at_a_time(world: _World,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass of an assigned consumer's poll looks for partitions without a position; with
    thousands of partitions, a method call per partition (``_awaits_position``) cost ~2 ms a
    pass where the scan of the positions costs ~0.3 ms: the partitions that have one are passed
    over in the scan itself."""
    c = world.consumer
    tps = [("t", i) for i in range(1000)]
    c.assign(tps)
    for i, tp in enumerate(tps):
        c.seek(tp, 10 + i)
    asked: list = []
    real = c._awaits_position
    monkeypatch.setattr(c, "_awaits_position", lambda tp: asked.append(tp) or real(tp))
    c.poll(0)
    c.maintain()
    assert asked == []
