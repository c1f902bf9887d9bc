"""A WebSocket client's send queue is bounded in bytes as well as in messages: a client that
does not read holds at most OUTBOX_BYTES_MAX of queued text (plus the message being sent),
whatever ``ws_send_queue_max`` allows, and is then closed with 1013."""

from __future__ import annotations

import threading

import pytest

from webui.ws_outbox import GOING_AWAY, OUTBOX_BYTES_MAX, TRY_AGAIN_LATER, Closed, OpenSockets, Outbox


class StuckSocket:
    """A WebSocket whose client never reads: the first send blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.connected = True
        self.closed_with: tuple[int, str] | None = None
        self.sock = self  # the Outbox cuts a stuck client's socket: that ends the blocked send

    def shutdown(self, how: int) -> None:
        self.release.set()

    def send(self, text: str) -> None:
        self.release.wait(10)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def test_a_client_that_does_not_read_holds_at_most_the_byte_bound() -> None:
    ws = StuckSocket()
    out = Outbox(ws, queue_max=10_000, slow_timeout_s=0.2)
    chunk = {"records": ["x" * (512 * 1024)]}
    puts = 0
    try:
        with pytest.raises(Closed):
            for _ in range(100):  # 50 MB offered
                out.put(chunk)
                puts += 1
                assert out._chars <= OUTBOX_BYTES_MAX
    finally:
        ws.release.set()
    assert puts <= OUTBOX_BYTES_MAX // (512 * 1024) + 1, f"{puts} messages of 512 KiB were queued"
    assert out.done.wait(5) and ws.closed_with is not None and ws.closed_with[0] == TRY_AGAIN_LATER
    assert "too slow" in ws.closed_with[1]


def test_a_message_larger_than_the_bound_still_goes_when_the_queue_is_empty() -> None:
    ws = StuckSocket()
    ws.release.set()
    out = Outbox(ws, queue_max=4, slow_timeout_s=0.5)
    out.put({"records": ["y" * (OUTBOX_BYTES_MAX + 10)]})
    out.close(1000, "done")
    assert out.done.wait(5)


def test_flush_waits_for_the_message_being_written_not_only_the_queue() -> None:
    ws = StuckSocket()
    out = Outbox(ws, queue_max=10, slow_timeout_s=1.0)
    try:
        out.put({"authenticated": True})
        assert out.flush(0.2) is False  # taken from the queue, still being written
        ws.release.set()
        assert out.flush(5) is True
    finally:
        ws.release.set()
        out.close(1000, "done")


def test_going_away_closes_every_open_socket_and_any_opened_after_it_with_1001() -> None:
    sockets = OpenSockets()
    first, second, late = StuckSocket(), StuckSocket(), StuckSocket()
    for ws in (first, second, late):
        ws.release.set()
    outs = [Outbox(ws, queue_max=4, slow_timeout_s=0.5) for ws in (first, second)]
    for out in outs:
        sockets.add(out)
    sockets.going_away("stopping")
    assert all(out.done.wait(5) for out in outs)
    assert first.closed_with == second.closed_with == (GOING_AWAY, "stopping")
    assert sockets.wait_closed(0.01) == 2, "open until their routes end"
    sockets.discard(outs[0])
    late_out = Outbox(late, queue_max=4, slow_timeout_s=0.5)
    sockets.add(late_out)  # a route that got its socket while the worker stopped
    assert late_out.done.wait(5) and late.closed_with == (GOING_AWAY, "stopping")
    done = threading.Timer(0.1, lambda: (sockets.discard(outs[1]), sockets.discard(late_out)))
    done.start()
    assert sockets.wait_closed(5) == 0
