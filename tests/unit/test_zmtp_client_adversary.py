"""ZmtpDealer (fabric/zmtp_client.py) against adversarial peers and callers, on loopback: a
reply handler that raises does not strand the replies received with it; a server that accepts
and never completes the handshake is dropped and connected to again (libzmq's
ZMQ_HANDSHAKE_IVL); a server that stops reading does not make the dealer buffer without bound
(libzmq's ZMQ_SNDHWM)."""

from __future__ import annotations

import socket
from collections import Counter
import time

import pytest

from fabric import protocol as P
from fabric import zmtp_client, zmtp_client_connection
from fabric.errors import LoomError
from fabric.reactor import Reactor
from fabric.zmtp_codec import GREETING, frame_header
from tests.unit.zmtp_support import DEADLINE_S, POLL_MS, MakeClient, RawServer


def _message(*frames: bytes) -> bytes:
    return b"".join(frame_header(len(f), more=i < len(frames) - 1) + f for i, f in enumerate(frames))


@pytest.mark.parametrize("contain", [False, True])
def test_a_reply_handler_that_raises_does_not_strand_the_replies_received_with_it(
        contain: bool, raw_server: RawServer, dealer_client: MakeClient) -> None:
    # a node's reactor (contain) or a client's
    client = dealer_client(raw_server.port, identity=None, contain_handler_errors=contain)
    got = client.got

    def on_message(frames: list[bytes]) -> None:
        got.append(frames)
        if frames[1] == b"boom":
            raise LoomError("a reply callback's operating error (offset_out_of_range...)")
    client.dealer.on_message = on_message
    raw_server.connect(client)
    raw_server.conn.sendall(_message(b"", b"boom") + _message(b"", b"next"))  # one write: one read
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 2:  # nothing more comes from the server
        assert time.monotonic() < deadline, f"the reply after the one that raised is stranded: {got}"
        try:
            client.reactor.run_once(POLL_MS)
        except LoomError:
            assert not contain
    assert got == [[b"", b"boom"], [b"", b"next"]]


