"""A REST consumer instance's fetch whose answer never reached the gateway (the gateway's call
timed out while the service, paused, ran it later; the connection dropped after the service
ran it): the instance's positions were past its records, so the client's retry got the records
after them, and the next auto-commit (or the client's commit of what it got) committed past
the lost ones -- skipped. The gateway numbers an instance's fetches (``fetch_id``) and, while
one was lost, says in every request which one it got the answer to last (``answered``) and
which it lost last (``lost``): the instance then seeks the lost fetch's partitions back to where
it began, once, and the records go out again.

A real Instance with a real GroupConsumer on a ManualClock (tests/unit/builders_group_consumer.py),
driven on the test thread one request at a time, as its thread would; the gateway's side is
``fabric.client.fetch_ledger.FetchLedger`` and ``ConsumerInstance`` on a scripted service, and
both together at the end. (Real processes cannot lose an answer on a live instance on cue: a
consumer service paused past the call's timeout is seen down first, and the instance moves.)"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

import fabric.client.fetch_ledger as ledger_mod
from fabric import protocol as P
from fabric.client.fetch_ledger import FetchLedger
from fabric.client.services import ConsumerInstance, pack_rows
from fabric.errors import RemoteError, RequestTimeout
from fabric.records import Record
from nodes.consumer_instance import OPS, Framed, check_op_header
from tests.unit.builders_group_consumer import AUTO_COMMIT_INTERVAL_MS, T0, OffsetsCoordinator, RestInstance, serve

LOST = {"answered": 1, "lost": 2}  # what the gateway says after fetch 1 was answered and fetch 2 lost


class RejoiningCoordinator(OffsetsCoordinator):
    """Group g, whose every join is a new generation."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def __call__(self, command: bytes, header: dict) -> dict:
        answer = super().__call__(command, header)
        if command == P.JOIN_GROUP:
            self.generation += 1
        if command in (P.JOIN_GROUP, P.SYNC_GROUP):
            answer["generation"] = self.generation
        return answer


@pytest.fixture
def rig() -> Iterator[RestInstance]:
    made = RestInstance(RejoiningCoordinator())
    yield made
    made.instance._close()


def test_a_fetch_after_a_lost_answer_delivers_its_records_again(rig: RestInstance) -> None:
    assert rig.fetch(fetch_id=1) == list(range(0, 10))
    assert rig.fetch(fetch_id=2) == list(range(10, 20))  # this answer is lost on its way
    assert rig.fetch(fetch_id=3, **LOST) == list(range(10, 20)), "the records of the lost answer were skipped"


def test_auto_commit_stops_before_the_records_of_a_lost_answer(rig: RestInstance) -> None:
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    rig.fetch(fetch_id=3, **LOST)
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "auto-commit covered records the client never got"
    rig.request("assignment")  # the client read the answer of fetch 3
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 20


@pytest.mark.parametrize("op, header", [("commit", {"offsets": None}), ("delete", {}), ("subscribe", {"topics": []})],
                         ids=["commit-positions", "delete", "unsubscribe"])
def test_a_commit_of_the_positions_after_a_lost_answer_leaves_its_records_uncommitted(
        rig: RestInstance, op: str, header: dict) -> None:
    """The client got 503 and commits "everything fetched", deletes the instance or
    unsubscribes (each commits the positions): that must not cover the records it never got."""
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    rig.request(op, **header, **LOST)
    rig.instance._close()
    assert rig.committed == 10


def test_a_lost_answer_is_undone_once(rig: RestInstance) -> None:
    """Every request says what was lost until a later fetch's answer arrives: the undo happens
    at the first, and the fetch after it, saying it too, is not undone again."""
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    assert rig.request("assignment", **LOST)["positions"] == [["t", 0, 10]]
    assert rig.fetch(fetch_id=3, **LOST) == list(range(10, 20))
    assert rig.request("assignment", **LOST)["positions"] == [["t", 0, 20]], "fetch 3 was undone: not lost"
    assert rig.fetch(fetch_id=4) == list(range(20, 30))


def test_no_answer_lost_no_record_sent_twice(rig: RestInstance) -> None:
    assert rig.fetch(fetch_id=1) == list(range(0, 10))
    assert rig.fetch(fetch_id=2) == list(range(10, 20))
    # fetch 3 was lost before it reached the instance (its service was not sent it)
    assert rig.fetch(fetch_id=4, answered=2, lost=3) == list(range(20, 30))


