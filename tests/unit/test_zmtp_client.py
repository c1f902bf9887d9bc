"""The DEALER end of ZMTP on a reactor-driven socket (fabric/zmtp_client.py), against a real
libzmq ROUTER and against hand-written servers on loopback: messages of every frame size
intact both ways with the identity the ROUTER sees, messages sent before the server is up wait
and go out in order (bounded), the dealer reconnects after the server restarts on its port,
a server that breaks the protocol or exceeds a limit is dropped and reconnected to, PING is
answered, and ``close`` releases everything."""

from __future__ import annotations

import struct

import pytest
import zmq

from fabric import protocol as P
from fabric import zmtp_client
from fabric.zmtp_codec import command, frame_header, metadata_property
from fabric.zmtp_client import connect_address, encode_message
from tests.harness import free_ports
from tests.unit.zmtp_support import POLL_MS, MakeClient, RawServer


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


def test_messages_of_every_frame_size_go_both_ways_intact_with_the_announced_identity(
        router, dealer_client: MakeClient) -> None:  # noqa: ANN001
    sock, port = router
    client = dealer_client(port)
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


def test_messages_sent_before_the_server_is_up_wait_and_go_out_in_order(dealer_client: MakeClient) -> None:
    port = free_ports(1)[0]
    client = dealer_client(port)
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


def test_at_the_high_water_mark_a_send_is_refused(monkeypatch: pytest.MonkeyPatch, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(P, "SNDHWM", 3)
    client = dealer_client(free_ports(1)[0])
    assert [client.dealer.send([b"", b"x"]) for _ in range(4)] == [True, True, True, False]
    client.dealer.close()
    assert not client.dealer.send([b"", b"x"])  # closed


def test_the_dealer_reconnects_after_the_server_restarts_on_its_port(router, dealer_client: MakeClient) -> None:  # noqa: ANN001
    sock, port = router
    client = dealer_client(port)
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


def test_the_dealer_announces_its_type_and_identity(raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port, identity=b"me")
    hello = raw_server.handshake(client)
    assert hello[:1] == b"\xff" and hello[10] == 3
    assert metadata_property(b"Socket-Type", b"DEALER") in hello and metadata_property(b"Identity", b"me") in hello


def test_a_frame_over_the_limit_drops_the_connection_and_the_dealer_connects_again(
        monkeypatch: pytest.MonkeyPatch, raw_server: RawServer, dealer_client: MakeClient) -> None:
    monkeypatch.setattr(P, "REQUEST_BYTES_MAX", 1000)
    client = dealer_client(raw_server.port)
    raw_server.connect(client)
    raw_server.conn.sendall(frame_header(1001, more=False) + b"x" * 1001)
    client.run_until(lambda: client.counters["protocol_violations"] == 1)
    assert not client.dealer.connected and client.got == []
    raw_server.conn.close()
    raw_server.connect(client)  # it connects again by itself


@pytest.mark.parametrize("ready", [command(b"\x05READY" + metadata_property(b"Socket-Type", b"PUB")),
                                   command(b"\x05NOPE")])
def test_a_server_that_is_not_a_router_is_dropped(ready: bytes, raw_server: RawServer,
                                                  dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port)
    raw_server.handshake(client, ready=ready)
    client.run_until(lambda: client.counters["protocol_violations"] == 1)
    assert not client.dealer.connected


def test_a_ping_is_answered_with_its_context(raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port)
    raw_server.connect(client)
    raw_server.conn.sendall(command(b"\x04PING" + struct.pack(">H", 0) + b"ctx"))
    pong = command(b"\x04PONG" + b"ctx")
    raw_server.read_until(client, lambda got: pong in got)


def test_close_releases_the_descriptor_and_the_reconnect_timer(dealer_client: MakeClient) -> None:
    client = dealer_client(free_ports(1)[0])
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
    assert b"".join(pieces) == (frame_header(0, more=True) + frame_header(4, more=True) + b"head"
                               + frame_header(len(big), more=True) + big + frame_header(4, more=False) + b"tail")
    assert sizes == [len(p) for p in pieces]
    with pytest.raises(TypeError):
        encode_message([b"", object()])


def test_a_large_frame_is_read_into_its_own_buffer_intact_however_the_stream_is_cut(
        raw_server: RawServer, dealer_client: MakeClient) -> None:
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
    stream = b"".join(frame_header(len(f), more=j < len(m) - 1) + f for m in sent for j, f in enumerate(m))
    client = dealer_client(raw_server.port)
    raw_server.connect(client)
    conn = raw_server.conn
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
