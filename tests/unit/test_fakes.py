"""The shared fakes behave like what they stand in for (so tests built on them mean something)."""

from __future__ import annotations

from engines.batch import parse_header
from fabric import protocol as P
from tests.unit.fakes import FakeReactor, RecordingClient, RecordingServer, make_batch, request


def test_fake_reactor_runs_timers_in_due_order_and_skips_cancelled() -> None:
    r = FakeReactor()
    ran: list[str] = []
    r.call_later(20, lambda: ran.append("b"))
    r.call_later(10, lambda: ran.append("a"))
    r.call_later(15, lambda: ran.append("x")).cancel()
    every = r.call_every(10, lambda: ran.append("tick"))
    assert r.advance(9) == 0
    r.advance(11)
    assert ran == ["a", "tick", "b", "tick"]
    every.cancel()
    r.advance(100)
    assert ran == ["a", "tick", "b", "tick"] and r.pending == 0


def test_recording_server_and_client() -> None:
    s = RecordingServer()
    req = request(P.PING, x=1)
    s.reply(req, {"ok": True})
    assert s.answer(req) == {"ok": True}
    c = RecordingClient()
    got: list = []
    c.request(P.METADATA, {"a": 1}, callback=lambda h, p, e: got.append(h))
    c.answer_last(P.METADATA, {"version": 3})
    assert got == [{"version": 3}] and len(c.of(P.METADATA)) == 1


def test_make_batch_header() -> None:
    h = parse_header(make_batch(4, pid=7, epoch=0, seq=10))
    assert (h.record_count, h.producer_id, h.base_sequence) == (4, 7, 10)


def test_recording_client_fails_only_what_is_unanswered_and_keeps_one_way_sends() -> None:
    c = RecordingClient()
    got: list = []
    c.request(P.PRODUCE, {"n": 1}, callback=lambda h, p, e: got.append(("first", h, e)))
    c.answer_last(P.PRODUCE, {"ok": 1})
    c.request(P.PRODUCE, {"n": 2}, callback=lambda h, p, e: got.append(("second", h, e)))
    c.fail_all("gone")
    c.send_oneway(P.PRODUCE, {"acks": 0}, [b"x"])
    assert got == [("first", {"ok": 1}, None), ("second", None, "gone")]
    assert c.oneway == [(P.PRODUCE, {"acks": 0}, [b"x"])] and len(c.sent) == 2


def test_fake_reactor_run_once_waits_its_timeout_and_runs_what_fell_due() -> None:
    r = FakeReactor()
    ran: list[int] = []
    r.call_later(150, lambda: ran.append(r.clock.now_ms()))
    r.run_once(100)
    assert ran == []
    r.run_once(100)
    assert ran == [200]


def test_scripted_coordinator_link_answers_calls_and_requests() -> None:
    from fabric.errors import RemoteError
    from tests.unit.fakes import ScriptedCoordinatorLink

    def answer(command: bytes, header: dict) -> dict:
        if command == P.HEARTBEAT:
            raise RemoteError(P.REBALANCE_IN_PROGRESS)
        return {"echo": header}
    link = ScriptedCoordinatorLink(answer)
    assert link.call(P.JOIN_GROUP, {"a": 1}) == {"echo": {"a": 1}}
    got: list = []
    link.request(P.HEARTBEAT, {}, callback=lambda h, p, e: got.append((h, e.code)))
    assert got == [(None, P.REBALANCE_IN_PROGRESS)] and link.commands() == [P.JOIN_GROUP, P.HEARTBEAT]
