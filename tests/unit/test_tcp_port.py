"""The request port's TCP connections (fabric/tcp_port.py), driven by a real reactor and real
sockets on loopback: output whole or not at all (a peer that stops reading loses whole later
messages, never part of one, and reads the rest intact and in order when it reads again), the
bounds on waiting output, the events the server sees (connect, bytes, the peer's close or
reset; none for a close of its own), and what a bad endpoint or a taken port raises."""

from __future__ import annotations

import array
import errno
import gc
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter

import pytest
import zmq

from fabric import tcp_port
from fabric.buffers import OwnedFrame
from fabric.reactor import Reactor
from fabric.tcp_port import TcpPort, listen_address
from tests.harness import free_ports

DEADLINE_S = 10.0
POLL_MS = 10


class _Port:
    """A TcpPort on a free loopback port and the events it reported."""

    def __init__(self) -> None:
        self.reactor = Reactor()
        self.events: list[tuple[bytes, bytes]] = []
        self.counters: Counter[str] = Counter()  # as the server's
        self.port = TcpPort(self.reactor, f"tcp://127.0.0.1:{free_ports(1)[0]}", self._on_stream,
                            self.counters)

    def _on_stream(self, frames: list) -> None:
        conn_id, data = frames
        self.events.append((conn_id, bytes(data)))  # a copy: the view is valid during the call only

    def connect(self, receive_buffer: int | None = None) -> tuple[socket.socket, bytes]:
        """A peer (with that small a receive buffer) and its connection id; events cleared."""
        peer = socket.socket()
        if receive_buffer:  # before the connect: the window is advertised from the first segment
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        peer.connect(self.port.address[:2])
        self.events.clear()
        self.run_until(lambda: any(not d for _, d in self.events))
        conn_id = self.events[-1][0]
        self.events.clear()
        return peer, conn_id

    def fill(self, conn_id: bytes, size: int = 64 * 1024) -> list[int]:
        """Write numbered messages until the port keeps some output waiting (bounded)."""
        written = []
        for n in range(2000):
            assert self.port.write(conn_id, _message(n, size))
            written.append(n)
            if self.port.output_bytes:
                return written
        raise AssertionError("the kernel took 2,000 messages without a reader")

    def run_until(self, condition) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            self.reactor.run_once(POLL_MS)

    def received(self) -> bytes:
        return b"".join(d for _, d in self.events)


@pytest.fixture
def port():  # noqa: ANN201
    p = _Port()
    try:
        yield p
    finally:
        p.port.shutdown()


