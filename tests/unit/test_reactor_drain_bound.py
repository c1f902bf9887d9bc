"""A socket registered with a lower per-pass bound (the follower's replication stream) gives way
to the other sockets and the per-pass hooks after that many messages."""

from __future__ import annotations

import zmq

from fabric import protocol as P
from fabric.reactor import Reactor
from tests.harness import wait_until


def _pair(ctx: zmq.Context, name: str) -> tuple[zmq.Socket, zmq.Socket]:
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"inproc://{name}")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"inproc://{name}")
    return push, pull


def test_bounded_socket_yields_to_other_sockets_and_hooks_each_pass() -> None:
    ctx = zmq.Context()
    try:
        busy_in, busy = _pair(ctx, "busy")
        other_in, other = _pair(ctx, "other")
        seen: list[str] = []
        r = Reactor()
        r.add_socket(busy, lambda f: seen.append("busy"), messages_max=P.REPLICATION_DRAIN_MESSAGES_MAX)
        r.add_socket(other, lambda f: seen.append("other"))
        r.after_pass(lambda: seen.append("hook"))
        waiting = 3 * P.REPLICATION_DRAIN_MESSAGES_MAX + 1
        for _ in range(waiting):
            busy_in.send(b"x")
        other_in.send(b"y")
        assert wait_until(lambda: busy.poll(0) and other.poll(0), 5, what="messages waiting")
        r.run_once(timeout_ms_max=100)
        # one pass: at most the bound from the busy socket, the other socket served, the hook run
        assert seen.count("busy") == P.REPLICATION_DRAIN_MESSAGES_MAX
        assert "other" in seen and seen[-1] == "hook"
        for _ in range(10):  # the rest follows in the next passes, nothing lost
            if seen.count("busy") == waiting:
                break
            r.run_once(timeout_ms_max=100)
        assert seen.count("busy") == waiting
        assert seen.count("hook") == 4
        for s in (busy_in, busy, other_in, other):
            s.close(0)
    finally:
        ctx.destroy(0)


def test_default_bound_is_the_fabric_drain_limit() -> None:
    ctx = zmq.Context()
    try:
        sin, s = _pair(ctx, "plain")
        got: list[bytes] = []
        r = Reactor()
        r.add_socket(s, lambda f: got.append(f[0]))
        for _ in range(P.REPLICATION_DRAIN_MESSAGES_MAX * 4):
            sin.send(b"m")
        assert wait_until(lambda: s.poll(0), 5, what="messages waiting")
        r.run_once(timeout_ms_max=100)
        assert len(got) == P.REPLICATION_DRAIN_MESSAGES_MAX * 4  # all in one pass (< DRAIN_MESSAGES_MAX)
        sin.close(0); s.close(0)
    finally:
        ctx.destroy(0)
