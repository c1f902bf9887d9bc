"""What one WebSocket client may hold in the gateway: the messages it sent that its route has
not taken yet (``InboxGate``), and sockets counted per name (``SocketsPer``): per client
address, those still waiting for their key; per key, those open. Used by webui/ws.py.

simple_websocket's reader thread reads the socket and queues every complete message in
``ws.input_buffer`` without bound, whatever the route takes; with permessage-deflate (which
it always accepts) a frame of a few KiB can inflate to a whole ``MESSAGE_BYTES_MAX`` message.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any, Callable

from wsproto.connection import ConnectionState

INBOX_MESSAGES_MAX = 64  # messages received and not yet taken by the route (past it, TCP holds the client back)
INBOX_BYTES_MAX = 4 * 1024 * 1024  # received messages waiting for the route (one larger still comes in)
INBOX_WAIT_S = 0.01      # how often a held-back reader looks whether the route took a message
LINGER_S = 2.0           # a closing socket reads and drops its client's bytes this long at most, then shuts down


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

    And it closes by lingering. A socket closed with bytes of its client unread makes the
    kernel answer with a reset, which throws away what the client had not read yet: a client
    that sent on while the gateway refused it (1008, 1013) lost the close frame and its reason
    and saw a broken pipe or 1006. So ``close`` (the reader thread's, when its loop ends) first
    stops writing (a FIN after the close frame), then reads and drops the client's bytes until
    the client closes its side or LINGER_S pass, and only then shuts the socket down; and the
    route's thread waits for that before it returns the socket to gunicorn (``route_ended``),
    which closes it and would otherwise do so under the reader. Everything else goes to the
    socket. Thread-safe: the reader thread calls ``recv`` and ``close``, any thread ``send``."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._sock = ws.sock
        self._send_lock = threading.Lock()
        self._route_done = threading.Event()  # set by route_ended: after the close frame went out

    def send(self, data: bytes) -> int:
        """Write ``data`` (one or more whole frames) before any other thread's."""
        with self._send_lock:
            self._sock.sendall(data)
        return len(data)

    def _full(self) -> bool:
        waiting = list(self._ws.input_buffer)  # appended by the reader, popped by the route
        return len(waiting) > INBOX_MESSAGES_MAX or sum(len(m) for m in waiting) >= INBOX_BYTES_MAX

    def recv(self, size: int) -> bytes:
        # once the route is done (its close frame written) it takes no more messages, and
        # simple_websocket's reader sets ``connected`` back to True at each message it reads
        # after the close: neither this wait nor the reader's loop would end
        while self._ws.connected and self._full() and not self._route_done.is_set():
            time.sleep(INBOX_WAIT_S)  # the reader's own thread; the route pops without telling
        if self._route_done.is_set():
            return b""  # ends the reader's loop: ``close`` drops what the client still sends
        return self._sock.recv(size)

    def close(self) -> None:
        """Close lingering: no more writes, the client's bytes dropped until it closes its side
        or LINGER_S pass, then the socket shut down. The descriptor is left to the server, which
        owns it and closes it once the route is done: gunicorn (27) counted a socket it found
        closed already as gone twice."""
        sock = self._sock
        try:
            sock.shutdown(socket.SHUT_WR)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            deadline = time.monotonic() + LINGER_S
            while (left := deadline - time.monotonic()) > 0 and poller.poll(left * 1000):
                if not sock.recv(65536):
                    break  # the client closed its side
        except (OSError, ValueError):  # ValueError: the server closed the descriptor meanwhile (fd -1)
            pass  # reset, or closed already: nothing left to wait for
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def route_ended(self) -> None:
        """On the route's thread, once it has closed the WebSocket: wait until the reader thread
        has shut the socket down (at most LINGER_S; a client that neither answers the close
        frame nor closes its side is then cut, which ends the reader's read and so its loop)."""
        reader = getattr(self._ws, "thread", None)
        state = getattr(getattr(self._ws, "ws", None), "state", None)  # wsproto's, which no race sets back
        if reader is None or state not in (ConnectionState.LOCAL_CLOSING, ConnectionState.CLOSED):
            return  # not closed by the route: as before, flask-sock closes it
        self._route_done.set()
        reader.join(LINGER_S)
        if reader.is_alive():
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            reader.join(LINGER_S)

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