def test_a_request_sent_before_the_lost_fetch_ended_undoes_nothing(rig: RestInstance) -> None:
    """A commit sent by another thread while fetch 3 was on its way (fetch 2 lost before):
    it names lost 2 -- fetch 3's answer may still come."""
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    rig.fetch(fetch_id=3, **LOST)  # its answer is on its way
    rig.request("commit", offsets=None, **LOST)
    assert rig.committed == 20


def test_a_lost_fetch_taken_after_a_later_one_is_refused(rig: RestInstance) -> None:
    """Fetch 2 timed out while queued on a paused service; the client's retry (3) went out on
    a fresh connection and ran first. Run now, 2 would move the positions past records whose
    answer nobody reads, and the gateway, answered by 3, would never say it was lost."""
    rig.fetch(fetch_id=1)
    assert rig.fetch(fetch_id=3, **LOST) == list(range(10, 20))
    with pytest.raises(RemoteError) as e:
        rig.fetch(fetch_id=2)
    assert e.value.code == P.REQUEST_TIMED_OUT
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "the late fetch 2 counted as the client confirming the answer of fetch 3"
    assert rig.fetch(fetch_id=4) == list(range(20, 30))


def test_the_undo_never_moves_a_position_forward(rig: RestInstance) -> None:
    """A seek under the lost answer's records (one that told nothing of the loss) before the
    next fetch: the position stays where it was sought."""
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    rig.request("seek", to="offsets", offsets=[["t", 0, 3]])
    assert rig.fetch(fetch_id=3, **LOST) == list(range(3, 13))


def test_the_undo_stays_out_of_another_generation(rig: RestInstance) -> None:
    """A rebalance after the lost answer: the revocation committed no further than the lost
    records (the auto-commit bounds), and the partition came back in a new generation at the
    committed offset -- here one another member moved on meanwhile. The undo must not seek
    into the new generation: under what the group committed."""
    rig.fetch(fetch_id=1)
    rig.fetch(fetch_id=2)  # lost
    rig.instance.consumer.request_rejoin(rig.instance.consumer.generation, reset_member=False)
    rig.coordinator.committed[T0] = 15  # at the rejoin the partition starts at 15
    rig.idle(100)
    assert rig.instance.consumer.generation == 2 and rig.request("assignment")["positions"] == [["t", 0, 15]]
    assert rig.fetch(fetch_id=3, **LOST) == list(range(15, 25)), "the undo sought back into the old generation"


def test_an_assign_keeping_the_partition_before_the_loss_is_known_does_not_stop_the_undo() -> None:
    """An assigned instance (the REST ``assign``): fetch 2's answer is on its way when another
    thread of the client assigns t-0 again (a kept partition keeps its position); then fetch 2
    turns out lost. The assignment took t-0 out of what the undo may move back, and the undo put
    the auto-commit bounds back as before fetch 2: 10..19 were skipped and committed past."""
    rig = RestInstance()
    try:
        rig.request("subscribe", topics=[])
        rig.request("assign", partitions=[list(T0)])
        assert rig.fetch(fetch_id=1) == list(range(0, 10))
        assert rig.fetch(fetch_id=2) == list(range(10, 20))  # lost
        rig.request("assign", partitions=[list(T0)], answered=1, lost=0)  # sent while fetch 2 was on its way
        assert rig.fetch(fetch_id=3, **LOST) == list(range(10, 20)), "the records of the lost answer were skipped"
        rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
        assert rig.committed == 10, "auto-commit covered records the client never got"
    finally:
        rig.instance._close()


# -- the gateway's side: which ids each request carries --------------------------------------------
class ScriptedService:
    """A consumer service as ``ConsumerInstance`` calls it: records what each request carried;
    ``lose`` makes the next fetch's call time out."""

    def __init__(self) -> None:
        self.headers: list[dict] = []
        self.lose = False
        self.hold: threading.Event | None = None  # the next fetch's answer waits for it
        self.holding = threading.Event()           # ... which is set once it does

    def call_frames(self, endpoint: str, command: bytes, header: dict, timeout_ms: int) -> tuple[dict, list[bytes]]:
        self.headers.append(dict(header))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            hold.wait(timeout=10)
        if self.lose:
            self.lose = False
            raise RequestTimeout(f"no reply from {endpoint} within {timeout_ms} ms")
        return {"count": 1}, [pack_rows([Record("t", 0, len(self.headers), 0, None, b"v", [])])]

    def call(self, endpoint: str, command: bytes, header: dict, timeout_ms: int) -> dict:
        self.headers.append(dict(header))
        return {"partitions": [], "positions": []}


