"""Adversarial checks of the zero-copy data plane (fabric/buffers.py): the request port's frame
reassembly at every chunk boundary, a peer that closes mid-frame or declares more than it sends,
the chunk views not kept past the handler, and the leader's in-place stamp touching nothing it
must not (refused, duplicate and failed batches; the bytes the CRC covers).

The request port is driven through ``ZmtpServer._on_stream`` with the exact chunks a STREAM
socket would hand it (``[connection id, view]``), so every cut is tried, not a random sample.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import zmq

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric import wire
from fabric.buffers import OwnedFrame
from fabric.metadata import PartitionInfo
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from nodes.broker.partition import Partition
from tests.harness import free_ports
from tests.unit.fakes import broker_core, make_batch
from tests.zmtp_peer import GREETING, _property

CID = b"\x00conn-1"
IDENTITY = b"peer"
OWNED = P.OWNED_FRAME_BYTES_MIN
LEADER, FOLLOWER = 1, 2
EPOCH = 5


def _frame(body: bytes, *, more: bool, command: bool = False) -> bytes:
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return struct.pack(">BQ", flags | 0x02, len(body)) + body
    return bytes([flags, len(body)]) + body


def _message(frames: list[bytes]) -> bytes:
    return b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))


HANDSHAKE = GREETING + _frame(b"\x05READY" + _property(b"Socket-Type", b"DEALER") + _property(b"Identity", IDENTITY),
                              more=False, command=True)


def _request(rid: int, payloads: list[bytes]) -> list[bytes]:
    return [b"", P.VERSION, P.PRODUCE, wire.pack({"id": rid}), *payloads]


def _payload(n: int, tag: int) -> bytes:
    return bytes((tag + i) % 251 for i in range(n))


@pytest.fixture(scope="module")
def server() -> ZmtpServer:
    s = ZmtpServer(zmq.Context.instance(), Reactor(), f"tcp://127.0.0.1:{free_ports(1)[0]}", lambda frames: None)
    yield s
    s.close()


def _run(server: ZmtpServer, chunks: list[bytes], *, writable: bool = False) -> list[list]:
    """Feed a fresh connection these chunks (after libzmq's connect notice) as STREAM views;
    returns what was delivered. With ``writable`` each chunk is a view onto a bytearray that is
    overwritten and released right after the call, as libzmq may reuse a chunk's memory once
    the handler returned: resizing it raises BufferError if any view onto it was kept."""
    delivered: list[list] = []
    server.on_message = delivered.append
    server._on_stream([CID, b""])
    for chunk in chunks:
        if writable:
            backing = bytearray(chunk)
            view = memoryview(backing)
            server._on_stream([CID, view])
            backing[:] = b"\xee" * len(backing)
            view.release()
            backing.clear()  # BufferError: a view onto the chunk outlived the handler
        else:
            server._on_stream([CID, memoryview(chunk)])
    return delivered


def _close(server: ZmtpServer) -> None:
    server._on_stream([CID, b""])  # libzmq's disconnect notice
    assert server.connections == 0 and server.buffered_bytes == 0


def _check(delivered: list[list], sent: list[list[bytes]]) -> None:
    assert len(delivered) == len(sent)
    for message, frames in zip(delivered, sent):
        assert message[0] == IDENTITY and message[1:] == frames
        for f in message[1:]:
            assert type(f) is (OwnedFrame if len(f) >= OWNED else bytes)


# Frames at and around every size the parser treats differently: short/long header (255/256),
# bytes/OwnedFrame (OWNED - 1 / OWNED), and one longer than libzmq's 8 KiB chunk.
EDGE_SIZES = [0, 1, 255, 256, OWNED - 1, OWNED, OWNED + 1, 9000]


def test_every_two_way_cut_of_a_stream_of_two_requests_delivers_both_intact(server: ZmtpServer) -> None:
    sent = [_request(1, [_payload(n, k) for k, n in enumerate(EDGE_SIZES)]),
            _request(2, [_payload(OWNED, 77), b"tail"])]
    stream = HANDSHAKE + b"".join(_message(m) for m in sent)
    for cut in range(1, len(stream)):
        delivered = _run(server, [stream[:cut], stream[cut:]], writable=True)
        _check(delivered, sent)
        assert server.buffered_bytes == 0
        _close(server)


def test_every_three_way_cut_around_owned_frames_delivers_them_intact(server: ZmtpServer) -> None:
    """Both cuts anywhere near each boundary of two OWNED-size frames (one ending a message,
    one starting the next, with small frames around them): headers, body starts and ends."""
    sent = [_request(3, [b"s" * 10, _payload(OWNED, 1)]), _request(4, [_payload(OWNED + 3, 2), b"x"])]
    stream = HANDSHAKE + b"".join(_message(m) for m in sent)
    first_end = len(HANDSHAKE) + len(_message(sent[0]))
    second_body = first_end + len(_message(sent[1][:4])) + 9
    marks = (first_end - OWNED - 9, first_end - OWNED, first_end, second_body, second_body + OWNED + 3)
    cuts = sorted({c for m in marks for c in range(m - 12, m + 13) if 0 < c < len(stream)})
    for i, a in enumerate(cuts):
        for b in cuts[i + 1:]:
            delivered = _run(server, [stream[:a], stream[a:b], stream[b:]], writable=True)
            _check(delivered, sent)
            _close(server)


def test_byte_at_a_time_delivers_every_edge_size_intact(server: ZmtpServer) -> None:
    sent = [_request(5, [_payload(n, n) for n in EDGE_SIZES])]
    stream = HANDSHAKE + _message(sent[0])
    delivered = _run(server, [stream[i:i + 1] for i in range(len(stream))], writable=True)
    _check(delivered, sent)
    _close(server)


def test_every_cut_of_an_over_limit_message_of_owned_frames_discards_it_and_serves_the_next(
        server: ZmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owned frame within the request limit, then one that takes the message over it: the
    first frame's buffer is dropped, the rest skipped unbuffered, the peer answered, and the
    next message (an owned frame again) delivered intact, wherever the chunks are cut."""
    monkeypatch.setattr(P, "REQUEST_BYTES_MAX", 6000)
    over = _request(9, [_payload(2000, 4), _payload(4000, 5), b"end"])
    after = _request(10, [_payload(3000, 6)])
    stream = HANDSHAKE + _message(over) + _message(after)
    for cut in range(len(HANDSHAKE), len(stream)):
        delivered = _run(server, [stream[:cut], stream[cut:]], writable=True)
        _check(delivered, [after])
        assert server.counters["requests_over_limit"] > 0 and server.buffered_bytes == 0
        _close(server)


def test_a_connection_closing_at_any_point_of_an_owned_frame_frees_its_budget(server: ZmtpServer) -> None:
    """Cut the connection after every byte of a request with an OWNED-size frame: nothing is
    delivered, the shared budget is back to 0, and the next connection is served."""
    sent = _request(6, [_payload(OWNED + 10, 3)])
    stream = HANDSHAKE + _message(sent)
    for cut in range(len(HANDSHAKE), len(stream)):
        assert _run(server, [stream[:cut]], writable=True) == []
        _close(server)
    _check(_run(server, [stream]), [sent])
    _close(server)


def test_a_declared_length_allocates_nothing_before_its_bytes_arrive(server: ZmtpServer) -> None:
    """A frame header declaring the largest size within the limit, then silence: the frame's
    buffer holds only the bytes that came, while the declared size is reserved in the shared
    budget (so many such peers are refused buffer_full, test_zmtp_request_budget.py)."""
    declared = P.REQUEST_BYTES_MAX - 4096
    head = _message([b"", P.VERSION, P.PRODUCE, wire.pack({"id": 7})])
    head = head[:-(2 + len(wire.pack({"id": 7})))] + _frame(wire.pack({"id": 7}), more=True)
    start = HANDSHAKE + head + struct.pack(">BQ", 0x02, declared) + b"abc"
    assert _run(server, [start]) == []
    conn = server._connections[CID]
    assert conn.body is not None and bytes(conn.body) == b"abc" and conn.body_missing == declared - 3
    assert conn.body.__sizeof__() < 64 * 1024  # not a buffer of the declared size
    assert server.buffered_bytes >= declared
    _close(server)


def test_a_declared_length_over_the_limit_is_skipped_and_answered(server: ZmtpServer) -> None:
    start = HANDSHAKE + _frame(b"", more=True) + _frame(P.VERSION, more=True) + _frame(P.PRODUCE, more=True) \
        + _frame(wire.pack({"id": 8}), more=True) + struct.pack(">BQ", 0x02, (1 << 63) - 1) + b"x" * 5000
    assert _run(server, [start]) == []
    conn = server._connections[CID]
    assert conn.body is None and not conn.frames and server.buffered_bytes == 0 and len(conn.buf) == 0
    _close(server)


# -- the leader's in-place stamp ---------------------------------------------------------------
def _leader(tmp_path: Path) -> Partition:
    core = broker_core(tmp_path, LEADER)
    part = core.open_partition("t", 0, {})
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, EPOCH, (LEADER,), (LEADER,), 1), now_ms=0)
    return part


