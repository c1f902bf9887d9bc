"""A group consumer's request the coordinator refused, or its own refused commit, leaves no
reference cycle behind.

``CoordinatorLink.call`` raised the coordinator's refusal (or the error of a request not sent)
from its locals (``err``, and the ``box`` the reply landed in); ``GroupConsumer.commit`` raised
the CommitFailed it made for a consumer outside any generation from its local ``refused``. The
error's traceback holds the frame, whose locals hold the error: error -> traceback -> frame ->
error, a reference cycle that kept the error, the frames and what they held (the request's
header, the offsets) until a cyclic collection, which a node's tuned collector
(``nodes/run.py``) runs rarely -- and the consumer service's instances are refused routinely
(ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER: a rebalance). The collector is off
while these run: what is not freed by reference counting stays.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from fabric import protocol as P
from fabric.client.group import CommitFailed, GroupConsumer
from fabric.client.group_link import CoordinatorLink
from fabric.clock import ManualClock
from fabric.errors import CodedError, RemoteError, RequestTimeout
from tests.unit.builders_group_consumer import T0, HeldWorld
from tests.unit.fakes import NoHeartbeat, ScriptedCoordinatorLink


class Header(dict):
    """A request's header, or a commit's offsets (a subclass: a dict takes no weak references)."""


def _remembered(error: CodedError, refs: list[weakref.ref]) -> CodedError:
    refs.append(weakref.ref(error))
    return error  # raised or handed on by the caller, which keeps no local of it


class _Coordinator:
    """The link's RPC client: ``answer(refs)`` is the error each request gets, handed to its
    callback as a reply's (``sent``) or raised by ``request`` (not sent)."""

    def __init__(self, refs: list[weakref.ref], answer: Callable[[list], CodedError], sent: bool) -> None:
        self.refs, self.answer, self.sent = refs, answer, sent

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Any, timeout_ms: int) -> None:
        if not self.sent:
            raise self.answer(self.refs)
        callback(None, [], self.answer(self.refs))

    def close(self) -> None:
        pass


class _Reactor:
    def run_once(self, timeout_ms_max: int = 1000) -> None:
        pass


def _failed_call(link: CoordinatorLink, refs: list[weakref.ref], **kwargs: Any) -> tuple[type, int]:
    header = Header(group="g", member_id="m-1", generation=3)
    refs.append(weakref.ref(header))
    try:
        link.call(P.HEARTBEAT, header, **kwargs)
    except CodedError as e:
        return type(e), e.code
    raise AssertionError("the call did not fail")


def test_a_call_the_coordinator_refused_is_freed_without_a_collection(no_collector: None) -> None:
    refs: list[weakref.ref] = []
    coordinator = _Coordinator(refs, lambda r: _remembered(RemoteError(P.ILLEGAL_GENERATION, "generation 3 is not 4"), r),
                               sent=True)
    link = CoordinatorLink(_Reactor(), ManualClock(1000), lambda: coordinator)
    kind, code = _failed_call(link, refs)
    assert issubclass(kind, RemoteError) and code == P.ILLEGAL_GENERATION  # not retriable: raised at once
    assert len(refs) == 2 and [r() for r in refs] == [None, None], "the refused call is kept by a reference cycle"


def test_a_call_not_sent_is_freed_without_a_collection(no_collector: None) -> None:
    refs: list[weakref.ref] = []
    coordinator = _Coordinator(refs, lambda r: _remembered(RequestTimeout("no coordinator known yet"), r), sent=False)
    link = CoordinatorLink(_Reactor(), ManualClock(1000), lambda: coordinator)
    kind, code = _failed_call(link, refs, retry_ms=0)  # retriable, but no time left to retry
    assert kind is RequestTimeout and code == P.REQUEST_TIMED_OUT
    assert len(refs) == 2 and [r() for r in refs] == [None, None], "the unsent call is kept by a reference cycle"


def test_a_commit_refused_outside_any_generation_is_freed_without_a_collection(no_collector: None) -> None:
    consumer = GroupConsumer("127.0.0.1:1", group_id="g", coordinator=ScriptedCoordinatorLink(lambda c, h: {}),
                             heartbeat_factory=NoHeartbeat.make, clock=ManualClock(1000), enable_auto_commit=False)
    refs: list[weakref.ref] = []
    try:
        consumer.subscribe(["t"])  # not joined yet: no member of any generation

        def commit() -> int:
            offsets = Header({("t", 0): 12})
            refs.append(weakref.ref(offsets))
            try:
                consumer.commit(offsets)
            except CommitFailed as e:
                refs.append(weakref.ref(e))
                return e.code
            raise AssertionError("the commit was not refused")
        assert commit() == P.UNKNOWN_MEMBER
    finally:
        consumer.close()
    assert [r() for r in refs] == [None, None], "the refused commit and its error are kept by a reference cycle"


