"""The request port hands on at most ``fabric.zmtp.MESSAGES_PER_PASS`` messages of one connection
per reactor pass, as the reactor drained a libzmq ROUTER (``P.DRAIN_MESSAGES_MAX``): a peer that
floods tiny messages (4 MiB of them are 1.4 million, each a malformed request to answer) held a
pass -- every other connection, the heartbeats and the replication stream -- for seconds. The
rest waits, in order, for the next passes, the connection is not read meanwhile (its bytes stay
in the kernel, the peer's sends block), and another connection is served in the same passes."""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Callable

import pytest

from fabric import zmtp
from fabric.errors import FabricError
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from fabric.zmtp_codec import GREETING, command, metadata_property
from tests.harness import free_ports

DEADLINE_S = 20.0
FLOOD_MESSAGES = 20_000
FLOOD = b"".join(b"\x00\x02" + n.to_bytes(2, "big") for n in range(FLOOD_MESSAGES))  # numbered


def _dealer(port: int, identity: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", b"DEALER")
                                     + metadata_property(b"Identity", identity)))
    return sock


def test_a_flood_of_tiny_messages_is_handed_on_a_pass_at_a_time_in_order() -> None:
    reactor = Reactor()
    (port,) = free_ports(1)
    got: list[list[bytes]] = []
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", got.append)
    flooder = _dealer(port, b"flood")
    other = _dealer(port, b"other")
    try:
        flooder.sendall(FLOOD)
        per_pass: list[int] = []
        other_sent = False
        deadline = time.monotonic() + DEADLINE_S
        while sum(1 for m in got if m[0] == b"flood") < FLOOD_MESSAGES:
            assert time.monotonic() < deadline, f"{len(got)} messages handed on"
            before = sum(1 for m in got if m[0] == b"flood")
            reactor.run_once(5)
            per_pass.append(sum(1 for m in got if m[0] == b"flood") - before)
            if per_pass[-1] and not other_sent:
                other.sendall(b"\x00\x02hi")  # while the flood is being handed on
                other_sent = True
        assert max(per_pass) <= zmtp.MESSAGES_PER_PASS
        flood = [m for m in got if m[0] == b"flood"]
        assert [int.from_bytes(m[1], "big") for m in flood] == list(range(FLOOD_MESSAGES))
        first_other = next(i for i, m in enumerate(got) if m[0] == b"other")
        assert first_other < FLOOD_MESSAGES // 2  # served between the flood's passes, not after all of it
    finally:
        flooder.close()
        other.close()
        server.close()


