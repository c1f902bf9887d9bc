"""The SUB end of ZMTP on reactor-driven sockets (fabric/zmtp_sub.py), against real libzmq PUB
sockets and a hand-written publisher on loopback: only subscribed prefixes arrive, from every
connected publisher, and each message whole; subscriptions made before the handshake, after it,
and again after the publisher restarts on its port all take effect; an unsubscribed prefix stops
arriving, and one the publisher sends anyway is dropped here; a disconnected publisher is not
heard; a peer that is not a PUB is dropped; at most ``messages_per_pass`` messages are handed
on per pass and the rest follow on later passes, in order and without reading ahead."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from fabric.reactor import Reactor
from fabric.zmtp_codec import GREETING, command, frame_header, metadata_property
from fabric.zmtp_sub import ZmtpSubscriber
from tests.harness import free_ports
from tests.unit.zmtp_support import DEADLINE_S, POLL_MS, ReactorLoop


def _pub() -> tuple[zmq.Socket, int]:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    return sock, sock.bind_to_random_port("tcp://127.0.0.1")


class _Sub(ReactorLoop):
    def __init__(self, **kw) -> None:  # noqa: ANN003
        self.reactor = Reactor()
        self.got: list[list[bytes]] = []
        self.sub = ZmtpSubscriber(self.reactor, self.got.append, **kw)


@pytest.fixture
def pub():  # noqa: ANN201
    sock, port = _pub()
    yield sock, port
    sock.close()


def test_only_subscribed_prefixes_arrive_whole(pub) -> None:  # noqa: ANN001
    sock, port = pub
    s = _Sub()
    s.sub.subscribe(b"r/a/1|")  # before the connection: sent at the handshake
    s.sub.connect(f"tcp://127.0.0.1:{port}")
    big = bytes(range(256)) * 4096  # 1 MiB: read straight into its own buffer
    s.run_until(lambda: any(m[0] == b"r/a/1|" for m in s.got),
                publish=lambda: [sock.send_multipart(m) for m in ([b"r/a/10|", b"no"], [b"r/a/1|", b"hdr", big])])
    assert all(m == [b"r/a/1|", b"hdr", big] for m in s.got)
    s.sub.close()


def test_a_subscription_after_the_handshake_takes_effect_and_an_unsubscription_ends_one(pub) -> None:  # noqa: ANN001
    sock, port = pub
    s = _Sub()
    s.sub.subscribe(b"x|")
    s.sub.connect(f"tcp://127.0.0.1:{port}")
    s.run_until(lambda: s.got, publish=lambda: sock.send_multipart([b"x|", b"1"]))
    s.sub.subscribe(b"y|")  # on the live connection
    s.run_until(lambda: [b"y|", b"2"] in s.got, publish=lambda: sock.send_multipart([b"y|", b"2"]))
    s.sub.unsubscribe(b"x|")
    s.run_for(0.2)  # the unsubscription reaches the publisher
    s.got.clear()
    s.run_until(lambda: len(s.got) >= 20, publish=lambda: [sock.send_multipart(m) for m in ([b"x|", b"3"], [b"y|", b"4"])])
    assert all(m == [b"y|", b"4"] for m in s.got)
    s.sub.close()


def test_subscriptions_are_made_again_when_the_publisher_restarts_on_its_port() -> None:
    sock, port = _pub()
    s = _Sub(reconnect_ivl_max_ms=200)
    s.sub.subscribe(b"t|")
    s.sub.connect(f"tcp://127.0.0.1:{port}")
    s.run_until(lambda: s.got, publish=lambda: sock.send_multipart([b"t|", b"before"]))
    sock.close()
    s.run_until(lambda: s.sub.counters["disconnects"] >= 1)
    again = zmq.Context.instance().socket(zmq.PUB)
    again.setsockopt(zmq.LINGER, 0)
    again.bind(f"tcp://127.0.0.1:{port}")
    try:
        s.run_until(lambda: [b"t|", b"after"] in s.got, publish=lambda: again.send_multipart([b"t|", b"after"]))
    finally:
        again.close()
        s.sub.close()


def test_messages_from_every_connected_publisher_and_none_after_a_disconnect() -> None:
    (a, pa), (b, pb) = _pub(), _pub()
    s = _Sub()
    s.sub.subscribe(b"")
    for port in (pa, pb):
        s.sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.run_until(lambda: [b"a"] in s.got and [b"b"] in s.got,
                    publish=lambda: (a.send_multipart([b"a"]), b.send_multipart([b"b"])))
        s.sub.disconnect(f"tcp://127.0.0.1:{pa}")
        assert s.sub.endpoints == [f"tcp://127.0.0.1:{pb}"]
        s.run_for(0.05)
        s.got.clear()
        s.run_until(lambda: len(s.got) >= 10, publish=lambda: (a.send_multipart([b"a"]), b.send_multipart([b"b"])))
        assert [b"a"] not in s.got
    finally:
        s.sub.close()
        a.close()
        b.close()


class _RawPublisher:
    """A hand-written ZMTP peer on a listening socket: greets as ``socket_type`` and sends
    whatever it is told, subscribed or not."""

    def __init__(self, socket_type: bytes = b"PUB") -> None:
        self.port = free_ports(1)[0]
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.socket_type = socket_type
        self.conn: socket.socket | None = None
        self.received = b""

    def accept(self) -> None:
        self.listener.settimeout(DEADLINE_S)
        self.conn, _ = self.listener.accept()
        self.conn.sendall(GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", self.socket_type)))

    def send(self, *frames: bytes) -> None:
        assert self.conn is not None
        out = b""
        for i, f in enumerate(frames):
            out += frame_header(len(f), more=i < len(frames) - 1) + f
        self.conn.sendall(out)

    def read_available(self) -> bytes:
        assert self.conn is not None
        self.conn.setblocking(False)
        try:
            while True:
                chunk = self.conn.recv(65536)
                if not chunk:
                    break
                self.received += chunk
        except BlockingIOError:
            pass
        return self.received

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()


@pytest.fixture
def raw_peer():  # noqa: ANN201
    """``make(prefix, socket_type=b"PUB", **subscriber_options)``: a hand-written peer and a
    subscriber to ``prefix`` connected to it (accepted, greeted); both closed at the end."""
    made: list[tuple[_RawPublisher, _Sub]] = []

    def make(prefix: bytes, socket_type: bytes = b"PUB", **kw) -> tuple[_RawPublisher, _Sub]:  # noqa: ANN003
        peer, s = _RawPublisher(socket_type), _Sub(**kw)
        made.append((peer, s))
        s.sub.subscribe(prefix)
        s.sub.connect(f"tcp://127.0.0.1:{peer.port}")
        peer.accept()
        return peer, s
    yield make
    for peer, s in made:
        s.sub.close()
        peer.close()


def test_a_message_the_publisher_sends_for_no_subscription_is_dropped_and_counted(raw_peer) -> None:  # noqa: ANN001
    peer, s = raw_peer(b"keep|")
    # the subscription arrives as ZMTP 3.0's message form: \x01 and the prefix
    s.run_until(lambda: frame_header(6, more=False) + b"\x01keep|" in peer.read_available())
    peer.send(b"other|", b"x")
    peer.send(b"keep|", b"y")
    s.run_until(lambda: s.got)
    assert s.got == [[b"keep|", b"y"]]
    assert s.sub.counters["sub_unsubscribed_dropped"] == 1


def test_a_peer_that_is_not_a_publisher_is_dropped(raw_peer) -> None:  # noqa: ANN001
    peer, s = raw_peer(b"", socket_type=b"ROUTER")
    s.run_until(lambda: s.sub.counters["protocol_violations"] == 1)
    peer.send(b"never")
    s.run_for(0.05)
    assert s.got == []


def test_at_most_messages_per_pass_are_handed_on_per_pass_and_the_rest_follow_in_order(raw_peer) -> None:  # noqa: ANN001
    peer, s = raw_peer(b"", messages_per_pass=3)
    s.run_until(lambda: peer.read_available())  # subscribed: the handshake is complete
    for i in range(10):
        peer.send(b"m", str(i).encode())
    per_pass: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(s.got) < 10:
        assert time.monotonic() < deadline
        before = len(s.got)
        s.reactor.run_once(POLL_MS)
        per_pass.append(len(s.got) - before)
    assert max(per_pass) <= 2 * 3  # a pass may run the resumed parse and then the read
    assert [m[1] for m in s.got] == [str(i).encode() for i in range(10)]


def test_a_malformed_endpoint_is_refused_as_libzmq_refuses_it() -> None:
    s = _Sub()
    with pytest.raises(zmq.ZMQError):
        s.sub.connect("ipc://nope")
    assert s.sub.endpoints == []


def test_many_prefixes_subscribed_at_once_reach_a_connected_publisher_in_one_write(raw_peer) -> None:  # noqa: ANN001
    peer, s = raw_peer(b"first|")
    s.run_until(lambda: b"\x01first|" in peer.read_available())
    writes: list[int] = []
    conn = next(iter(s.sub._connections.values()))
    real_write = conn._write
    conn._write = lambda pieces, sizes: (writes.append(len(pieces)), real_write(pieces, sizes))  # type: ignore[method-assign]
    prefixes = [f"r/t/{i}|".encode() for i in range(1000)]
    s.sub.subscribe_many(prefixes + [b"first|"])  # one already subscribed: not sent again
    assert writes == [1]
    expected = b"".join(frame_header(len(p) + 1, more=False) + b"\x01" + p for p in prefixes)
    s.run_until(lambda: expected in peer.read_available())
    assert peer.received.count(b"\x01first|") == 1
    s.sub.unsubscribe_many(prefixes[:10])
    s.run_until(lambda: b"".join(frame_header(len(p) + 1, more=False) + b"\x00" + p for p in prefixes[:10])
                in peer.read_available())
    assert s.sub.prefixes == {b"first|", *prefixes[10:]}
