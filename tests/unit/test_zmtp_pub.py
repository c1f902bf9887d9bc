"""The PUB end of ZMTP on a reactor-written TCP port (fabric/zmtp_pub.py), against real libzmq
SUB and XSUB sockets, the reactor's own ZmtpSubscriber and hand-written peers on loopback: each
subscriber gets whole the messages whose first frame starts with one of its prefixes and nothing
else; a prefix subscribed twice needs two unsubscriptions; ZMTP 3.1's SUBSCRIBE and CANCEL
commands count as the 3.0 messages do; a subscriber that does not read loses messages at its
bound (reported to the caller) while the others get every one; a peer that breaks the protocol
is disconnected and the rest are served, and so is one that does not complete its handshake in
time (libzmq's ZMQ_HANDSHAKE_IVL); an XSUB's own messages are not subscriptions."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import zmq

from fabric import zmtp_pub
from fabric.reactor import Reactor
from fabric.zmtp_codec import GREETING, command, frame_header, metadata_property
from fabric.zmtp_pub import OUTPUT_BYTES_MAX, ZmtpPublisher
from fabric.zmtp_sub import ZmtpSubscriber
from tests.harness import free_ports
from tests.unit.zmtp_support import DEADLINE_S, ReactorLoop


class _World(ReactorLoop):
    def __init__(self) -> None:
        self.reactor = Reactor()
        (port,) = free_ports(1)
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.pub = ZmtpPublisher(self.reactor, self.endpoint)
        self.ctx = zmq.Context.instance()
        self.socks: list[zmq.Socket] = []

    def libzmq(self, kind: int = zmq.SUB, *prefixes: bytes) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 0)
        for p in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, p)
        sock.connect(self.endpoint)
        self.socks.append(sock)
        return sock


    def close(self) -> None:
        for s in self.socks:
            s.close(0)
        self.pub.close()


@pytest.fixture
def world():  # noqa: ANN201
    w = _World()
    yield w
    w.close()


def _drain(sock: zmq.Socket, into: list) -> list:
    while True:
        try:
            into.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return into


def test_a_libzmq_sub_gets_whole_only_the_messages_of_its_prefixes(world) -> None:  # noqa: ANN001
    sub = world.libzmq(zmq.SUB, b"r/a/1|")
    got: list = []
    # the subscription in place first, with a small message sent each pass: the 1 MiB one sent
    # each pass instead piled up past the subscriber's output bound on a loaded machine, and the
    # last message was dropped at the bound (as it should be)
    world.run_until(lambda: _drain(sub, got), publish=lambda: world.pub.send([b"r/a/1|", b"ready"]))
    big = bytes(range(256)) * 4096  # 1 MiB: handed to the kernel as it is
    for m in ([b"r/a/2|", b"no"], [b"r/a/1|", b"hdr", big], [b"other", b"no"],
              [b"r/a/1|x", b"yes"]):  # the last: a longer topic with the prefix
        world.pub.send(m)
    world.run_until(lambda: _drain(sub, got)[-1] == [b"r/a/1|x", b"yes"])
    assert all(m[0].startswith(b"r/a/1|") for m in got)
    assert [m for m in got if m[1:2] != [b"ready"]] == [[b"r/a/1|", b"hdr", big], [b"r/a/1|x", b"yes"]]


def test_the_reactors_own_subscriber_reads_it_and_an_empty_prefix_takes_everything(world) -> None:  # noqa: ANN001
    got: list = []
    sub = ZmtpSubscriber(world.reactor, got.append)
    sub.subscribe(b"")
    sub.connect(world.endpoint)
    world.run_until(lambda: got, publish=lambda: world.pub.send([b"any", b"1"]))
    world.pub.send([b"thing", b"2", b"3"])
    world.run_until(lambda: got[-1] == [b"thing", b"2", b"3"])
    sub.close()


def test_a_prefix_subscribed_twice_needs_two_unsubscriptions(world) -> None:  # noqa: ANN001
    a = world.libzmq(zmq.SUB, b"t|", b"t|")
    other = world.libzmq(zmq.SUB, b"marker")  # tells when a round of messages has gone out
    got: list = []
    marks: list = []
    world.run_until(lambda: _drain(a, got) and _drain(other, marks),
                    publish=lambda: [world.pub.send([b"t|", b"1"]), world.pub.send([b"marker"])])
    a.setsockopt(zmq.UNSUBSCRIBE, b"t|")  # one of two: still subscribed
    a.setsockopt(zmq.SUBSCRIBE, b"zz")    # once this is in, the unsubscription before it is too
    world.run_until(lambda: _drain(a, got)[-1:] == [[b"zz"]], publish=lambda: world.pub.send([b"zz"]))
    got.clear()
    world.pub.send([b"t|", b"still"])
    world.run_until(lambda: [b"t|", b"still"] in _drain(a, got))  # after leftover "zz"s, if any
    a.setsockopt(zmq.UNSUBSCRIBE, b"t|")
    a.setsockopt(zmq.SUBSCRIBE, b"yy")
    world.run_until(lambda: _drain(a, got)[-1:] == [[b"yy"]], publish=lambda: world.pub.send([b"yy"]))
    got.clear()
    marks.clear()
    world.pub.send([b"t|", b"gone"])
    world.pub.send([b"marker"])
    world.run_until(lambda: _drain(other, marks))
    world.run_for(0.2)
    assert [m for m in _drain(a, got) if m[0] == b"t|"] == []  # leftover "yy"s, if any, but not that


def _handshake(sock: socket.socket, socket_type: bytes) -> None:
    sock.sendall(GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", socket_type)))


def _closed(sock: socket.socket) -> bool:
    """Whether the publisher closed ``sock`` (what it sent before is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    sock.settimeout(DEADLINE_S)
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "closed"
        out += chunk
    return out


def test_zmtp_31_subscribe_and_cancel_commands_count_as_subscriptions(world) -> None:  # noqa: ANN001
    raw = socket.create_connection(world.pub.address[:2])
    try:
        _handshake(raw, b"SUB")
        raw.sendall(command(b"\x09SUBSCRIBE" + b"c|"))
        world.run_until(lambda: world.pub.subscribers == 1 and world.pub._ready[0].prefixes)
        world.pub.send([b"c|", b"1"])
        world.pub.send([b"d|", b"no"])
        raw.sendall(command(b"\x06CANCEL" + b"c|"))
        world.run_until(lambda: not world.pub._ready[0].prefixes)
        world.pub.send([b"c|", b"2"])  # after the cancel: not sent
        world.run_for(0.1)
        ready = command(b"\x05READY" + metadata_property(b"Socket-Type", b"PUB"))
        expected = GREETING + ready + frame_header(2, more=True) + b"c|" + frame_header(1, more=False) + b"1"
        assert _read_exactly(raw, len(expected)) == expected
        raw.settimeout(0.2)
        with pytest.raises(socket.timeout):
            raw.recv(1)
    finally:
        raw.close()


def test_a_subscriber_that_does_not_read_loses_messages_and_the_others_get_every_one(world) -> None:  # noqa: ANN001
    stuck = socket.create_connection(world.pub.address[:2])
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        _handshake(stuck, b"SUB")
        stuck.sendall(frame_header(3, more=False) + b"\x01p|")
        good = world.libzmq(zmq.SUB, b"p|")
        got: list = []
        world.run_until(lambda: world.pub.subscribers == 2 and all(s.prefixes for s in world.pub._ready)
                        and _drain(good, got), publish=lambda: world.pub.send([b"p|", b"hello"]))
        payload = bytes(1024 * 1024)
        sent = 0
        deadline = time.monotonic() + DEADLINE_S
        while not world.pub.counters["dropped"]:  # past the stuck one's bound: the kernel's buffers and OUTPUT_BYTES_MAX
            assert time.monotonic() < deadline and sent < 4 * OUTPUT_BYTES_MAX // len(payload)
            world.pub.send([b"p|", sent.to_bytes(4, "big"), payload])
            sent += 1
            world.reactor.run_once(0)  # written at the end of the pass
            # the reading one keeps up (else it too loses a message at its bound, as it may when
            # the publishing loop outruns libzmq's I/O thread)
            world.run_until(lambda: sum(len(m) == 3 for m in _drain(good, got)) == sent)
        assert world.pub.counters["dropped"] == 1
        world.run_until(lambda: len(_drain(good, got)) >= sent + 1)
        numbers = [int.from_bytes(m[1], "big") for m in got if len(m) == 3]
        assert numbers == list(range(sent))  # the reading subscriber lost none, in order
        assert world.pub.tcp.output_bytes <= OUTPUT_BYTES_MAX + 2 * len(payload)
    finally:
        stuck.close()


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n\r\n",                                             # not ZMTP
    GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", b"DEALER")),  # not a subscriber
    GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", b"SUB")) + b"\x02" + (1 << 20).to_bytes(8, "big"),
])
def test_a_peer_that_breaks_the_protocol_is_dropped_and_the_others_served(world, bad: bytes) -> None:  # noqa: ANN001
    good = world.libzmq(zmq.SUB, b"k|")
    raw = socket.create_connection(world.pub.address[:2])
    try:
        raw.sendall(bad)
        raw.settimeout(DEADLINE_S)

        world.run_until(lambda: _closed(raw))
        got: list = []
        world.run_until(lambda: _drain(good, got), publish=lambda: world.pub.send([b"k|", b"ok"]))
        assert world.pub.counters["protocol_violations"] == 1
    finally:
        raw.close()