def test_a_poll_that_raises_a_partitions_position_error_is_freed_without_a_collection(no_collector: None) -> None:
    """``auto_offset_reset="none"`` and nothing committed: every poll raises the partition's
    out-of-range error, kept for it (``_cannot_position``) and raised from a local."""
    w = HeldWorld(P.JOIN_GROUP, auto_offset_reset="none", enable_auto_commit=False)
    w.client.holding = False
    w.coordinator.uncommitted = -1
    refs: list[weakref.ref] = []

    def poll() -> int:
        try:
            w.consumer.poll(1000)
        except RemoteError as e:
            refs.append(weakref.ref(e))
            return e.code
        raise AssertionError("the poll did not raise")
    try:
        w.consumer.assign([T0])
        assert [poll(), poll()] == [P.OFFSET_OUT_OF_RANGE] * 2  # as before: until the application seeks
    finally:
        w.close()
    assert [r() for r in refs] == [None, None], "the raised position errors are kept by a reference cycle"


def _refusing(command: bytes, refs: list[weakref.ref]) -> HeldWorld:
    """A consumer whose coordinator refuses ``command`` for good (malformed_request: retrying
    cannot cure it), handed to the request's callback as an RpcClient hands an error reply
    (made, not raised), only weakly in ``refs``."""
    w = HeldWorld(P.JOIN_GROUP, enable_auto_commit=False)
    w.client.holding = False
    answer = w.client._answer

    def refuse(c: bytes, header: dict, callback: Callable) -> None:
        if c != command:
            return answer(c, header, callback)
        callback(None, [], _remembered(RemoteError(P.MALFORMED_REQUEST, f"{c!r} refused"), refs))
    w.client._answer = refuse  # type: ignore[method-assign]
    return w


def _poll_raises(w: HeldWorld) -> int:
    for _ in range(10):
        try:
            w.consumer.poll(100)
        except RemoteError as e:
            return e.code
    raise AssertionError("no poll raised")


def test_a_join_refused_for_good_is_freed_without_a_collection(no_collector: None) -> None:
    refs: list[weakref.ref] = []
    w = _refusing(P.JOIN_GROUP, refs)
    try:
        w.consumer.subscribe(["t"])
        assert _poll_raises(w) == P.MALFORMED_REQUEST  # as before
    finally:
        w.close()
    assert refs and [r() for r in refs] == [None] * len(refs), "the join's refusal is kept by a reference cycle"


def test_a_committed_offset_lookup_refused_for_good_is_freed_without_a_collection(no_collector: None) -> None:
    refs: list[weakref.ref] = []
    w = _refusing(P.OFFSET_FETCH, refs)
    try:
        w.consumer.assign([T0])
        assert _poll_raises(w) == P.MALFORMED_REQUEST  # as before
    finally:
        w.close()
    assert refs and [r() for r in refs] == [None] * len(refs), "the lookup's refusal is kept by a reference cycle"


def test_a_committed_offset_lookup_not_sent_is_freed_without_a_collection(no_collector: None) -> None:
    """The lookup's request not sent (the coordinator not found yet: retriable), kept on the
    lookup as its answer, and the lookup made again after RETRY_BACKOFF_MS."""
    refs: list[weakref.ref] = []
    w = HeldWorld(P.JOIN_GROUP, enable_auto_commit=False)
    w.client.holding = False
    request = w.client.request

    def not_sent_once(command: bytes, header: dict, *args: Any, **kwargs: Any) -> None:
        if command == P.OFFSET_FETCH and not refs:
            raise _remembered(RequestTimeout("no coordinator known yet"), refs)
        request(command, header, *args, **kwargs)
    w.client.request = not_sent_once  # type: ignore[method-assign]
    try:
        w.consumer.assign([T0])
        w.consumer.poll(0)
        assert len(refs) == 1  # not sent
        for _ in range(20):  # asked again after the backoff, answered: the consumer positioned
            w.clock.advance(100)
            w.consumer.poll(0)
            if w.consumer.position(T0) is not None:
                break
        assert w.consumer.position(T0) is not None
    finally:
        w.close()
    assert refs[0]() is None, "the unsent lookup's error is kept by a reference cycle"
