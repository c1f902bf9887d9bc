"""The DEALER end of ZMTP on a reactor-driven socket (fabric/zmtp_client.py), against a real
libzmq ROUTER and against hand-written servers on loopback: messages of every frame size
intact both ways with the identity the ROUTER sees, messages sent before the server is up wait
and go out in order (bounded), the dealer reconnects after the server restarts on its port,
a server that breaks the protocol or exceeds a limit is dropped and reconnected to, PING is
answered, and ``close`` releases everything."""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter

import pytest
import zmq

from fabric import protocol as P
from fabric import zmtp_client
from fabric.reactor import Reactor
from fabric.zmtp import GREETING, READY, _command, _frame_header, _property
from fabric.zmtp_client import ZmtpDealer, connect_address, encode_message
from tests.harness import free_ports

DEADLINE_S = 10.0
POLL_MS = 5


class _Client:
    def __init__(self, port: int, identity: bytes | None = b"dealer-1") -> None:
        self.reactor = Reactor()
        self.got: list[list[bytes]] = []
        self.counters: Counter[str] = Counter()
        self.dealer = ZmtpDealer(self.reactor, f"tcp://127.0.0.1:{port}", self.got.append, identity=identity,
                                 counters=self.counters)

    def run_until(self, condition, also=None) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            self.reactor.run_once(POLL_MS)
            if also is not None:
                also()


@pytest.fixture
def router():  # noqa: ANN201
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, port
    sock.close()


def _echo(sock: zmq.Socket) -> None:
    while sock.poll(0):
        sock.send_multipart(sock.recv_multipart())


def test_messages_of_every_frame_size_go_both_ways_intact_with_the_announced_identity(router) -> None:  # noqa: ANN001
    sock, port = router
    client = _Client(port)
    sizes = [0, 1, 255, 256, zmtp_client.JOIN_BYTES_MAX, zmtp_client.JOIN_BYTES_MAX + 1, 3 * 1024 * 1024 + 7]
    sent = [[b"", bytes([i % 251]) * n, b"tail"] for i, n in enumerate(sizes)]
    for frames in sent:
        assert client.dealer.send(frames)
    seen: list[list[bytes]] = []

    def serve() -> None:
        while sock.poll(0):
            msg = sock.recv_multipart()
            seen.append(msg)
            sock.send_multipart(msg)
    client.run_until(lambda: len(client.got) == len(sent), also=serve)
    assert [m[0] for m in seen] == [b"dealer-1"] * len(sent)  # the ROUTER's routing id
    assert [m[1:] for m in seen] == sent
    assert client.got == sent
    client.dealer.close()


def test_messages_sent_before_the_server_is_up_wait_and_go_out_in_order() -> None:
    port = free_ports(1)[0]
    client = _Client(port)
    for i in range(50):
        assert client.dealer.send([b"", b"%d" % i])
    for _ in range(30):  # connects are refused meanwhile and retried
        client.reactor.run_once(POLL_MS)
    assert not client.dealer.connected
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    try:
        client.run_until(lambda: len(client.got) == 50, also=lambda: _echo(sock))
        assert client.got == [[b"", b"%d" % i] for i in range(50)]
    finally:
        sock.close()
        client.dealer.close()


def test_at_the_high_water_mark_a_send_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "SNDHWM", 3)
    client = _Client(free_ports(1)[0])
    assert [client.dealer.send([b"", b"x"]) for _ in range(4)] == [True, True, True, False]
    client.dealer.close()
    assert not client.dealer.send([b"", b"x"])  # closed


def test_the_dealer_reconnects_after_the_server_restarts_on_its_port(router) -> None:  # noqa: ANN001
    sock, port = router
    client = _Client(port)
    client.dealer.send([b"", b"before"])
    client.run_until(lambda: client.got, also=lambda: _echo(sock))
    sock.close()
    client.run_until(lambda: not client.dealer.connected)
    again = zmq.Context.instance().socket(zmq.ROUTER)
    again.setsockopt(zmq.LINGER, 0)
    again.bind(f"tcp://127.0.0.1:{port}")
    try:
        client.run_until(lambda: client.dealer.connected)
        client.dealer.send([b"", b"after"])
        client.run_until(lambda: len(client.got) == 2, also=lambda: _echo(again))
        assert client.got[1] == [b"", b"after"]
    finally:
        again.close()
        client.dealer.close()


class _RawServer:
    """A listening socket that accepts one dealer and lets a test write whatever it wants."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(DEADLINE_S)
        self.conn: socket.socket | None = None

    def accept(self, client: _Client) -> socket.socket:
        self.listener.setblocking(False)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                self.conn, _ = self.listener.accept()
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                client.reactor.run_once(POLL_MS)
        self.conn.settimeout(DEADLINE_S)
        return self.conn

    def handshake(self, client: _Client, ready: bytes = READY) -> bytes:
        """Greeting and READY both ways; returns what the dealer sent."""
        conn = self.accept(client)
        conn.sendall(GREETING + ready)
        got = b""
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < 66 or len(got) < 66 + got[65]:
            assert time.monotonic() < deadline
            client.reactor.run_once(POLL_MS)
            try:
                conn.setblocking(False)
                got += conn.recv(4096)
            except BlockingIOError:
                pass
        return got

    def read_until(self, client: _Client, condition) -> bytes:  # noqa: ANN001
        """Run the dealer's reactor and read what it sends until ``condition(bytes so far)``."""
        conn = self.conn
        conn.setblocking(False)
        got = bytearray()

        def read() -> None:
            try:
                got.extend(conn.recv(4096))
            except BlockingIOError:
                pass
        client.run_until(lambda: condition(bytes(got)), also=read)
        return bytes(got)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def test_the_dealer_announces_its_type_and_identity(router) -> None:  # noqa: ANN001
    server = _RawServer()
    client = _Client(server.port, identity=b"me")
    try:
        hello = server.handshake(client)
        assert hello[:1] == b"\xff" and hello[10] == 3
        assert _property(b"Socket-Type", b"DEALER") in hello and _property(b"Identity", b"me") in hello
    finally:
        client.dealer.close()
        server.close()


