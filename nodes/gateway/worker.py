"""The gateway's gunicorn worker: gthread's ThreadWorker with each request's read watched.

A thread that takes a request from a connection registers the connection's socket with the
app's ``ReadWatch`` (webui/read_deadline.py: the headers due within
``gateway.request_read_timeout_ms``, the body at a minimum rate) and ends the watch when it is
done with the request -- before gunicorn closes the socket or puts it back to wait for the next
request. Only ``handle`` (one request, on a pool thread) is touched: the same method in every
gunicorn release since the gthread worker has had a thread pool.

The watch starts at the request's first byte. A release whose gthread has no ``wait_for_data``
hands a thread only a connection its poller found readable. One that has it hands a new
connection to a thread at once, which waits up to ``DEFAULT_WORKER_DATA_TIMEOUT`` for its first
byte and, without one, gives it back to the
poller (``_DEFER``): a connection opened ahead of its request (a browser's preconnect, a
client's pool) is no request whose bytes stopped, and watched from the start it was closed at
the deadline and counted as cut. That wait is done here, before the watch, as gunicorn does it.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from webui.read_deadline import EXTENSION, ReadWatch

# both or neither: the releases whose handle waits for a new connection's first byte
_FIRST_BYTE_WAIT_S: float | None = getattr(gthread, "DEFAULT_WORKER_DATA_TIMEOUT", None)
_DEFER: Any = getattr(gthread, "_DEFER", None)


class GatewayWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        watch: ReadWatch | None = getattr(self.wsgi, "extensions", {}).get(EXTENSION)
        if watch is not None and not _first_byte_came(conn):
            return _DEFER
        key = watch.watch(conn.sock) if watch is not None else None
        try:
            return super().handle(conn)
        finally:
            if watch is not None:
                watch.unwatch(key)


def _first_byte_came(conn: Any) -> bool:
    """Whether ``conn`` has something to read, waiting for it as gunicorn's ``handle`` would
    (which then does not wait again: ``data_ready``). True on a release that does not wait."""
    if _FIRST_BYTE_WAIT_S is None or _DEFER is None or not hasattr(conn, "wait_for_data"):
        return True
    if conn.initialized or conn.data_ready:  # a kept-alive or parked connection: readable already
        return True
    return bool(conn.wait_for_data(_FIRST_BYTE_WAIT_S))