def test_refused_batches_are_left_as_the_client_sent_them(tmp_path: Path) -> None:
    """A corrupt batch, one over the size limit and a retried duplicate are answered without
    being written: their buffers are not stamped."""
    part = _leader(tmp_path)
    first = B.build(b"p" * 2000, 2, 1, 1, producer_id=9, producer_epoch=0, base_sequence=0)
    assert part.append_as_leader([OwnedFrame(first)], 1 << 20)[0][0][1] == 0
    corrupt = bytearray(make_batch(2))
    corrupt[-1] ^= 0xFF
    refused = [OwnedFrame(corrupt), OwnedFrame(make_batch(2)), OwnedFrame(first)]
    originals = [bytes(b) for b in refused]
    results, written = part.append_as_leader(refused[:1] + refused[2:], 1 << 20)
    assert [r[1] for r in results] == [P.CORRUPT_MESSAGE, 0] and results[1][2] == "duplicate" and written == []
    results, written = part.append_as_leader(refused[1:2], 10)
    assert results[0][1] == P.RECORD_TOO_LARGE and written == []
    assert [bytes(b) for b in refused] == originals


def test_the_stamp_touches_no_byte_the_crc_covers() -> None:
    """Kafka's layout: the CRC covers from the attributes on; base offset and leader epoch are
    outside it, so a batch verified and then stamped still verifies."""
    batch = bytearray(make_batch(3))
    B.set_leader_epoch(batch, 12345)
    B.set_base_offset(batch, 1 << 40)
    h = B.verify(batch)
    assert h.leader_epoch == 12345 and h.base_offset == 1 << 40
    assert B.CRC_START == 21 and h.crc == B.crc32c(memoryview(batch)[B.CRC_START:])


