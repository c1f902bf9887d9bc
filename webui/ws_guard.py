"""What one WebSocket client may hold in the gateway: the messages it sent that its route has
not taken yet (``InboxGate``), and sockets counted per name (``SocketsPer``): per client
address, those still waiting for their key; per key, those open. Used by webui/ws.py.

simple_websocket's reader thread reads the socket and queues every complete message in
``ws.input_buffer`` without bound, whatever the route takes; with permessage-deflate (which
it always accepts) a frame of a few KiB can inflate to a whole ``MESSAGE_BYTES_MAX`` message.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

INBOX_MESSAGES_MAX = 64  # produce messages received and not yet answered (/ws/produce closes past it)
INBOX_BYTES_MAX = 4 * 1024 * 1024  # received messages waiting for the route (one larger still comes in)
INBOX_WAIT_S = 0.01      # how often a held-back reader looks whether the route took a message


class InboxGate:
    """Stands in for a simple_websocket connection's socket (``ws.sock``) so that its reader
    thread reads from the network only while the messages waiting in ``ws.input_buffer`` are
    within INBOX_MESSAGES_MAX + 1 messages and INBOX_BYTES_MAX bytes: a client that sends
    faster than its route takes messages is held back by TCP, never queued in memory. (The
    reader looks ``ws.sock`` up at every read, so the gate holds from its next read on.)

    It also writes each frame whole: the reader thread sends pings, pongs and close answers
    while the route's sender thread may be blocked in the middle of a large message (a slow
    client), and a blocking send gives the socket's lock up while it waits for buffer space,
    so a ping's bytes landed inside the message's payload and the client lost the stream.
    Everything else goes to the socket. Thread-safe: the reader thread calls ``recv``, any
    thread ``send``."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._sock = ws.sock
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> int:
        """Write ``data`` (one or more whole frames) before any other thread's."""
        with self._send_lock:
            self._sock.sendall(data)
        return len(data)

    def _full(self) -> bool:
        waiting = list(self._ws.input_buffer)  # appended by the reader, popped by the route
        return len(waiting) > INBOX_MESSAGES_MAX or sum(len(m) for m in waiting) >= INBOX_BYTES_MAX

    def recv(self, size: int) -> bytes:
        while self._ws.connected and self._full():
            time.sleep(INBOX_WAIT_S)  # the reader's own thread; the route pops without telling
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class SocketsPer:
    """Per name (a client address, a key's name), the sockets counted, at most ``per_name_max``
    each. Entries go when their count is back to 0, so the table holds at most one per socket
    counted. Thread-safe (one lock)."""

    def __init__(self, per_name_max: int) -> None:
        self.per_name_max = per_name_max
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def enter(self, name: str) -> Callable[[], None] | None:
        """Count one more socket of ``name``: the function that stops counting it (once, however
        often it is called), or None when ``name`` has ``per_name_max`` already."""
        with self._lock:
            n = self._counts.get(name, 0)
            if n >= self.per_name_max:
                return None
            self._counts[name] = n + 1
        left = threading.Event()

        def leave() -> None:
            if left.is_set():
                return
            left.set()
            with self._lock:
                n = self._counts[name] - 1
                if n:
                    self._counts[name] = n
                else:
                    del self._counts[name]
        return leave