def test_an_xsubs_own_messages_are_not_subscriptions(world) -> None:  # noqa: ANN001
    xsub = world.libzmq(zmq.XSUB)
    xsub.send(b"\x01x|")                     # a subscription
    xsub.send_multipart([b"\x01y|", b"data"])  # a message of two frames: not one
    xsub.send(b"\x02z|")                     # neither subscribe nor unsubscribe
    got: list = []
    world.run_until(lambda: _drain(xsub, got), publish=lambda: world.pub.send([b"x|", b"1"]))
    assert [sorted(s.prefixes) for s in world.pub._ready] == [[b"x|"]]


def test_the_messages_of_one_pass_go_out_together_whole_and_in_order(world) -> None:  # noqa: ANN001
    sub = world.libzmq(zmq.SUB, b"m|")
    got: list = []
    world.run_until(lambda: _drain(sub, got), publish=lambda: world.pub.send([b"m|", b"hello"]))
    world.run_for(0.05)
    _drain(sub, got)
    got.clear()
    for n in range(100):  # one pass's messages, a large one among them
        world.pub.send([b"m|", n.to_bytes(4, "big"), bytes(300_000) if n == 50 else b"x"])
    world.pub.send([b"other|", b"not for it"])
    assert _drain(sub, got) == []  # nothing written before the pass ends
    world.run_until(lambda: len(_drain(sub, got)) >= 100)
    assert [int.from_bytes(m[1], "big") for m in got] == list(range(100))
    assert len(got[50][2]) == 300_000 and world.pub.counters["dropped"] == 0


