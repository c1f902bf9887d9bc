"""The gateway's gunicorn worker: gthread's ThreadWorker with each request's read watched.

A thread that takes a request from a connection registers the connection's socket with the
app's ``ReadWatch`` (webui/read_deadline.py: the headers due within
``gateway.request_read_timeout_ms``, the body at a minimum rate) and ends the watch when it is
done with the request -- before gunicorn closes the socket or puts it back to wait for the next
request. Only ``handle`` (one request, on a pool thread) is touched: the same method in every
gunicorn release since the gthread worker has had a thread pool.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from webui.read_deadline import EXTENSION, ReadWatch


class GatewayWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        watch: ReadWatch | None = getattr(self.wsgi, "extensions", {}).get(EXTENSION)
        key = watch.watch(conn.sock) if watch is not None else None
        try:
            return super().handle(conn)
        finally:
            if watch is not None:
                watch.unwatch(key)
