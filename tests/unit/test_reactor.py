"""The reactor's timer table: cancelled timers (every RPC request arms a timeout that its reply
cancels) must not fill it, and the live count stays right. (Error handling: see
test_node_programmer_errors.py.)"""

from __future__ import annotations

import os

import pytest
import zmq

from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.reactor import Reactor
from fabric.rpc import RpcClient, RpcServer


def test_cancelled_timers_do_not_fill_the_timer_table() -> None:
    reactor = Reactor(ManualClock())
    fired: list[int] = []
    keep = reactor.call_later(60_000, lambda: fired.append(1))
    for _ in range(3 * P.TIMERS_MAX):  # a request timeout armed, then cancelled by its reply
        reactor.call_later(30_000, lambda: None).cancel()
    assert len(reactor._timers) <= P.TIMERS_MAX // 2, "cancelled timers pile up in the heap"
    reactor.clock.advance(60_000)  # type: ignore[attr-defined]
    reactor.run_once(0)
    assert fired == [1] and not keep.cancelled


def test_cancelling_a_fired_or_cancelled_timer_twice_keeps_the_count_right() -> None:
    reactor = Reactor(ManualClock())
    t = reactor.call_later(0, lambda: None)
    reactor.run_once(0)
    t.cancel()  # already fired: nothing in the heap to account for
    u = reactor.call_later(10, lambda: None)
    u.cancel()
    u.cancel()
    periodic = reactor.call_every(5, lambda: None)
    reactor.clock.advance(20)  # type: ignore[attr-defined]
    reactor.run_once(0)
    assert [e[2] for e in reactor._timers] == [periodic]
    assert reactor.timers_live == 1


def test_many_rpc_round_trips_do_not_exhaust_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request timeouts much longer than round trips: the server's replies cancel them. A
    heartbeat timer (due sooner than any timeout) keeps the cancelled ones off the heap's top."""
    monkeypatch.setattr(P, "TIMERS_MAX", 64)
    ctx = zmq.Context.instance()
    reactor = Reactor()
    reactor.call_every(1000, lambda: None)
    endpoint = f"inproc://ops-review-{os.getpid()}"
    server = RpcServer(ctx, reactor, endpoint)
    server.route(P.PING, lambda req: {"pong": True})
    client = RpcClient(ctx, reactor, endpoint, identity="t")
    replies: list[dict] = []
    try:
        for _ in range(500):
            client.request(P.PING, {}, callback=lambda h, p, e: replies.append(h or {"error": e}), timeout_ms=30_000)
            for _ in range(100):  # bounded: one round trip on inproc takes a pass or two
                if client.in_flight == 0:
                    break
                reactor.run_once(10)
        assert len(replies) == 500 and all(r.get("pong") for r in replies)
    finally:
        client.close()
        server.close()


def test_a_cancelled_timer_lets_go_of_what_its_callback_refers_to_at_once() -> None:
    """A request's timeout cancelled by its reply stays in the heap until it is due (or the
    next compaction): its callback -- a client, a consumer and what it buffered -- was kept
    as long, and a closed consumer on a long-lived reactor with it."""
    import weakref

    class Owner:
        def expire(self) -> None:
            pass

    reactor = Reactor(ManualClock())
    owner = Owner()
    timer = reactor.call_later(60_000, owner.expire)
    gone = weakref.ref(owner)
    del owner
    timer.cancel()
    assert reactor._timers, "the husk is still in the heap: the test shows what it means to"
    assert gone() is None, "a cancelled timer still holds its callback's object"
