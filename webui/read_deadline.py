"""A deadline for reading each HTTP request: a client that stops sending cannot hold a thread.

The gateway's gthread worker reads a request's headers and body on one of
``gateway.worker_threads`` threads, blocking. A client that sent part of a request and then
nothing -- a ``Content-Length`` larger than the body it sends (a client counting characters
instead of bytes), headers never finished, a stalled network -- held its thread until it closed
the connection, and as many such connections as threads (48 by default) took every one: REST,
``/health`` and the dashboard stopped answering, and the monitor, which probes ``/health/live``,
restarted the gateway.

Now every request is watched from its first byte on a thread (``ReadWatch.watch``, called by
the worker: nodes/gateway/worker.py) until the app has its whole body (``wrap``: at once for a
request without a body -- a GET, a WebSocket upgrade, a long poll: a route's own waits are not the
client's). The headers must arrive within ``gateway.request_read_timeout_ms``; each byte of the
body buys ``1 / BODY_MIN_BYTES_PER_S`` s more, so a large body needs only a steady minimum rate
(Apache's mod_reqtimeout does the same). The body's time runs only while the app reads it: what
the app does before (a fault hold) or instead (a route that never reads a body it was sent, a
GET's ``{}`` on a long poll) is not the client's: cut for it, a body that had all arrived was
answered 408, and a long poll's connection was shut. A request still unread at its deadline is cut: its
socket's reading side is shut (``shutdown(SHUT_RD)``), which ends the thread's blocked ``recv`` at
once with end-of-file.
- Cut in its headers, there is no request to answer: the connection is closed.
- Cut in its body, the request is answered 408 (error_code 40802) with ``Connection: close``
  (``_closing_when_cut``), and the connection is closed; nothing of it reached the cluster.
Cuts are counted in ``loom_gateway_requests_cut_total{phase}``.

Thread-safe: request threads watch, pause, resume and end their requests; one watcher thread
(started by the first ``watch``, so in the worker process after gunicorn's fork) cuts them. The
watcher cuts under the lock, and a request's thread ends its watch under the same lock before gunicorn
closes its socket. A socket closed while its request is still on its thread (a WebSocket's, by
simple_websocket's reader thread when the client leaves) is a socket object whose descriptor is
-1 from then on: shutting it fails and cannot reach the descriptor's next owner, and its watch
ends only its own entry, never that of a new connection given the same descriptor meanwhile.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from webui.errors import ApiError

log = logging.getLogger(__name__)

BODY_MIN_BYTES_PER_S = 64 * 1024  # a body slower than this on average is cut (16 MiB: 256 s beyond the deadline)
READ_PIECE_BYTES = 16 * 1024      # a body is read in pieces this big: each buys its time when it is whole
EXTENSION = "loom.read_watch"  # the Flask app's extensions key of its ReadWatch, for the worker
HEADERS = "headers"
BODY = "body"


class _Read:
    """One request being read: the socket it comes on (and its descriptor when watched), its
    deadline, its phase."""

    __slots__ = ("sock", "fd", "deadline", "left_s", "phase", "cut")

    def __init__(self, sock: Any, fd: int, deadline: float) -> None:
        self.sock = sock
        self.fd = fd
        self.deadline = deadline  # inf while the app is not waiting on the client's bytes
        self.left_s = 0.0  # the client's time left, kept while the deadline is off
        self.phase = HEADERS
        self.cut = False


class ReadWatch:
    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        assert timeout_s > 0, timeout_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cond = threading.Condition()
        self._reads: dict[int, _Read] = {}  # socket file descriptor -> its request being read
        self._waiting_until: float | None = None  # the watcher's wake-up; None: it waits for a watch
        self._thread: threading.Thread | None = None
        self.cuts = {HEADERS: 0, BODY: 0}

    # -- the worker's side (nodes/gateway/worker.py) --------------------------------------------

    def watch(self, sock: Any) -> _Read | None:
        """A thread takes a request from ``sock``: its headers are due within the timeout.
        Returns the key for ``unwatch`` (None: the socket is closed already, nothing watched)."""
        try:
            fd = sock.fileno()
        except OSError:
            return None
        if fd < 0:
            return None
        deadline = self._clock() + self.timeout_s
        read = _Read(sock, fd, deadline)
        with self._cond:
            self._reads[fd] = read  # one left by a socket closed under its request is let go
            self._wake_by(deadline)
        return read

    def unwatch(self, key: _Read | None) -> None:
        """The request's thread is done with it (before gunicorn closes its socket). Its socket
        may have been closed already (a WebSocket's, by simple_websocket's reader thread when
        the client left) and its descriptor taken by a new connection whose request is watched
        now: only this request's own entry is removed."""
        if key is not None:
            with self._cond:
                if self._reads.get(key.fd) is key:
                    del self._reads[key.fd]

    # -- the app's side (``wrap``) -----------------------------------------------------------------

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """WSGI middleware, outermost: a request without a body is no longer watched when the
        app gets it; one with a body is watched until the app has read it whole."""
        def app_with_deadline(environ: dict, start_response: Any) -> Iterable[bytes]:
            read = self._read_of(environ.get("gunicorn.socket"))
            if read is not None:
                length = _content_length(environ)
                if length == 0:
                    self._paused(read, 0, whole=True)
                else:
                    with self._cond:
                        read.phase = BODY
                        self._pause(read, 0)  # until the app reads: its own work is not the client's
                    environ["wsgi.input"] = _WatchedBody(environ["wsgi.input"], self, read, length)
                start_response = _closing_when_cut(start_response, read)
            return app(environ, start_response)
        return app_with_deadline

    def _read_of(self, sock: Any) -> _Read | None:
        if sock is None:
            return None
        try:
            fd = sock.fileno()
        except OSError:
            return None
        with self._cond:
            read = self._reads.get(fd)
        return read if read is not None and read.sock is sock else None

    def _pause(self, read: _Read, got: int) -> None:
        """Under the lock: the app is not waiting on the client now (``got`` bytes of the body
        came, each buying its time): the deadline is off, the time left kept for ``_resume``."""
        if read.deadline != float("inf"):
            read.left_s = read.deadline - self._clock() + got / BODY_MIN_BYTES_PER_S
            read.deadline = float("inf")

    def _resume(self, read: _Read) -> None:
        """The app reads the body: the client's time runs again."""
        with self._cond:
            if read.deadline == float("inf") and not read.cut:
                read.deadline = self._clock() + read.left_s
                self._wake_by(read.deadline)

    def _paused(self, read: _Read, got: int, whole: bool) -> None:
        """The app has stopped reading for now (``_pause``), or has the whole body (``whole``:
        no longer watched)."""
        with self._cond:
            if whole:
                read.deadline = float("inf")
            else:
                self._pause(read, got)

    def _wake_by(self, deadline: float) -> None:
        """Under the lock: the watcher (started by the first watch) wakes by ``deadline``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="loom-read-deadline", daemon=True)
            self._thread.start()
        elif self._waiting_until is None or deadline < self._waiting_until:
            self._cond.notify()

    # -- the watcher ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    now = self._clock()
                    due = [r for r in self._reads.values() if r.deadline <= now and not r.cut]
                    for read in due:
                        self._cut(read)
                    upcoming = [r.deadline for r in self._reads.values() if not r.cut and r.deadline != float("inf")]
                    self._waiting_until = min(upcoming) if upcoming else None
                    self._cond.wait(None if self._waiting_until is None else max(0.0, self._waiting_until - now))
            except Exception:  # a thread of its own: a bug here is logged, and the watch goes on
                log.exception("the request read deadline's watcher failed")
                time.sleep(1.0)

    def _cut(self, read: _Read) -> None:
        """Under the lock: end the blocked read of ``read``'s thread (end-of-file at once)."""
        read.cut = True
        self.cuts[read.phase] += 1
        try:
            read.sock.shutdown(socket.SHUT_RD)
        except OSError:  # the client closed it already: its thread sees that by itself
            pass

    def samples(self) -> Iterator[tuple[str, tuple, float]]:
        """``loom_gateway_requests_cut_total{phase}``: a collector of the control node's registry."""
        with self._cond:
            cuts = dict(self.cuts)
        for phase, n in cuts.items():
            yield "loom_gateway_requests_cut_total", (phase,), float(n)


