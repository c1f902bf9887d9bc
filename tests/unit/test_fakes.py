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
