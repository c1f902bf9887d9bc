"""ZmtpSubscriber (fabric/zmtp_sub.py) against adversarial publishers and settings, on loopback:
a reconnect cap at or below the first reconnect interval caps nothing, as libzmq's
ZMQ_RECONNECT_IVL_MAX (the broker passes its heartbeat interval, which may be shorter: a lost
leader must not be connected to again every few milliseconds); a budget of no messages per
pass, which could never read the handshake and would poll the ready socket forever, is refused."""

from __future__ import annotations

import socket
import time

import pytest

from fabric import protocol as P
from fabric.reactor import Reactor
from fabric.zmtp_client import ZmtpDealer
from fabric.zmtp_sub import ZmtpSubscriber
from tests.harness import free_ports

DEADLINE_S = 10.0
POLL_MS = 5
ATTEMPTS = 4


@pytest.mark.parametrize("cap_ms", [10, 0])
def test_a_reconnect_cap_below_the_first_interval_does_not_shorten_the_interval(cap_ms: int) -> None:
    """A publisher port that accepts and hangs up before the handshake: every attempt fails
    and the next one waits at least the first reconnect interval (libzmq ignores a
    ZMQ_RECONNECT_IVL_MAX not above ZMQ_RECONNECT_IVL; 0 means no cap)."""
    port = free_ports(1)[0]
    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    reactor = Reactor()
    sub = ZmtpSubscriber(reactor, reconnect_ivl_max_ms=cap_ms)
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    accepted: list[float] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(accepted) < ATTEMPTS:
            assert time.monotonic() < deadline, f"only {len(accepted)} connection attempts"
            reactor.run_once(POLL_MS)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            accepted.append(time.monotonic())
            conn.close()  # before any greeting: the attempt fails
        gaps_ms = [1000 * (b - a) for a, b in zip(accepted, accepted[1:])]
        # a little under the interval: the accept is seen up to one poll after the connect
        assert min(gaps_ms) >= P.RECONNECT_IVL_MS - 2 * POLL_MS, gaps_ms
    finally:
        sub.close()
        listener.close()


@pytest.mark.parametrize("budget", [0, -1])
def test_a_budget_of_no_messages_per_pass_is_refused(budget: int) -> None:
    reactor = Reactor()
    with pytest.raises(ValueError):
        ZmtpSubscriber(reactor, messages_per_pass=budget)
    with pytest.raises(ValueError):
        ZmtpDealer(reactor, "tcp://127.0.0.1:1", lambda frames: None, messages_per_pass=budget)