def _handle(service: ScriptedService, ledger: FetchLedger) -> Any:
    return ConsumerInstance(service, "g", "i", "tcp://127.0.0.1:1", fetches=ledger)  # type: ignore[arg-type]


def test_the_gateway_says_which_answer_it_got_only_after_a_lost_one() -> None:
    service, ledger = ScriptedService(), FetchLedger()
    _handle(service, ledger).fetch()
    _handle(service, ledger).fetch()
    service.lose = True
    with pytest.raises(RequestTimeout):
        _handle(service, ledger).fetch()
    _handle(service, ledger).positions()
    _handle(service, ledger).fetch()  # a later handle (the next HTTP request): the same ledger
    _handle(service, ledger).fetch()
    sent = [(h.get("fetch_id"), h.get("answered", "-")) for h in service.headers]
    assert sent == [(1, "-"), (2, "-"), (3, "-"), (None, 2), (4, 2), (5, "-")]
    assert [h.get("lost") for h in service.headers] == [None, None, None, 3, 3, None]


def test_a_handle_without_a_ledger_sends_no_ids() -> None:
    service = ScriptedService()
    ConsumerInstance(service, "g", "i", "tcp://127.0.0.1:1").fetch()  # type: ignore[arg-type]
    assert "fetch_id" not in service.headers[0] and "answered" not in service.headers[0]


def test_a_fetch_waits_for_the_instances_fetch_on_its_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """One fetch of an instance at a time: the instance can undo only the last one it ran, so a
    fetch lost while a parallel one ran after it would be skipped. A second fetch waits for its
    turn as long as the service lets a fetch wait behind another (then "timed out")."""
    monkeypatch.setattr(ledger_mod, "FETCH_TURN_WAIT_MS", 50)
    service, ledger = ScriptedService(), FetchLedger()
    release = threading.Event()
    service.hold = release
    first = threading.Thread(target=lambda: _handle(service, ledger).fetch())
    first.start()
    try:
        assert service.holding.wait(timeout=5)
        with pytest.raises(RemoteError) as e:
            _handle(service, ledger).fetch()
        assert e.value.code == P.REQUEST_TIMED_OUT and len(service.headers) == 1, "sent beside the one on its way"
    finally:
        release.set()
        first.join(timeout=5)
    _handle(service, ledger).fetch()
    assert [h["fetch_id"] for h in service.headers] == [1, 2]


# -- both sides: the gateway's handle on a real instance ---------------------------------------------
class ServedInstance:
    """The consumer service hosting ``rig``'s instance, as ``ConsumerInstance`` calls it: each
    request is served at once; ``lose`` serves the next fetch and then times out, as a call to a
    paused service that ran it later."""

    def __init__(self, rig: RestInstance) -> None:
        self.rig = rig
        self.lose = False

    def call_frames(self, endpoint: str, command: bytes, header: dict, timeout_ms: int) -> tuple[dict, list[bytes]]:
        header = {k: v for k, v in header.items() if k not in ("group", "instance")}
        check_op_header(OPS[command], header)  # as the service's reactor does
        answer = serve(self.rig.instance, OPS[command], **header, _received=time.monotonic())
        if command == P.CONSUMER_FETCH and self.lose:
            self.lose = False
            raise RequestTimeout(f"no reply from {endpoint} within {timeout_ms} ms")
        return (answer.header, answer.payloads) if isinstance(answer, Framed) else (answer, [])

    def call(self, endpoint: str, command: bytes, header: dict, timeout_ms: int) -> dict:
        return self.call_frames(endpoint, command, header, timeout_ms)[0]


def test_a_retried_fetch_gets_the_records_of_the_lost_answer_and_commits_none_past_them(rig: RestInstance) -> None:
    service, ledger = ServedInstance(rig), FetchLedger()
    handle = ConsumerInstance(service, "g", "rest-1", "tcp://127.0.0.1:1", fetches=ledger)  # type: ignore[arg-type]
    assert [r.offset for r in handle.fetch(max_records=10)] == list(range(0, 10))
    service.lose = True
    with pytest.raises(RequestTimeout):
        handle.fetch(max_records=10)  # the client is answered 503 and asks again
    assert [r.offset for r in handle.fetch(max_records=10)] == list(range(10, 20)), "10..19 were skipped"
    handle.commit()  # the client commits everything fetched
    assert rig.committed == 20


