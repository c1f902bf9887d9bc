"""A WebSocket's send queue (webui/ws.py's routes write to it, one thread sends).

Everything a WebSocket client is sent goes through its ``Outbox``: a bounded queue
(``gateway.ws_send_queue_max`` messages) drained by one sender thread. When the queue stays
full for ``gateway.ws_slow_client_timeout_ms`` the client is too slow: the queue is dropped,
the client gets close code 1013 ("try again later") with a reason, and if it does not even
read that within ``CLOSE_GRACE_S`` its socket is shut down. So a slow client costs at most
its queue and its (bounded) socket buffers, never the gateway's memory.

Thread-safety: ``put`` and ``close`` from any thread; the sender thread is the Outbox's own.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import Any

from simple_websocket import ConnectionClosed

from webui.json_text import dumps

CLOSE_GRACE_S = 5.0
GOING_AWAY_FLUSH_S = 1.0  # a route that answers what it took (/ws/produce): its answers' time to go out at 1001
GOING_AWAY = 1001        # the gateway is stopping: reconnect (to it once restarted, or another)
TRY_AGAIN_LATER = 1013   # the client cannot keep up
POLICY = 1008            # policy violation: auth, bad messages, too many unanswered messages
# what one client's send queue may hold, whatever the message count (a message larger than
# this is still taken when the queue is empty): a consume message (webui/ws_consume.py) can carry
# FETCH_BYTES_MAX, 2 MiB
OUTBOX_BYTES_MAX = 4 * 1024 * 1024


class Closed(Exception):
    """The connection is over (closed by either side); the route returns."""


class Outbox:
    """A send queue bounded in messages (``queue_max``) and bytes (``OUTBOX_BYTES_MAX``), and
    the thread that drains it into the WebSocket. Thread-safe."""

    def __init__(self, ws: Any, queue_max: int, slow_timeout_s: float) -> None:
        self.ws, self.queue_max, self.slow_timeout_s = ws, queue_max, slow_timeout_s
        self._q: deque[tuple[str, Any]] = deque()  # JSON text, its mark
        self._chars = 0  # of the texts in _q
        self._cond = threading.Condition()
        self._closing: tuple[int, str] | None = None
        self._sending = False  # a message taken from _q is being written
        self.done = threading.Event()
        self.dropped_messages = 0
        # the marks of messages that went out whole (put(..., mark=)), for take_sent_marks
        self._sent_marks: list[Any] = []
        # set by a route whose every message taken must be answered (/ws/produce: were the
        # records written?): at going away it finishes the message under way, its answers go
        # out, then it closes; else the close drops the queue at once (``go_away``)
        self.answers_first = False
        self.going_away: str | None = None  # the reason, once the gateway is stopping
        self._thread = threading.Thread(target=self._run, name="loom-ws-sender", daemon=True)
        self._thread.start()

    def put(self, message: dict, mark: Any = None) -> None:
        """Queue a message; waits while the queue is full, up to slow_timeout_s, then closes
        the connection with 1013 and raises Closed. ``mark`` (not None) comes back from
        ``take_sent_marks`` once the message went out whole."""
        text = dumps(message).decode()
        deadline = time.monotonic() + self.slow_timeout_s
        with self._cond:
            while self._full(len(text)) and self._closing is None and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closing is not None or self.done.is_set():
                raise Closed()
            if not self._full(len(text)):
                self._q.append((text, mark))
                self._chars += len(text)
                self._cond.notify_all()
                return
            queued, chars = len(self._q), self._chars
        self.close(TRY_AGAIN_LATER, f"client too slow: {queued} messages ({chars} bytes) waited over "
                                    f"{self.slow_timeout_s * 1000:.0f} ms")
        raise Closed()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every message queued so far went out (True), the outbox closed or
        ``timeout_s`` passed (False): what must reach the client before a close that may follow."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._q or self._sending) and self._closing is None and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._q and not self._sending

    def take_sent_marks(self) -> list[Any]:
        """The marks of the messages sent since the last call, in order."""
        with self._cond:
            marks, self._sent_marks = self._sent_marks, []
        return marks

    def _full(self, chars: int) -> bool:
        """Whether a text of ``chars`` must wait (never when the queue is empty). Under _cond."""
        return bool(self._q) and (len(self._q) >= self.queue_max or self._chars + chars > OUTBOX_BYTES_MAX)

    def close(self, code: int, reason: str) -> None:
        """Drop what is queued, send a close frame after the message being sent, and cut the
        socket when the client does not take it within CLOSE_GRACE_S."""
        self.begin_close(code, reason)
        if not self.done.wait(CLOSE_GRACE_S):
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.done.wait(CLOSE_GRACE_S)

    def go_away(self, reason: str) -> None:
        """The gateway is stopping: close with 1001 and ``reason`` -- at once, or, with
        ``answers_first``, once the route has answered what it took (it sees ``going_away``)."""
        self.going_away = reason
        if not self.answers_first:
            self.begin_close(GOING_AWAY, reason)

    def begin_close(self, code: int, reason: str) -> None:
        """``close`` without waiting for the client: the queue dropped, the close frame next."""
        with self._cond:
            if self._closing is None:
                self.dropped_messages += len(self._q)
                self._q.clear()
                self._chars = 0
                self._closing = (code, reason[:120])
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._q and self._closing is None:
                        self._cond.wait()
                    if self._closing is not None:
                        code, reason = self._closing
                        break
                    text, mark = self._q.popleft()
                    self._chars -= len(text)
                    self._sending = True
                    self._cond.notify_all()
                self.ws.send(text)
                with self._cond:
                    self._sending = False
                    if mark is not None:
                        self._sent_marks.append(mark)
                    self._cond.notify_all()
            if self.ws.connected:
                self.ws.close(code, reason)
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.done.set()
            with self._cond:
                self._cond.notify_all()


class OpenSockets:
    """The Outboxes of the WebSockets open in this worker, so that a stopping worker can close
    them all with 1001 ("going away", RFC 6455 7.4.1) instead of leaving their routes running
    until its hard exit cuts them without a close frame. Thread-safe."""

    def __init__(self) -> None:
        self._open: set[Outbox] = set()
        self._cond = threading.Condition()
        self._going_away: str | None = None

    def add(self, out: Outbox) -> None:
        """Count ``out`` as open; one opened after ``going_away`` is closed at once."""
        with self._cond:
            self._open.add(out)
            reason = self._going_away
        if reason is not None:
            out.go_away(reason)

    def discard(self, out: Outbox) -> None:
        with self._cond:
            self._open.discard(out)
            self._cond.notify_all()

    def going_away(self, reason: str) -> None:
        """Close every open socket (and any opened from now on) with 1001 and ``reason``
        (``Outbox.go_away``), without waiting: safe in a signal handler of a thread that serves
        no WebSocket."""
        with self._cond:
            self._going_away = reason
            open_now = list(self._open)
        for out in open_now:
            out.go_away(reason)

    def wait_closed(self, wait_s: float) -> int:
        """Wait up to ``wait_s`` for every route to end (a /ws/consume stream commits what went
        out and leaves its group first); how many were still open at the deadline."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._open and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return len(self._open)
