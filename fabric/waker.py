"""Waking a reactor from another thread: an inproc PUSH/PULL pair.

The reactor polls ``waker.sock`` (the PULL end); any thread calls ``wake()``. The PUSH end has a
high-water mark of one, so wake-ups coalesce and ``wake()`` never blocks.

Thread-safety: ``wake`` is thread-safe; ``sock`` belongs to the reactor's thread.
"""

from __future__ import annotations

import itertools
import threading

import zmq

from fabric.zmq_io import send_frames

_ids = itertools.count()
_WAKE = (b"",)


class Waker:
    def __init__(self, ctx: zmq.Context, name: str) -> None:
        addr = f"inproc://loom-wake-{name}-{id(self)}-{next(_ids)}"
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(addr)
        self._push = ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, 1)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(addr)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                send_frames(self._push, _WAKE)
            except zmq.Again:
                pass  # a wake-up is already pending

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._push.close(0)
        self.sock.close(0)