def test_a_peer_that_never_completes_the_handshake_is_dropped(monkeypatch: pytest.MonkeyPatch, world) -> None:  # noqa: ANN001
    monkeypatch.setattr(zmtp_pub, "HANDSHAKE_IVL_MS", 300)
    good = world.libzmq(zmq.SUB, b"g|")
    stalled = [socket.create_connection(world.pub.address[:2]) for _ in range(4)]
    silent, half, loris, no_ready = stalled
    try:
        half.sendall(GREETING[:20])
        no_ready.sendall(GREETING)
        sent = 0
        deadline = time.monotonic() + DEADLINE_S
        while not all(_closed(s) for s in stalled):
            assert time.monotonic() < deadline, "a peer that never completed its handshake is still connected"
            if sent < len(GREETING) - 1:  # a byte of the greeting every pass: never done in time
                try:
                    loris.send(GREETING[sent:sent + 1])
                    sent += 1
                except OSError:  # closed by the publisher
                    sent = len(GREETING)
            world.reactor.run_once(20)
        assert world.pub.counters["handshake_timeouts"] == 4
        got: list = []
        world.run_until(lambda: _drain(good, got), publish=lambda: world.pub.send([b"g|", b"still served"]))
        world.run_for(0.5)  # past another handshake interval: a subscriber is not dropped
        assert world.pub.subscribers == 1 and world.pub.tcp.connections == 1
    finally:
        for s in stalled:
            s.close()


def _subscribe_raw(world: _World, prefixes: list[bytes]) -> socket.socket:
    """A hand-written subscriber that sends these subscriptions (as much as the publisher reads
    while its reactor runs) and waits for nothing."""
    raw = socket.create_connection(world.pub.address[:2])
    _handshake(raw, b"SUB")
    data = memoryview(b"".join(frame_header(len(p) + 1, more=False) + b"\x01" + p for p in prefixes))
    raw.setblocking(False)
    sent = 0
    deadline = time.monotonic() + DEADLINE_S
    while sent < len(data):
        assert time.monotonic() < deadline
        try:
            sent += raw.send(data[sent:])
        except BlockingIOError:
            pass
        except OSError:  # closed by the publisher
            break
        world.reactor.run_once(1)
    return raw


def test_a_subscriber_cannot_make_the_publisher_hold_prefixes_without_bound(
        monkeypatch: pytest.MonkeyPatch, world) -> None:  # noqa: ANN001
    monkeypatch.setattr(zmtp_pub, "PREFIX_BYTES_MAX", 64 * 1024)
    good = world.libzmq(zmq.SUB, b"g|")
    raw = _subscribe_raw(world, [n.to_bytes(4, "big") * 250 for n in range(100)])  # 100 KB of distinct prefixes
    try:
        world.run_until(lambda: _closed(raw))
        assert world.pub.counters["protocol_violations"] == 1
        got: list = []
        world.run_until(lambda: _drain(good, got), publish=lambda: world.pub.send([b"g|", b"served"]))
        assert world.pub.subscribers == 1
    finally:
        raw.close()


def _seconds_per_send(world: _World, topic: bytes) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            world.pub.send([topic, b"x"])
        best = min(best, (time.perf_counter() - start) / 200)
    return best


