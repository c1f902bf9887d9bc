"""Zero-copy receive (fabric/buffers.py): what a handler is given, and that what is kept past
the handler is never changed by the messages received after it.

- The replication stream (``fabric.zmtp_sub``, read by the follower's reactor) hands each frame
  as bytes or a buffer of its own, never a view onto a read buffer: a frame kept stays
  unchanged while many more messages arrive, and so do the memory engine's batches.
- The request port (``fabric.zmtp``) assembles each frame of at least OWNED_FRAME_BYTES_MIN
  bytes into a buffer of its own (an OwnedFrame) whichever way TCP cut the bytes: the
  frames kept from early requests (a parked acks=all produce keeps its payloads) are intact
  after many more requests on the same connection, and every frame is byte for byte what
  was sent.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import zmq

from engines.api import EngineConfig
from engines.batch import iter_batches
from engines.conformance import batch_index, make_batch
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric import wire
from fabric.buffers import OwnedFrame
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from fabric.zmtp_client import DIRECT_BYTES_MIN
from fabric.zmtp_sub import ZmtpSubscriber
from tests.harness import free_ports
from tests.zmtp_peer import RawDealer

PASSES_MAX = 2000
POLL_MS = 5
LATER_MESSAGES = 300
WARM_UP = b"warm-up"
SEND_TIMEOUT_S = 30.0


def _subscriber(reactor: Reactor, received: list) -> tuple[zmq.Socket, ZmtpSubscriber]:
    """A libzmq PUB and a ZmtpSubscriber on loopback TCP, the subscriber read by ``reactor`` as
    a follower reads its replication stream, joined: the messages published from now on arrive
    in ``received`` (those on topic WARM_UP, sent until the subscription has reached the PUB,
    are left out)."""
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    joined: list = []
    sub = ZmtpSubscriber(reactor, lambda frames: (joined if frames[0] == WARM_UP else received).append(frames))
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    for _ in range(PASSES_MAX):  # a PUB drops what it sends before the subscription reaches it
        pub.send_multipart([WARM_UP])
        reactor.run_once(POLL_MS)
        if joined:
            return pub, sub
    raise AssertionError("the subscription did not reach the PUB")


def _publish(reactor: Reactor, pub: zmq.Socket, received: list, frames: list, count: int) -> None:
    """Publish ``frames`` ``count`` times and receive them."""
    expected = len(received) + count
    for _ in range(count):
        pub.send_multipart(frames)
    for _ in range(PASSES_MAX):
        if len(received) >= expected:
            return
        reactor.run_once(POLL_MS)
    raise AssertionError(f"received {len(received)} of {expected} messages")


def test_replicated_frames_are_bytes_or_buffers_of_their_own_never_views() -> None:
    reactor, received = Reactor(), []
    pub, sub = _subscriber(reactor, received)
    try:
        big, small = make_batch(1, payload_bytes=DIRECT_BYTES_MIN + 1000), make_batch(2, payload_bytes=20_000)
        _publish(reactor, pub, received, [b"topic", b"h" * 100, big, small], 1)
        frames = received[0]
        assert all(type(f) in (bytes, OwnedFrame) for f in frames), [type(f) for f in frames]
        assert frames[2:] == [big, small]
    finally:
        sub.close()
        pub.close()


def test_replicated_frames_and_the_memory_engine_keep_their_bytes_while_many_more_messages_arrive() -> None:
    """The first batches are appended to the memory engine as they arrive, and one frame is kept
    (as a parked request would keep its payload); then hundreds of messages of the same size
    with other contents arrive through the same read buffers. Neither the kept frame nor the
    engine's batches change."""
    reactor, received = Reactor(), []
    pub, sub = _subscriber(reactor, received)
    engine = MemoryEngine("", EngineConfig())
    try:
        firsts = [make_batch(i, record_count=2, payload_bytes=300_000) for i in range(3)]
        for batch in firsts:
            _publish(reactor, pub, received, [b"t", batch], 1)
        frames = [m[1] for m in received]
        engine.append_many(frames)
        kept = frames[0]
        del frames
        received.clear()
        _publish(reactor, pub, received, [b"t", make_batch(999, record_count=2, payload_bytes=300_000)], LATER_MESSAGES)
        received.clear()
        assert kept == firsts[0]
        stored = [bytes(v) for _, v in iter_batches(engine.read(0, 4 << 20))]
        assert [batch_index(memoryview(b)) for b in stored] == [0, 1, 2]
        assert [b[8:] for b in stored] == [b[8:] for b in firsts]  # only the base offset was stamped
    finally:
        sub.close()
        pub.close()


def _zmtp_message(frames: list[bytes]) -> bytes:
    """``frames`` as one ZMTP 3 message on the wire."""
    out = bytearray()
    for i, f in enumerate(frames):
        flags = 0x01 if i < len(frames) - 1 else 0
        out += struct.pack(">BQ", flags | 0x02, len(f)) if len(f) > 255 else bytes([flags, len(f)])
        out += f
    return bytes(out)


def test_request_frames_are_owned_buffers_intact_after_many_more_requests_however_tcp_cuts_them() -> None:
    rng = random.Random(13)
    reactor = Reactor()
    port = free_ports(1)[0]
    delivered: list[list] = []
    server = ZmtpServer(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}", delivered.append)
    sent: list[list[bytes]] = []
    for i in range(120):
        sizes = [rng.choice([0, 5, 255, 256, P.OWNED_FRAME_BYTES_MIN - 1, P.OWNED_FRAME_BYTES_MIN,
                             8191, 8192, 8193, 20_000, 100_003]) for _ in range(rng.randint(1, 4))]
        payloads = [bytes([i % 251, n % 256]) * (n // 2) + b"z" * (n % 2) for n in sizes]
        sent.append([b"", P.VERSION, P.PRODUCE, wire.pack({"id": i}), *payloads])
    failed: list[BaseException] = []

    def send_in_pieces() -> None:  # the handshake, then every message cut at random places
        try:
            peer = RawDealer("127.0.0.1", port, identity=b"zc")
            peers.append(peer)
            peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for frames in sent:
                data = _zmtp_message(frames)
                pos = 0
                while pos < len(data):
                    n = rng.choice([1, 2, 9, 100, 1000, 8192, 9000, 30_000])
                    peer.sock.sendall(data[pos:pos + n])
                    pos += n
        except BaseException as e:  # reported by the test thread
            failed.append(e)
    peers: list[RawDealer] = []
    thread = threading.Thread(target=send_in_pieces, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while len(delivered) < len(sent) and time.monotonic() < deadline and not failed:
            reactor.run_once(POLL_MS)
        assert not failed and len(delivered) == len(sent)
        for frames, message in zip(sent, delivered):
            assert message[0] == b"zc" and message[1:] == frames
            for f in message[1:]:
                assert type(f) is (OwnedFrame if len(f) >= P.OWNED_FRAME_BYTES_MIN else bytes)
        assert server.buffered_bytes == 0
        thread.join(SEND_TIMEOUT_S)
        assert not failed and not thread.is_alive()
    finally:
        thread.join(SEND_TIMEOUT_S)
        for peer in peers:
            peer.close()
        server.close()