def _run_until(reactor: Reactor, condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        reactor.run_once(5)


def _receive_all(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


PING = command(b"\x04PING\x00\x00")
PONG = command(b"\x04PONG")


def test_pings_are_answered_within_the_budget_of_a_pass() -> None:
    """A PING costs a parse and a reply as a request does: a peer flooding them is held to
    MESSAGES_PER_PASS answers a pass, not the 4 MiB a pass reads."""
    reactor = Reactor()
    (port,) = free_ports(1)
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", lambda frames: None)
    flooder = _dealer(port, b"flood")
    pings = 4 * zmtp.MESSAGES_PER_PASS
    try:
        handshake = len(GREETING) + len(zmtp.READY)
        got = bytearray()
        _run_until(reactor, lambda: len(got.extend(_receive_all(flooder)) or got) >= handshake, "handshake")
        flooder.setblocking(True)
        flooder.sendall(PING * pings)
        first_pass = reactor.passes + 1
        _run_until(reactor, lambda: len(got.extend(_receive_all(flooder)) or got) >= handshake + pings * len(PONG),
                   "every PONG")
        assert reactor.passes - first_pass + 1 >= pings / (zmtp.MESSAGES_PER_PASS + 1)
    finally:
        flooder.close()
        server.close()


def test_oversized_requests_are_answered_within_the_budget_of_a_pass() -> None:
    """A request of more than FRAMES_MAX frames is discarded and answered: a peer flooding them
    is held to MESSAGES_PER_PASS answers a pass too."""
    reactor = Reactor()
    (port,) = free_ports(1)
    got: list[list[bytes]] = []
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", got.append)
    flooder = _dealer(port, b"flood")
    oversized = b"\x01\x00" * zmtp.P.FRAMES_MAX + b"\x00\x00"
    requests = 3 * zmtp.MESSAGES_PER_PASS
    try:
        flooder.sendall(oversized * requests)
        answered = []
        deadline = time.monotonic() + DEADLINE_S
        while server.counters["requests_over_limit"] < requests:
            assert time.monotonic() < deadline, server.counters
            before = server.counters["requests_over_limit"]
            reactor.run_once(5)
            answered.append(server.counters["requests_over_limit"] - before)
        assert max(answered) <= zmtp.MESSAGES_PER_PASS + 1, answered
    finally:
        flooder.close()
        server.close()


def test_a_handler_error_after_a_pause_does_not_leave_the_connection_paused(caplog) -> None:  # noqa: ANN001
    """An operating error raised by the code a message is handed to (the node's reactor logs
    it and goes on) while a paused connection's rest is handed on: that message is lost, as on
    any pass, but the rest of that connection and the other paused ones are handed on and
    read again."""
    reactor = Reactor(contain_handler_errors=True)
    (port,) = free_ports(1)
    got: list[list[bytes]] = []

    def on_message(frames: list[bytes]) -> None:
        got.append(frames)
        if frames[0] == b"a" and int.from_bytes(frames[1], "big") == zmtp.MESSAGES_PER_PASS + 10:
            raise FabricError("an operating error while handling it")
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", on_message)
    peers = {identity: _dealer(port, identity) for identity in (b"a", b"b")}
    count = 3 * zmtp.MESSAGES_PER_PASS
    try:
        with caplog.at_level(logging.CRITICAL):
            for sock in peers.values():
                sock.sendall(b"".join(b"\x00\x02" + n.to_bytes(2, "big") for n in range(count)))
            _run_until(reactor, lambda: all(sum(1 for m in got if m[0] == i) == count for i in peers),
                       "every message handed on")
            for sock in peers.values():  # and read again: what they send next arrives
                sock.sendall(b"\x00\x02" + count.to_bytes(2, "big"))
            _run_until(reactor, lambda: all(sum(1 for m in got if m[0] == i) == count + 1 for i in peers),
                       "read again after the error")
    finally:
        for sock in peers.values():
            sock.close()
        server.close()


def test_nothing_is_handed_on_after_the_server_is_closed() -> None:
    """A connection paused over its budget when the server closes: its buffered rest is not
    handed on by the passes that follow (the reactor may serve others)."""
    reactor = Reactor()
    (port,) = free_ports(1)
    got: list[list[bytes]] = []
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", got.append)
    flooder = _dealer(port, b"flood")
    try:
        flooder.sendall(FLOOD)
        _run_until(reactor, lambda: got, "the first pass of the flood")
        server.close()
        handed_on = len(got)
        for _ in range(5):
            reactor.run_once(5)
        assert len(got) == handed_on
    finally:
        flooder.close()


def test_replies_to_a_paused_connection_go_out_and_messages_of_several_frames_arrive_once_in_order() -> None:
    """Every message of several frames (some long, so the general parser takes them) is handed
    on once, in order, across the pauses, and the reply to each reaches the paused peer."""
    reactor = Reactor()
    (port,) = free_ports(1)
    got: list[list[bytes]] = []

    def echo(frames: list[bytes]) -> None:
        got.append(frames)
        server.send([frames[0], frames[1]])
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", echo)
    peer = _dealer(port, b"peer")
    count = 3 * zmtp.MESSAGES_PER_PASS
    long_frame = b"\x03\x00\x00\x00\x00\x00\x00\x00\x01x"  # MORE and LONG: one byte
    try:
        peer.sendall(b"".join(long_frame + b"\x01\x02" + n.to_bytes(2, "big") + b"\x00\x00" for n in range(count)))
        _run_until(reactor, lambda: len(got) >= count, f"{len(got)} handed on")
        assert [(m[1], int.from_bytes(m[2], "big"), m[3]) for m in got] == [(b"x", n, b"") for n in range(count)]
        assert server.counters["passes_over_budget"] > 0
        replies = bytearray()
        handshake = len(GREETING) + len(zmtp.READY)
        _run_until(reactor, lambda: len(replies.extend(_receive_all(peer)) or replies) >= handshake + 3 * count,
                   "every reply")
        assert bytes(replies[handshake:]) == b"\x00\x01x" * count
    finally:
        peer.close()
        server.close()


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset-with-replies-waiting"])
def test_a_peer_that_goes_while_paused_is_forgotten_and_the_reactor_does_not_spin(reset: bool) -> None:
    """Paused, the connection is not polled for input (for output only while replies wait): the
    peer's close is read once it is resumed; a reset with replies waiting fails their send,
    which marks it broken, and reading it reports the end. Nothing stays ready for ever."""
    reactor = Reactor()
    (port,) = free_ports(1)
    got: list[list[bytes]] = []

    def on_message(frames: list[bytes]) -> None:
        got.append(frames)
        if reset:
            server.send([frames[0], b"r" * 65536])  # more than the peer, not reading, takes
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", on_message)
    flooder = _dealer(port, b"flood")
    try:
        flooder.sendall(FLOOD)
        _run_until(reactor, lambda: server.counters["passes_over_budget"] and (server.tcp.output_bytes or not reset),
                   "paused (with replies waiting)")
        if reset:
            flooder.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        flooder.close()
        _run_until(reactor, lambda: server.connections == 0 and not server.tcp.output_bytes, "the peer forgotten")
        assert [int.from_bytes(m[1], "big") for m in got] == list(range(len(got)))
        started = time.monotonic()
        for _ in range(5):
            reactor.run_once(20)
        assert time.monotonic() - started >= 0.08  # nothing left ready: each pass waits its timeout
    finally:
        server.close()


def test_the_rest_handed_on_at_a_later_pass_reaches_the_after_pass_hooks_without_waiting_in_the_poll() -> None:
    """The rest of a paused connection is handed on by a timer (``_resume``), which runs after
    its pass's after-pass hooks -- a broker's group commit of the produces handed on, its
    answers to the acks=all writes a REPLICA_ACK handed on has replicated. The next pass must
    run those hooks at once, not when the poll next wakes for something else (up to its
    timeout: the next timer of a node, a second for a bare reactor)."""
    reactor = Reactor()
    (port,) = free_ports(1)
    handed_on: list[list[bytes]] = []
    unseen: list[list[bytes]] = []  # handed on, not yet seen by an after-pass hook
    reactor.after_pass(unseen.clear)

    def on_message(frames: list[bytes]) -> None:
        handed_on.append(frames)
        unseen.append(frames)
    server = ZmtpServer(None, reactor, f"tcp://127.0.0.1:{port}", on_message)
    flooder = _dealer(port, b"flood")
    count = zmtp.MESSAGES_PER_PASS + 10
    poll_timeout_ms = 10_000  # nothing else wakes the poll: no timer, no input
    try:
        flooder.sendall(b"".join(b"\x00\x02" + n.to_bytes(2, "big") for n in range(count)))
        _run_until(reactor, lambda: len(handed_on) == count, "every message handed on")
        assert server.counters["passes_over_budget"] > 0
        start = time.monotonic()
        reactor.run_once(poll_timeout_ms)
        waited_s = time.monotonic() - start
        assert not unseen
        assert waited_s < poll_timeout_ms / 2000, f"the next pass waited {waited_s:.1f} s in the poll"
    finally:
        flooder.close()
        server.close()