# -- requests served while a fetch's answer is on its way -------------------------------------------
class HeldAnswerService(ServedInstance):
    """``ServedInstance`` whose next fetch once ``hold`` is set, once served, keeps its answer
    until ``release`` is set (then times out: the answer lost): meanwhile other threads'
    requests are served."""

    def __init__(self, rig: RestInstance) -> None:
        super().__init__(rig)
        self.hold, self.served, self.release = False, threading.Event(), threading.Event()

    def call_frames(self, endpoint: str, command: bytes, header: dict, timeout_ms: int) -> tuple[dict, list[bytes]]:
        got = super().call_frames(endpoint, command, header, timeout_ms)
        if command == P.CONSUMER_FETCH and self.hold:
            self.hold = False
            self.served.set()
            self.release.wait(timeout=10)
            raise RequestTimeout(f"no reply from {endpoint} within {timeout_ms} ms")
        return got


def _lose_a_fetch_around(rig: RestInstance, meanwhile: Any) -> ConsumerInstance:
    """A handle that fetched 0..9, then fetched 10..19 and lost the answer, ``meanwhile(handle)``
    (another thread's request) being served after that fetch ran and before its call ended."""
    service, ledger = HeldAnswerService(rig), FetchLedger()
    handle = ConsumerInstance(service, "g", "rest-1", "tcp://127.0.0.1:1", fetches=ledger)  # type: ignore[arg-type]
    assert [r.offset for r in handle.fetch(max_records=10)] == list(range(0, 10))
    service.hold = True
    lost: list[BaseException] = []
    fetching = threading.Thread(target=lambda: _catch(lambda: handle.fetch(max_records=10), lost))
    fetching.start()
    try:
        assert service.served.wait(timeout=5)
        meanwhile(handle)
    finally:
        service.release.set()
        fetching.join(timeout=5)
    assert len(lost) == 1 and isinstance(lost[0], RequestTimeout)
    return handle


def _catch(fn: Any, into: list) -> None:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 -- handed to the test thread
        into.append(e)


def test_a_request_sent_while_a_fetch_is_on_its_way_does_not_confirm_its_answer(rig: RestInstance) -> None:
    """Another thread's request, served after the fetch ran, is no sign that the client read
    that fetch's answer: auto-commit must not cover its records, whose answer is then lost."""
    handle = _lose_a_fetch_around(rig, lambda h: h.positions())
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "auto-commit covered the records of an answer that was on its way, then lost"
    assert handle.positions() == {T0: 10}  # the retry starts at the lost records


@pytest.mark.parametrize("meanwhile", [lambda h: h.delete(), lambda h: h.unsubscribe()], ids=["delete", "unsubscribe"])
def test_a_delete_or_unsubscribe_sent_while_a_fetch_is_on_its_way_commits_none_of_its_records(
        rig: RestInstance, meanwhile: Any) -> None:
    """Each commits the positions with auto-commit, up to what the client has read: not the
    records of a fetch whose answer was on its way (then lost)."""
    _lose_a_fetch_around(rig, meanwhile)
    rig.instance._close()
    assert rig.committed == 10


def test_a_seek_served_after_a_fetch_whose_answer_is_then_lost_stands(rig: RestInstance) -> None:
    """The client sought to 25 while a fetch was on its way; its answer was lost. Undoing that
    fetch must not move the partition back under where the client sought it."""
    handle = _lose_a_fetch_around(rig, lambda h: h.seek({T0: 25}))
    assert [r.offset for r in handle.fetch(max_records=10)] == list(range(25, 35)), "the client's seek was undone"


@pytest.mark.parametrize("op, header", [
    ("fetch", {"fetch_id": 0}), ("fetch", {"fetch_id": -3}),
    ("assignment", {"answered": "1"}), ("assignment", {"answered": 1, "lost": -1}),
    ("fetch", {"answered": -1, "lost": 2})])
def test_malformed_fetch_numbers_are_refused_on_the_reactor(op: str, header: dict) -> None:
    with pytest.raises(RemoteError) as e:
        check_op_header(op, header)
    assert e.value.code == P.MALFORMED_REQUEST
