"""fabric.zmq_io: one multipart message sent and received through libzmq's calls directly, with
pyzmq's semantics -- the same parts arrive, a part under the socket's copy threshold is copied
and a larger one goes zero-copy, a bad part sends nothing, a full queue raises zmq.Again."""

from __future__ import annotations

import array
import itertools
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from fabric.buffers import OwnedFrame
from fabric.zmq_io import NOBLOCK, receive_frames, send_frames


_PAIRS = itertools.count()


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.setsockopt(zmq.LINGER, 0)
    b.setsockopt(zmq.LINGER, 0)
    endpoint = f"inproc://zmq-io-{next(_PAIRS)}"  # not id(a): a freed socket's id comes back
    b.bind(endpoint)
    a.connect(endpoint)
    yield a, b
    a.close(0)
    b.close(0)


def test_every_kind_of_part_arrives_as_sent_in_one_message(pair) -> None:  # noqa: ANN001
    a, b = pair
    parts = [b"", b"id", bytearray(b"header"), memoryview(b"view"), OwnedFrame(b"o" * 70_000),
             zmq.Frame(b"frame")]
    send_frames(a, parts)
    send_frames(a, [b"next"])
    assert receive_frames(b) == [bytes(p) for p in parts]
    assert receive_frames(b) == [b"next"]  # message boundaries kept
    with pytest.raises(zmq.Again):
        receive_frames(b)


def test_receive_frames_reads_what_pyzmq_sends_and_the_reverse(pair) -> None:  # noqa: ANN001
    a, b = pair
    a.send_multipart([b"x", b"y" * 100_000, b""])
    assert receive_frames(b) == [b"x", b"y" * 100_000, b""]
    send_frames(a, [b"1", b"22"])
    assert b.recv_multipart() == [b"1", b"22"]


def test_a_part_at_the_copy_threshold_goes_zero_copy_and_a_smaller_one_is_copied(pair) -> None:  # noqa: ANN001
    """Observable on inproc: a zero-copy part is the sender's own buffer until it is read."""
    a, b = pair
    a.copy_threshold = 64
    small, large = bytearray(b"s" * 63), bytearray(b"l" * 64)
    send_frames(a, [small, large, b"t" * 64])
    small[0], large[0] = ord("S"), ord("L")
    got = receive_frames(b)
    assert got[0][0] == ord("s")  # copied when sent
    assert got[1][0] == ord("L")  # zero-copy: the change made after the send shows
    explicit = bytearray(b"e" * 64)
    send_frames(a, [explicit], copy_bytes_min=65)  # below the given minimum: copied
    explicit[0] = ord("E")
    assert receive_frames(b)[0][0] == ord("e")


def test_a_part_that_is_not_a_buffer_sends_nothing(pair) -> None:  # noqa: ANN001
    a, b = pair
    with pytest.raises(TypeError):
        send_frames(a, [b"first", 3, b"last"])
    send_frames(a, [b"whole"])
    assert receive_frames(b) == [b"whole"]  # no half message in front of it


def test_a_full_queue_raises_again_and_refuses_the_whole_message() -> None:
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, 1)
    push.connect(f"inproc://zmq-io-full-{id(push)}")  # no peer yet: the pipe holds one message
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        sent = 0
        with pytest.raises(zmq.Again):
            for _ in range(100):  # bounded: the queue is full after a few
                send_frames(push, [b"a", b"b"], NOBLOCK)
                sent += 1
        pull.bind(f"inproc://zmq-io-full-{id(push)}")
        got = [receive_frames_blocking(pull) for _ in range(sent)]
        assert got == [[b"a", b"b"]] * sent
        with pytest.raises(zmq.Again):
            receive_frames(pull)  # nothing half-sent behind them
    finally:
        push.close(0)
        pull.close(0)


def receive_frames_blocking(sock: zmq.Socket) -> list[bytes]:
    assert sock.poll(2000), "no message"
    return receive_frames(sock)


def _released() -> memoryview:
    m = memoryview(b"zz")
    m.release()
    return m


@pytest.mark.parametrize("bad", [lambda: memoryview(b"abcdef")[::2], _released, lambda: 3],
                         ids=["non-contiguous", "released", "not-a-buffer"])
def test_a_bad_later_part_leaves_nothing_queued(pair, bad) -> None:  # noqa: ANN001
    a, b = pair
    with pytest.raises((TypeError, ValueError, BufferError)):
        send_frames(a, [b"head", bad()])
    send_frames(a, [b"next"])
    assert receive_frames(b) == [b"next"]  # no orphaned parts glued in front of it


def test_a_buffer_without_len_is_sent_whole(pair) -> None:  # noqa: ANN001
    a, b = pair
    send_frames(a, [b"head", pickle.PickleBuffer(b"body")])
    assert receive_frames(b) == [b"head", b"body"]


def test_the_threshold_counts_bytes_not_items(pair) -> None:  # noqa: ANN001
    a, b = pair
    a.copy_threshold = 64
    wide = array.array("Q", [1] * 16)  # 16 items, 128 bytes
    send_frames(a, [memoryview(wide), b"t"])
    wide[0] = 99
    assert receive_frames(b)[0][0] == 99  # zero-copy, as pyzmq sends it


class _Delegating:
    """A wrapper with pyzmq's interface around a real socket (as tests wrap a node's socket)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.copies: list[bool] = []

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True, **kw: Any) -> Any:
        self.copies.append(copy)
        return self.sock.send_multipart(frames, flags, copy=copy, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_wrapper_is_sent_and_read_through_its_own_multipart_calls(pair) -> None:  # noqa: ANN001
    a, b = pair
    a.copy_threshold = 64
    wrapper = _Delegating(a)
    big = bytearray(b"l" * 128)
    send_frames(wrapper, [big, b"tail"])
    big[0] = ord("L")
    assert wrapper.copies == [False]  # a part over the threshold: pyzmq's copy=False
    assert b.poll(1000)
    got = receive_frames(_Delegating(b))  # type: ignore[arg-type]
    assert got == [b"L" + b"l" * 127, b"tail"]


def test_a_socket_subclass_goes_through_its_own_send_multipart() -> None:
    calls: list[list] = []

    class Refusing(zmq.Socket):
        def send_multipart(self, frames, flags=0, copy=True, track=False, **kw):  # noqa: ANN001, ANN201
            calls.append(list(frames))
            raise zmq.Again()  # as a fault-injecting socket would

    sock = zmq.Context.instance().socket(zmq.PAIR, socket_class=Refusing)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        with pytest.raises(zmq.Again):
            send_frames(sock, [b"x"])
        assert calls == [[b"x"]]
    finally:
        sock.close(0)