def test_prefixes_of_many_lengths_do_not_make_each_message_dearer(world) -> None:  # noqa: ANN001
    plain = _subscribe_raw(world, [b"q|"])
    try:
        world.run_until(lambda: world.pub.subscribers == 1 and world.pub._ready[0].prefixes)
        alone = _seconds_per_send(world, b"r/topic/3|")
        wide = _subscribe_raw(world, [b"z" * n for n in range(1, 1001)])  # a prefix of each length up to 1000
        try:
            world.run_until(lambda: world.pub.subscribers == 2 and len(world.pub._ready[1].prefixes) == 1000)
            # matched as libzmq's trie matches: by the topic's own prefixes, not the subscriber's lengths
            assert _seconds_per_send(world, b"r/topic/3|") < 5 * alone + 5e-6
        finally:
            wide.close()
    finally:
        plain.close()


def test_a_subscriber_flooding_subscriptions_cannot_hold_up_the_reactor(world) -> None:  # noqa: ANN001
    flooder = socket.create_connection(world.pub.address[:2])
    _handshake(flooder, b"SUB")
    flood = (frame_header(2, more=False) + b"\x01f" + frame_header(2, more=False) + b"\x00f") * 40_000
    stop = threading.Event()

    def write() -> None:  # as fast as the publisher reads
        try:
            while not stop.is_set():
                flooder.sendall(flood)
        except OSError:
            pass
    flooder.settimeout(0.5)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        world.run_until(lambda: world.pub.subscribers == 1)
        # the node's heartbeats and requests wait for a pass to end: what bounds a pass is the
        # subscriber input it parses (measured as bytes handed to the publisher per pass, not
        # as wall time, which a loaded machine stretches)
        handled = world.pub.tcp.on_stream
        read = [0]

        def counted(frames: list) -> None:
            read[0] += len(frames[1])
            handled(frames)
        world.pub.tcp.on_stream = counted
        per_pass: list[int] = []
        for _ in range(200):
            read[0] = 0
            world.reactor.run_once(5)
            per_pass.append(read[0])
        assert sum(per_pass) >= 100 * zmtp_pub.RECEIVE_BYTES  # the flood was read, pass after pass
        assert max(per_pass) <= zmtp_pub.RECEIVE_BYTES
        assert world.pub.subscribers == 1  # subscribe/unsubscribe pairs are not a violation
    finally:
        stop.set()
        writer.join()
        flooder.close()


def test_connections_are_bounded_and_a_new_subscriber_takes_the_place_of_the_idlest(
        monkeypatch: pytest.MonkeyPatch, world) -> None:  # noqa: ANN001
    monkeypatch.setattr(zmtp_pub, "CONNECTIONS_MAX", 8)
    idle = [socket.create_connection(world.pub.address[:2]) for _ in range(20)]  # handshaked or silent
    try:
        for i, s in enumerate(idle):
            if i % 2:
                _handshake(s, b"SUB")
        world.run_until(lambda: world.pub.counters["connections_evicted"] >= 12)
        good = world.libzmq(zmq.SUB, b"g|")
        got: list = []
        world.run_until(lambda: _drain(good, got), publish=lambda: world.pub.send([b"g|", b"served"]))
        assert world.pub.tcp.connections <= 8 and world.pub.counters["connections_evicted"] == 13
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("flood", ["silent", "handshaked"])
def test_a_flood_of_connections_that_never_subscribe_does_not_evict_a_subscriber(
        monkeypatch: pytest.MonkeyPatch, world, flood: str) -> None:  # noqa: ANN001
    """A follower subscribes once and then only reads: by input it is always the idlest
    connection, and a burst of connections to the port evicted the replication streams first.
    Connections still in their handshake, then those with no subscription, make room first."""
    monkeypatch.setattr(zmtp_pub, "CONNECTIONS_MAX", 8)
    follower = world.libzmq(zmq.SUB, b"r|")
    got: list = []
    world.run_until(lambda: _drain(follower, got), publish=lambda: world.pub.send([b"r|", b"first"]))
    (conn_id,) = [sub.conn_id for sub in world.pub._ready]  # libzmq reconnects: a new id if it is closed
    flooders = [socket.create_connection(world.pub.address[:2]) for _ in range(30)]
    try:
        for s in flooders:
            if flood == "handshaked":
                _handshake(s, b"SUB")
        world.run_until(lambda: world.pub.counters["connections_evicted"] >= 23)
        assert [sub.conn_id for sub in world.pub._ready if sub.prefixes] == [conn_id]
        world.run_until(lambda: [b"r|", b"after"] in _drain(follower, got),
                        publish=lambda: world.pub.send([b"r|", b"after"]))
    finally:
        for s in flooders:
            s.close()