def _message(n: int, size: int) -> list:
    """A length-prefixed message of ``size`` bytes in three pieces of different kinds."""
    body = bytes([n % 251]) * size
    return [struct.pack(">II", n, size), memoryview(body)[: size // 2], OwnedFrame(body[size // 2:])]


class _Reader:
    """Whole messages of ``_message`` out of a peer socket, checked intact."""

    def __init__(self, peer: socket.socket) -> None:
        self.peer = peer
        self.buf = b""
        peer.setblocking(False)

    def poll(self) -> list[tuple[int, int]]:
        """The messages whole in what the peer can read now."""
        try:
            self.buf += self.peer.recv(1 << 20)
        except BlockingIOError:
            pass
        out = []
        while len(self.buf) >= 8:
            n, size = struct.unpack(">II", self.buf[:8])
            if len(self.buf) < 8 + size:
                break
            assert self.buf[8:8 + size] == bytes([n % 251]) * size, f"message {n} is not intact"
            out.append((n, size))
            self.buf = self.buf[8 + size:]
        return out


def _read_all(port: "_Port", reader: _Reader, count: int) -> list[tuple[int, int]]:
    """Run the port's reactor and read until ``count`` messages came (bounded)."""
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} messages read"
        port.reactor.run_once(0)
        got += reader.poll()
    return got


def test_bytes_arrive_as_events_and_a_reply_goes_back(port: _Port) -> None:
    peer, conn_id = port.connect()
    peer.sendall(b"hello")
    port.run_until(lambda: port.received() == b"hello")
    assert {c for c, _ in port.events} == {conn_id}
    assert port.port.write(conn_id, [b"wor", bytearray(b"l"), memoryview(b"d!")])
    peer.settimeout(DEADLINE_S)
    assert peer.recv(100) == b"world!"
    peer.close()


def test_a_peer_that_stops_reading_loses_whole_messages_and_reads_the_rest_intact(
        port: _Port, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(port.port, "output_bytes_max", 1 << 20)
    peer, conn_id = port.connect(receive_buffer=4096)
    accepted = port.fill(conn_id)
    refused = []
    for n in range(len(accepted), len(accepted) + 100):  # bounded: 100 x 64 KiB is past the bound
        (accepted if port.port.write(conn_id, _message(n, 64 * 1024)) else refused).append(n)
    assert refused and accepted == list(range(len(accepted)))  # refused from some point on, whole
    assert port.port.output_bytes <= (1 << 20) + 64 * 1024 + 8
    reader = _Reader(peer)
    got = _read_all(port, reader, len(accepted))  # the reactor flushes as the peer reads
    assert [n for n, _ in got] == accepted
    port.run_until(lambda: port.port.output_bytes == 0)
    assert port.port.write(conn_id, _message(999, 10))  # accepted again once drained
    assert _read_all(port, reader, 1) == [(999, 10)]
    peer.close()


def test_the_bound_on_all_connections_together_refuses_a_message_on_an_idle_connection(
        port: _Port, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_port, "OUTPUT_BYTES_TOTAL_MAX", 1 << 20)
    slow, slow_id = port.connect(receive_buffer=4096)
    fast, fast_id = port.connect()
    port.fill(slow_id)
    for n in range(100):  # bounded: fills the total bound
        if not port.port.write(slow_id, _message(n, 64 * 1024)):
            break
    assert port.port.output_bytes >= 1 << 20
    assert not port.port.write(fast_id, _message(1, 10))  # nothing of it waits, but the total is full
    slow.close()
    port.run_until(lambda: port.port.connections == 1)  # the slow peer's end releases its output
    assert port.port.output_bytes == 0
    assert port.port.write(fast_id, _message(2, 10))
    assert _read_all(port, _Reader(fast), 1) == [(2, 10)]
    fast.close()


def test_a_piece_of_wide_items_is_counted_and_cut_in_bytes(port: _Port) -> None:
    peer, conn_id = port.connect(receive_buffer=4096)
    wide = array.array("I", range(3_000_000))  # 12 MB in 4-byte items: the kernel takes part of it
    assert port.port.write(conn_id, [memoryview(wide)])
    assert 0 < port.port.output_bytes < len(wide) * 4
    peer.settimeout(DEADLINE_S)
    got = bytearray()
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < len(wide) * 4:
        assert time.monotonic() < deadline
        port.reactor.run_once(0)
        got += peer.recv(1 << 20)
    assert bytes(got) == wide.tobytes()
    peer.close()


def test_a_bad_piece_raises_before_anything_is_sent(port: _Port) -> None:
    peer, conn_id = port.connect()
    with pytest.raises(TypeError):
        port.port.write(conn_id, [b"head", object()])
    assert port.port.write(conn_id, [b"next"])
    peer.settimeout(DEADLINE_S)
    assert peer.recv(100) == b"next"  # nothing of the bad message went out
    peer.close()


def test_a_bad_piece_raises_before_anything_is_queued_behind_waiting_output(port: _Port) -> None:
    peer, conn_id = port.connect(receive_buffer=4096)
    accepted = port.fill(conn_id)  # output waits: the next message is queued, not sent
    waiting = port.port.output_bytes
    with pytest.raises(TypeError):
        port.port.write(conn_id, [b"head", object()])
    assert port.port.output_bytes == waiting  # nothing of the bad message was queued
    next_n = len(accepted)
    assert port.port.write(conn_id, _message(next_n, 10))
    got = _read_all(port, _Reader(peer), next_n + 1)  # the stream holds whole messages only
    assert [n for n, _ in got] == accepted + [next_n]
    peer.close()


def out_of_descriptors_scenario() -> None:
    """Run in a fresh interpreter (the test below): the descriptor limit is the process's, and
    a thread an earlier test left (a context's reaper, a client's I/O thread) closing one of its
    descriptors during the window would free a slot below the lowered limit to accept into."""
    import resource
    port = _Port()
    try:
        peers = [socket.create_connection(port.port.address[:2], timeout=DEADLINE_S) for _ in range(3)]
        quiet, other_end = socket.socketpair()  # a node's reactor polls more than its port: one never ready
        port.reactor.add_descriptor(quiet.fileno(), lambda ready: None)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        gc.collect()  # no descriptor of ours freed while the limit is low
        lowest_free = os.dup(0)
        os.close(lowest_free)
        passes = 0
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no descriptor left to accept into
        try:
            until = time.monotonic() + 0.5  # a window to count passes in, not a wait for a condition
            while time.monotonic() < until:
                port.reactor.run_once(50)
                passes += 1
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert port.counters["accept_failed"] >= 1 and port.port.connections < 3, (passes, port.counters)
        assert passes <= 40 and port.counters["accept_failed"] <= 10, (passes, port.counters)
        port.run_until(lambda: port.port.connections == 3)  # accepting resumes once descriptors are free
        for peer in peers:
            peer.close()
        port.reactor.remove_descriptor(quiet.fileno())
        quiet.close()
        other_end.close()
    finally:
        port.port.shutdown()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_out_of_descriptors_the_port_pauses_accepting_instead_of_spinning() -> None:
    """A connection the kernel holds for accept keeps the listening socket ready; while no
    descriptor is free, accepting it fails every time (EMFILE). The reactor must not spin on
    it (a pass, a failed accept and a warning per pass), and must take it once one is free."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", "from tests.unit.test_tcp_port import out_of_descriptors_scenario as s; s()"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_peers_close_and_reset_are_events_and_the_descriptor_is_released(port: _Port) -> None:
    closing, closing_id = port.connect()
    closing.close()
    port.run_until(lambda: (closing_id, b"") in port.events)
    assert port.port.connections == 0
    resetting, resetting_id = port.connect()
    resetting.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    resetting.close()  # RST
    port.run_until(lambda: (resetting_id, b"") in port.events)
    assert port.port.connections == 0
    assert list(port.reactor._descriptors) == [port.port.sock.fileno()]  # only the listening socket
    assert not port.port.write(closing_id, [b"x"])  # a gone connection: refused, no error


def test_a_close_of_the_servers_own_is_no_event_and_drops_the_output(port: _Port) -> None:
    peer, conn_id = port.connect(receive_buffer=4096)
    port.fill(conn_id)
    port.port.close(conn_id)
    assert port.port.output_bytes == 0 and port.port.connections == 0
    for _ in range(5):
        port.reactor.run_once(POLL_MS)
    assert port.events == []
    peer.close()


def test_a_write_to_a_reset_peer_is_refused_later_and_its_end_is_reported(port: _Port) -> None:
    peer, conn_id = port.connect()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST: the next sends fail
    deadline = time.monotonic() + DEADLINE_S
    while port.port.write(conn_id, [b"x" * 1000]):  # the kernel notices the reset
        assert time.monotonic() < deadline
        time.sleep(0.001)
    port.run_until(lambda: (conn_id, b"") in port.events)
    assert port.port.connections == 0 and port.port.output_bytes == 0


def test_one_busy_peer_is_read_a_bounded_amount_per_pass(port: _Port, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_port, "READS_PER_PASS", 2)
    busy, busy_id = port.connect()
    quiet, quiet_id = port.connect()
    busy.setblocking(False)
    queued = 0
    try:  # as much as the kernel holds without the port reading (bounded)
        while queued < 16 * tcp_port.RECEIVE_BYTES:
            queued += busy.send(b"b" * tcp_port.RECEIVE_BYTES)
    except BlockingIOError:
        pass
    assert queued > 4 * tcp_port.RECEIVE_BYTES  # more than two passes of two reads
    quiet.sendall(b"q")
    port.run_until(lambda: any(c == quiet_id for c, _ in port.events))
    busy_bytes = sum(len(d) for c, d in port.events if c == busy_id)
    assert busy_bytes <= 2 * 2 * tcp_port.RECEIVE_BYTES  # two reads a pass, the quiet one served by the second
    busy.close()
    quiet.close()


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1", "tcp://:5", "tcp://127.0.0.1:x", "ipc://a:1",
                                      "tcp://127.0.0.1:70000"])
def test_a_malformed_endpoint_is_einval(endpoint: str) -> None:
    with pytest.raises(zmq.ZMQError) as e:
        listen_address(endpoint)
    assert e.value.errno == errno.EINVAL


def test_endpoints_of_every_interface_and_of_ipv6_resolve() -> None:
    assert listen_address("tcp://*:5555") == (socket.AF_INET, ("0.0.0.0", 5555))
    assert listen_address("tcp://127.0.0.1:5555") == (socket.AF_INET, ("127.0.0.1", 5555))
    family, address = listen_address("tcp://[::1]:5555")
    assert family == socket.AF_INET6 and address[:2] == ("::1", 5555)


def test_a_taken_port_is_eaddrinuse_and_leaves_no_descriptor(port: _Port) -> None:
    reactor = Reactor()
    with pytest.raises(zmq.ZMQError) as e:
        TcpPort(reactor, f"tcp://127.0.0.1:{port.port.address[1]}", lambda frames: None, {})
    assert e.value.errno == errno.EADDRINUSE
    assert reactor._descriptors == {}



def test_a_host_name_resolves_to_its_ipv4_address_first_as_libzmq_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 5555, 0, 0))
    v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 5555))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [v6, v4])
    assert tcp_port.resolve("localhost", 5555) == (socket.AF_INET, ("127.0.0.1", 5555))
    assert listen_address("tcp://localhost:5555") == (socket.AF_INET, ("127.0.0.1", 5555))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [v6])
    assert tcp_port.resolve("localhost", 5555) == (socket.AF_INET6, ("::1", 5555, 0, 0))  # IPv6 only: that one