class _WatchedBody:
    """``wsgi.input`` of a watched request: each read moves its deadline on by the bytes it got;
    a read cut short by the deadline raises 408 (40802); the whole body read ends the watch."""

    def __init__(self, stream: Any, watch: ReadWatch, read: _Read, length: int | None) -> None:
        self._stream = stream
        self._watch = watch
        self._read = read
        self._left = length  # None: chunked, until the stream ends

    def read(self, size: int | None = -1) -> bytes:
        """Read in pieces of at most READ_PIECE_BYTES: a read blocks until its piece is whole,
        and only a piece that arrived moves the deadline on."""
        want = None if size is None or size < 0 else size
        pieces = []
        while want is None or want > 0:
            asked = READ_PIECE_BYTES if want is None else min(READ_PIECE_BYTES, want)
            piece = self._took(self._pull(self._stream.read, asked), asked)
            if not piece:
                break
            pieces.append(piece)
            if want is not None:
                want -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readline(self, size: int | None = -1) -> bytes:
        return self._took(self._pull(self._stream.readline, size), None)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        while line := self.readline():
            lines.append(line)
            if hint is not None and 0 < hint <= sum(map(len, lines)):
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _pull(self, read: Callable[[int | None], bytes], size: int | None) -> bytes:
        """``read(size)`` of the stream. gunicorn's reader of a chunked body raises where one
        of a known length reads short: NoMoreData (an OSError) at end-of-file inside a chunk,
        a ParseException for framing that is no chunked encoding. Both are the client's --
        cut by the deadline (408), gone, or sending nonsense (400) -- and got to Flask's
        routes as a 500, taken for a bug: the worker stopped."""
        self._watch._resume(self._read)
        try:
            return read(size)
        except OSError as e:
            if self._read.cut:
                raise self._too_late() from e
            raise ApiError(40001, ClientDisconnected.description) from e
        except ParseException as e:
            raise ApiError(40001, f"the body's chunked encoding is invalid ({type(e).__name__})") from e

    def _too_late(self) -> ApiError:
        return ApiError(40802, f"the request's body did not arrive in time: its headers are due within "
                               f"{self._watch.timeout_s:g} s and each {BODY_MIN_BYTES_PER_S} bytes of its "
                               "body buy 1 s more")  # its connection closes: _closing_when_cut

    def _took(self, data: bytes, size: int | None) -> bytes:
        got = len(data)
        if self._left is not None:
            self._left -= got
        if self._read.cut and (self._left is None or self._left > 0):
            raise self._too_late()
        # the whole body is here (or the client ended it), else the app does something else
        # until its next read
        self._watch._paused(self._read, got, (self._left is not None and self._left <= 0) or (not got and size != 0))
        return data


def _closing_when_cut(start_response: Any, read: _Read) -> Any:
    """``start_response`` that, for a request cut by its deadline, has gunicorn close the
    connection and say so (``Connection: close``). An app's own ``Connection`` header is
    hop-by-hop, which gunicorn drops: the 408 said keep-alive on a connection whose reading
    side is shut, which gunicorn then closed. The answer's ``Response`` is start_response's
    owner, and ``force_close`` is how gunicorn's workers themselves end a connection after it."""
    def start_response_closing(status: str, headers: list, exc_info: Any = None) -> Any:
        if read.cut:
            force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
            if force_close is not None:
                force_close()
        return start_response(status, headers, exc_info)
    return start_response_closing


def _content_length(environ: dict) -> int | None:
    """The body's length: 0 without one, None when chunked (read until it ends)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0