def test_a_follower_keeps_nothing_of_a_replicated_view(tmp_path: Path) -> None:
    """The memory engine behind a follower: the views it was given are released and their
    memory overwritten after the append (as libzmq reuses a message's memory); the log is
    unchanged, and a view still held would make the resize raise BufferError."""
    leader = Partition("t", 0, LEADER, MemoryEngine("", EngineConfig()), None)
    leader.become_leader(EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    leader.append_as_leader([OwnedFrame(make_batch(4)), OwnedFrame(make_batch(2))], 1 << 20)
    chunk = leader.read(0, 1 << 20, 6)
    follower = Partition("t", 0, FOLLOWER, MemoryEngine("", EngineConfig()), None)
    follower.become_follower(LEADER, EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    backing = bytearray(chunk)
    view = memoryview(backing)
    assert follower.append_as_follower(view) == 2
    backing[:] = bytes(len(backing))
    view.release()
    backing.clear()
    assert follower.read(0, 1 << 20, 6) == chunk


# -- engines written before ``crc_checked`` --------------------------------------------------
class EngineBeforeTheFlag:
    """A third-party engine as docs/engines.md describes one: ``append_many(batches)``, no
    ``crc_checked`` keyword (it validates every batch, CRC included, itself). Everything else
    is a memory engine's."""

    def __init__(self) -> None:
        self._inner = MemoryEngine("", EngineConfig())
        self.calls = 0

    def append_many(self, batches: list) -> list[int]:
        self.calls += 1
        return self._inner.append_many(batches)

    def __getattr__(self, name: str):  # noqa: ANN204 - the rest of the Engine methods
        return getattr(self._inner, name)


def test_an_engine_without_the_crc_checked_keyword_still_takes_appends() -> None:
    """The partition passes ``crc_checked=True`` only to an engine that takes it: a registered
    engine written to the documented ``append_many(batches)`` keeps working as leader and as
    follower (before, every produce raised TypeError, a programmer error that stops the
    broker)."""
    leader_engine, follower_engine = EngineBeforeTheFlag(), EngineBeforeTheFlag()
    leader = Partition("t", 0, LEADER, leader_engine, None)
    leader.become_leader(EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    results, written = leader.append_as_leader([OwnedFrame(make_batch(3)), make_batch(2)], 1 << 20)
    assert [r[:2] for r in results] == [(0, 0), (3, 0)] and leader_engine.calls == 1
    follower = Partition("t", 0, FOLLOWER, follower_engine, None)
    follower.become_follower(LEADER, EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    assert follower.append_as_follower(leader.read(0, 1 << 20, 5)) == 2 and follower_engine.calls == 1
    assert follower.read(0, 1 << 20, 5) == leader.read(0, 1 << 20, 5)


# -- malloc tuning stays in node processes -----------------------------------------------------
MALLOC_PROBE = """
import ctypes, sys
import pytest
rc = pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]])
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
buf = bytearray(24 * 1024 * 1024)
print(int(rc), libc.mallinfo2().hblks - before)
"""


def test_the_malloc_tuning_test_leaves_the_test_process_at_glibc_defaults() -> None:
    """nodes/run.py's tune_malloc is for node processes. Its own test must not apply it to the
    test process, where every later test would run on the tuned allocator (a test that bounds
    this process's RSS, like test_zmtp_request_budget.py, would measure with freed memory kept
    in the heap, and differently when run alone). Checked in a fresh process: after that test,
    a 24 MiB buffer is still an mmap of its own, as at glibc's defaults."""
    import ctypes
    import subprocess
    import sys

    from nodes.local_cluster import SOURCE_ROOT
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("no glibc mallinfo2 here")
    target = "tests/unit/test_node_malloc_tuning.py::test_a_freed_large_buffer_stays_in_the_heap_for_the_next_one"
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, target], cwd=str(SOURCE_ROOT), capture_output=True,
                         text=True, timeout=120, check=True)
    rc, mmapped = out.stdout.split()[-2:]
    assert rc == "0", out.stdout
    assert mmapped == "1", "the test process's malloc was tuned: a 24 MiB buffer came from the heap"