def test_a_frame_over_the_limit_drops_the_connection_and_the_dealer_connects_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "REQUEST_BYTES_MAX", 1000)
    server = _RawServer()
    client = _Client(server.port)
    try:
        server.handshake(client)
        client.run_until(lambda: client.dealer.connected)
        server.conn.sendall(_frame_header(1001, more=False) + b"x" * 1001)
        client.run_until(lambda: client.counters["protocol_violations"] == 1)
        assert not client.dealer.connected and client.got == []
        server.conn.close()
        server.handshake(client)  # it connects again by itself
        client.run_until(lambda: client.dealer.connected)
    finally:
        client.dealer.close()
        server.close()


@pytest.mark.parametrize("ready", [_command(b"\x05READY" + _property(b"Socket-Type", b"PUB")),
                                   _command(b"\x05NOPE")])
def test_a_server_that_is_not_a_router_is_dropped(ready: bytes) -> None:
    server = _RawServer()
    client = _Client(server.port)
    try:
        server.handshake(client, ready=ready)
        client.run_until(lambda: client.counters["protocol_violations"] == 1)
        assert not client.dealer.connected
    finally:
        client.dealer.close()
        server.close()


def test_a_ping_is_answered_with_its_context() -> None:
    server = _RawServer()
    client = _Client(server.port)
    try:
        server.handshake(client)
        client.run_until(lambda: client.dealer.connected)
        server.conn.sendall(_command(b"\x04PING" + struct.pack(">H", 0) + b"ctx"))
        pong = _command(b"\x04PONG" + b"ctx")
        server.read_until(client, lambda got: pong in got)
    finally:
        client.dealer.close()
        server.close()


def test_close_releases_the_descriptor_and_the_reconnect_timer() -> None:
    client = _Client(free_ports(1)[0])
    for _ in range(5):  # a refused connect arms the reconnect timer
        client.reactor.run_once(POLL_MS)
    client.dealer.close()
    assert client.reactor._descriptors == {} and client.reactor.timers_live == 0


def test_a_malformed_endpoint_is_einval() -> None:
    for endpoint in ("tcp://127.0.0.1", "tcp://*:5", "tcp://h:0", "ipc://x:1"):
        with pytest.raises(zmq.ZMQError):
            connect_address(endpoint)


def test_small_frames_are_joined_with_their_headers_and_a_large_one_goes_as_it_is() -> None:
    big = b"b" * (zmtp_client.JOIN_BYTES_MAX + 1)
    pieces, sizes = encode_message([b"", b"head", big, b"tail"])
    assert len(pieces) == 3 and pieces[1] is big
    assert b"".join(pieces) == (_frame_header(0, more=True) + _frame_header(4, more=True) + b"head"
                               + _frame_header(len(big), more=True) + big + _frame_header(4, more=False) + b"tail")
    assert sizes == [len(p) for p in pieces]
    with pytest.raises(TypeError):
        encode_message([b"", object()])


def test_a_large_frame_is_read_into_its_own_buffer_intact_however_the_stream_is_cut() -> None:
    """Frames of at least DIRECT_BYTES_MIN whose body has not all arrived go straight into a
    buffer of their own (an OwnedFrame, no copy after); whatever follows them in a read -- the
    next frames, the next messages -- is parsed as before."""
    import random

    from fabric.buffers import OwnedFrame
    rng = random.Random(7)
    big = zmtp_client.DIRECT_BYTES_MIN
    sent = []
    for i in range(12):
        sizes = [0, rng.choice([5, 300, big - 1, big, big + 1, 3 * big + 11]), rng.choice([0, 9, big + 5])]
        sent.append([bytes([(i + k) % 251]) * n for k, n in enumerate(sizes)])
    stream = b"".join(_frame_header(len(f), more=j < len(m) - 1) + f for m in sent for j, f in enumerate(m))
    server = _RawServer()
    client = _Client(server.port)
    try:
        server.handshake(client)
        client.run_until(lambda: client.dealer.connected)
        conn = server.conn
        conn.setblocking(True)
        pos = 0
        while pos < len(stream):  # cut at random places, the dealer reading between the pieces
            n = rng.choice([1, 7, 1000, 65_536, big, 2 * big])
            conn.sendall(stream[pos:pos + n])
            pos += n
            client.reactor.run_once(0)
        client.run_until(lambda: len(client.got) == len(sent))
        assert client.got == sent
        kinds = [type(f) for message in client.got for f in message]
        assert set(kinds) <= {bytes, OwnedFrame} and OwnedFrame in kinds  # the direct path was taken
        assert all(type(f) is bytes for message in client.got for f in message if len(f) < big)
    finally:
        client.dealer.close()
        server.close()