@pytest.mark.parametrize("greet", [False, True])
def test_a_server_that_never_completes_the_handshake_is_dropped_and_connected_to_again(
        monkeypatch: pytest.MonkeyPatch, greet: bool, raw_server: RawServer, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(zmtp_client_connection, "HANDSHAKE_IVL_MS", 200)
    client = dealer_client(raw_server.port)
    assert client.dealer.send([b"", b"waits"])
    first = raw_server.accept(client)
    if greet:  # greeting but no READY
        first.sendall(GREETING)
    # the dealer gives up on that connection by itself and makes another one
    second = raw_server.accept(client)
    assert second is not first
    client.run_until(lambda: client.counters["disconnects"] >= 1)
    first.close()
    raw_server.connect(client)  # this one completes: the waiting message goes out on it
    raw_server.read_until(client, lambda got: b"waits" in got)


def test_the_handshake_timer_is_cancelled_once_the_handshake_completes(
        monkeypatch: pytest.MonkeyPatch, raw_server: RawServer, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(zmtp_client_connection, "HANDSHAKE_IVL_MS", 200)
    client = dealer_client(raw_server.port)
    raw_server.connect(client)
    assert client.reactor.timers_live == 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        client.reactor.run_once(POLL_MS)
    assert client.dealer.connected and client.counters["disconnects"] == 0


def test_a_server_that_stops_reading_makes_sends_refused_at_the_high_water_mark(
        monkeypatch: pytest.MonkeyPatch, raw_server: RawServer, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(P, "SNDHWM", 8)
    client = dealer_client(raw_server.port)
    big = b"x" * (1024 * 1024)  # the same object each time: the dealer keeps references, not copies
    raw_server.connect(client)
    raw_server.conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and reads no more
    accepted = 0
    for _ in range(2048):  # 2 GiB: far beyond the kernel's buffers
        if not client.dealer.send([b"", big]):
            break
        accepted += 1
        client.reactor.run_once(0)
    else:
        pytest.fail("a server that reads nothing: the dealer's output grew without bound")
    # the kernel's buffers plus at most SNDHWM messages waiting in the dealer
    assert client.dealer.output_messages == P.SNDHWM
    assert accepted < 200


def test_output_that_drains_is_counted_down_and_sends_are_accepted_again(
        monkeypatch: pytest.MonkeyPatch, raw_server: RawServer, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(P, "SNDHWM", 4)
    client = dealer_client(raw_server.port)
    big = b"y" * (1024 * 1024)
    raw_server.connect(client)
    for _ in range(2048):
        if not client.dealer.send([b"", big]):
            break
        client.reactor.run_once(0)
    else:
        pytest.fail("never refused")
    conn = raw_server.conn
    conn.setblocking(False)
    total = 0

    def read() -> None:
        nonlocal total
        try:
            while True:
                n = len(conn.recv(1 << 20))
                if not n:
                    return
                total += n
        except BlockingIOError:
            pass
    client.run_until(lambda: client.dealer.output_messages == 0, also=read)
    assert client.dealer.send([b"", b"again"])


def test_a_host_name_the_resolver_cannot_even_encode_is_retried_like_one_that_does_not_resolve() -> None:
    """libzmq resolves in its I/O thread and retries; here getaddrinfo raises UnicodeError (not
    OSError) for a label over 63 bytes: it must not escape the constructor or the reactor."""
    reactor = Reactor()
    counters: Counter[str] = Counter()
    dealer = zmtp_client.ZmtpDealer(reactor, "tcp://" + "a" * 64 + ".example:5555", lambda frames: None,
                                    counters=counters)
    assert dealer.send([b"", b"waits"])
    deadline = time.monotonic() + DEADLINE_S
    while reactor.timers_live and counters["resolve_failed"] < 2:
        assert time.monotonic() < deadline
        reactor.run_once(POLL_MS)
    assert not dealer.connected and counters["resolve_failed"] >= 2
    dealer.close()
    assert reactor._descriptors == {} and reactor.timers_live == 0


def test_a_slow_resolver_does_not_stall_the_reactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name is resolved off the reactor thread: a resolver that takes 1.5 s (a DNS
    server that does not answer) must not hold up the node's timers -- its heartbeats -- or
    its other sockets meanwhile; the dealer connects once the name resolves."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    asked: list[str] = []

    def slow_resolve(host: str, port_: int, *, passive: bool = False) -> tuple:
        asked.append(host)
        time.sleep(1.5)
        return socket.AF_INET, ("127.0.0.1", port_)
    monkeypatch.setattr(zmtp_client_connection, "resolve", slow_resolve)
    reactor = Reactor()
    ticks: list[float] = []
    ticker = reactor.call_every(10, lambda: ticks.append(time.monotonic()))
    dealer = zmtp_client.ZmtpDealer(reactor, f"tcp://slow.example:{port}", lambda frames: None)
    assert dealer.send([b"", b"waits"])
    deadline = time.monotonic() + DEADLINE_S
    accepted = None
    listener.setblocking(False)
    while accepted is None:
        assert time.monotonic() < deadline
        reactor.run_once(POLL_MS)
        try:
            accepted, _ = listener.accept()
        except BlockingIOError:
            pass
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert asked == ["slow.example"] and ticks[-1] - ticks[0] >= 1.4
    assert max(gaps) < 0.5, f"the reactor stalled {max(gaps):.2f} s while the name resolved"
    ticker.cancel()
    dealer.close()
    accepted.close()
    listener.close()
    assert reactor._descriptors == {} and reactor.timers_live == 0


def test_an_address_is_used_as_it_is_without_a_resolver_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes named by IP address (as ``make up`` names them) never wait for a thread."""
    import threading
    started = threading.active_count()
    reactor = Reactor()
    dealer = zmtp_client.ZmtpDealer(reactor, "tcp://127.0.0.1:9", lambda frames: None)
    dealer.send([b"", b"x"])
    reactor.run_once(POLL_MS)
    assert threading.active_count() == started
    dealer.close()


def test_a_dealers_receive_buffer_starts_small_and_grows_for_a_burst(raw_server: RawServer,
                                                                     dealer_client: MakeClient) -> None:
    """Each connection kept a RECEIVE_BYTES buffer from its start: a consumer service's hosted
    instances (five connections each, up to 256 instances) held 1.25 MB each of them, idle or
    not. It starts at RECEIVE_BYTES_FIRST (the test below measures it) and grows when a read
    fills it: a burst of small messages and frames just under DIRECT_BYTES_MIN still arrive
    whole, in order, and the buffer has grown to RECEIVE_BYTES."""
    client = dealer_client(raw_server.port, identity=None)
    raw_server.connect(client)
    small = [b"%06d" % i + b"s" * 994 for i in range(300)]
    large = [bytes([i]) * (zmtp_client.DIRECT_BYTES_MIN - 100) for i in range(3)]
    raw_server.conn.sendall(b"".join(_message(b"", m) for m in small + large))  # type: ignore[union-attr]
    client.run_until(lambda: len(client.got) == len(small) + len(large))
    assert client.got == [[b"", m] for m in small + large]
    assert len(client.dealer._buffer) == zmtp_client.RECEIVE_BYTES


def test_a_closed_dealer_that_is_still_referred_to_holds_no_receive_buffer() -> None:
    """A closed client that a reference cycle keeps (a consumer's reactor, its callbacks) until a
    full collection kept its RECEIVE_BYTES receive buffer meanwhile: a consumer service whose REST
    instances came and went grew by 1.25 MB per instance (five connections each)."""
    import tracemalloc
    reactor = Reactor()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dealers = [zmtp_client.ZmtpDealer(reactor, "tcp://127.0.0.1:9", lambda frames: None) for _ in range(8)]
        made = tracemalloc.get_traced_memory()[0] - before
        first = zmtp_client.RECEIVE_BYTES_FIRST
        assert 8 * first <= made < 8 * 2 * first, "a new dealer's receive buffer is not the small first one"
        for d in dealers:
            d.close()
        assert tracemalloc.get_traced_memory()[0] - before < 4 * first, "closed dealers kept their buffers"
    finally:
        tracemalloc.stop()
