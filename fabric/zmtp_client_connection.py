"""The dealer's connection: from an endpoint to a socket that has completed the ZMTP handshake,
and from a lost connection to the next one.

``ConnectionMixin`` is that half of ``ZmtpDealer`` (fabric/zmtp_client.py), over the dealer's
own state: the endpoint's host and port (``connect_address``), the host name's resolution on a
thread of its own (``Resolution``), the non-blocking connect, the socket's readiness (the
connect done, output drained, input to read), the handshake (the peer's READY, within
``HANDSHAKE_IVL_MS``) and a lost connection -- dropped with what it had not sent, its
``on_written`` hooks told, made again after the reconnect interval and its backoff. The states
a connection goes through (``_IDLE`` to ``_CLOSED``) are defined here.

Not thread-safe: part of ZmtpDealer, owned by the reactor's thread; a ``Resolution`` runs on a
thread of its own and hands its answer over through ``done``.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable

import zmq

from fabric import protocol as P
from fabric.buffers import OwnedFrame
from fabric.reactor import Reactor, Timer
from fabric.tcp_port import Outbox, resolve
from fabric.zmtp_codec import ProtocolViolation, parse_ready, pong_for

# the dealer's logger, as before this half had a module of its own: hosts configure one
log = logging.getLogger("fabric.zmtp_client")

_POLLIN, _POLLOUT, _POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)
HANDSHAKE_IVL_MS = 30_000   # libzmq's ZMQ_HANDSHAKE_IVL default

_IDLE, _CONNECTING, _HANDSHAKE, _READY, _CLOSED = range(5)


def connect_address(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (``[v6]`` in brackets) as a host and port to connect to; a
    malformed endpoint is a ``zmq.ZMQError`` (EINVAL), as libzmq's connect raised it."""
    host, _, port_text = endpoint[6:].rpartition(":")
    if not endpoint.startswith("tcp://") or not host or host == "*" or not port_text.isdigit() \
            or not 0 < int(port_text) <= 65535:
        raise zmq.ZMQError(errno.EINVAL, f"not a tcp://host:port endpoint to connect to: {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


RESOLVE_POLL_MS = 5  # how often a connection waiting for its host name looks for the answer


class Resolution:
    """One host name's resolution, on a daemon thread (a resolver that never answers must not
    hold up the process's exit either); an IP address is taken at once, with no thread.
    ``done`` is set when ``address`` or ``error`` is there."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.address: tuple | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        if _is_address(host):
            self._run()
        else:
            threading.Thread(target=self._run, name=f"loom-resolve-{host}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.address = resolve(self.host, self.port)
        except (OSError, UnicodeError) as e:
            # kept for its text and errno, without its traceback: that holds this frame, whose
            # ``self`` keeps the error -- a reference cycle
            self.error = e.with_traceback(None)
        self.done.set()


def _is_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except (OSError, ValueError):
            pass
    return False


def connect_errno(endpoint: str, wait_ms: int) -> int | None:
    """The errno a connect to ``endpoint`` ends with now (0: it was taken), or None when it
    does not end within ``wait_ms`` (a host that does not answer; a name not resolved by then).
    For a caller whose transport failed a connect without saying why (libzmq's socket monitor
    reports a failed connect as the descriptor's EVENT_CLOSED, with no errno): one connect of
    its own, closed at once."""
    end_s = time.monotonic() + wait_ms / 1000
    try:
        host, port = connect_address(endpoint)
    except zmq.ZMQError:
        return errno.EINVAL
    resolution = Resolution(host, port)
    if not resolution.done.wait(max(0.0, end_s - time.monotonic())):
        return None
    if resolution.address is None:
        return getattr(resolution.error, "errno", None) or errno.EADDRNOTAVAIL
    family, address = resolution.address
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code != errno.EINPROGRESS:
            return code
        # poll, not select: select refuses a descriptor past FD_SETSIZE (1024), which a busy
        # process (a gateway with many clients) has
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        ready = poller.poll(max(0.0, end_s - time.monotonic()) * 1000)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else None


class ConnectionMixin:
    """``ZmtpDealer``'s connection, handshake and reconnects. Part of ZmtpDealer (its state is
    the dealer's own)."""

    SOCKET_TYPE: bytes
    PEER_SOCKET_TYPES: tuple[bytes, ...]
    # the dealer's state this half uses (set by ZmtpDealer.__init__)
    reactor: Reactor
    on_lost: Callable[[], None] | None
    on_refused: Callable[[int], None] | None
    refused: bool
    connect_error: int
    endpoint: str
    counters: Counter[str]
    host: str
    port: int
    _state: int
    _sock: socket.socket | None
    _fd: int
    _outbox: Outbox
    _waiting: deque[tuple[list, list[int], Callable[[bool], None] | None]]
    _in: bytearray
    _body: OwnedFrame | None
    _frames: list[bytes]
    _greeted: bool
    _reconnect_ms: int
    _reconnect_max_ms: int
    _messages_per_pass: int
    _budget: int
    _address: tuple | None
    _resolving: Resolution | None
    _timer: Timer | None
    _handshake_timer: Timer | None
    _resume: Timer | None
    _queued_ends: deque[int]
    _written_hooks: deque[tuple[int, Callable[[bool], None]]]
    _queued_total: int
    _flushed_total: int
    _hello: bytes

    if TYPE_CHECKING:  # ZmtpDealer's, never these
        def _write(self, pieces: list, sizes: list[int], on_written: Callable[[bool], None] | None = None) -> None: ...
        def _read(self) -> None: ...

    # -- the connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        self._timer = None
        if self._state == _CLOSED:
            return
        if self._address is None:  # resolved once, and again after a connect to it failed
            if self._resolving is None:
                self._resolving = Resolution(self.host, self.port)
            if not self._resolving.done.is_set():
                self._timer = self.reactor.call_later(RESOLVE_POLL_MS, self._connect)
                return
            resolution, self._resolving = self._resolving, None
            if resolution.error is not None:  # a name that does not resolve (yet), or that the
                # resolver cannot even encode (a label over 63 bytes): tried again, as libzmq does
                self.counters["resolve_failed"] += 1
                self._retry_later(f"cannot resolve {self.endpoint}: {resolution.error}")
                return
            self._address = resolution.address
        family, address = self._address
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:  # out of descriptors: tried again
            self._retry_later(f"cannot connect to {self.endpoint}: {e}")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._address = None
            self._retry_later(f"cannot connect to {self.endpoint}: {errno.errorcode.get(code, code)}")
            self._connect_failed(code)
            return
        self._sock, self._fd = sock, sock.fileno()
        self._state = _CONNECTING
        # a request made now waits for this connect, which the node (listening again) may take
        self.refused = False
        self.reactor.add_descriptor(self._fd, self._on_ready, _POLLOUT)

    def _on_ready(self, ready: int) -> None:
        if self._state == _CONNECTING:
            assert self._sock is not None
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._address = None  # the name may point elsewhere by the next attempt
                self._lost(f"cannot connect to {self.endpoint}: {errno.errorcode.get(code, code)}")
                self._connect_failed(code)
                return
            self._state = _HANDSHAKE
            self._handshake_timer = self.reactor.call_later(HANDSHAKE_IVL_MS, self._handshake_expired)
            self.reactor.modify_descriptor(self._fd, _POLLIN)
            self._write([self._hello], [len(self._hello)])
            return
        if ready & _POLLOUT:
            assert self._sock is not None
            try:
                self._flushed_total += self._outbox.flush(self._sock)
            except OSError as e:
                self._lost(f"send failed: {e}")
                return
            ends = self._queued_ends
            while ends and ends[0] <= self._flushed_total:
                ends.popleft()
            hooks = self._written_hooks
            while hooks and hooks[0][0] <= self._flushed_total:
                hooks.popleft()[1](True)
            if not self._outbox.bytes:
                self.reactor.modify_descriptor(self._fd, _POLLIN)
        if ready & (_POLLIN | _POLLERR):
            self._budget = self._messages_per_pass
            self._read()

    def _on_command(self, body: bytes) -> None:
        if self._state == _HANDSHAKE:
            props = parse_ready(body)
            peer_type = props.get(b"socket-type")
            if peer_type not in self.PEER_SOCKET_TYPES:
                raise ProtocolViolation(f"socket type {peer_type!r} cannot answer a {self.SOCKET_TYPE.decode()}")
            self._state = _READY
            self._reconnect_ms = P.RECONNECT_IVL_MS
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
            self._handshake_done()
            return
        pong = pong_for(body)
        if pong is not None:
            self._write([pong], [len(pong)])

    def _handshake_done(self) -> None:
        """The peer's READY was accepted: what waited for the connection goes out."""
        while self._waiting and self._state == _READY:  # a failed send ends the connection:
            self._write(*self._waiting.popleft())      # the rest wait for the next one

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._state == _HANDSHAKE:
            self.counters["handshake_timeouts"] += 1
            self._lost(f"no handshake within {HANDSHAKE_IVL_MS} ms")

    def _lost(self, why: str) -> None:
        """The connection failed or ended: drop it (and what it had not sent yet) and make a
        new one after the reconnect interval."""
        log.debug("%s: %s", self.endpoint, why)
        self.counters["disconnects"] += 1
        was_ready = self._state == _READY
        self._drop()
        self._retry_later(why)
        if was_ready and self.on_lost is not None:
            self.on_lost()

    def _connect_failed(self, code: int) -> None:
        """A connect failed with errno ``code`` (ECONNREFUSED: the peer's host is up and nothing
        listens on its port; EHOSTUNREACH, ETIMEDOUT...: the host is out of reach): ``refused``
        until the next is under way, ``connect_error`` says why, and ``on_refused`` is told."""
        self.refused, self.connect_error = True, code
        if self.on_refused is not None and self._state != _CLOSED:
            self.on_refused(code)

    def connect_now(self) -> None:
        """A caller wants the peer now (a request that would rather fail than wait, after the
        last connect failed): the connect the reconnect timer waits for is made at once. The
        backoff is kept for the dealer's own retries; the caller's retries pace these."""
        if self._state == _IDLE and self._timer is not None and self._resolving is None:
            self._timer.cancel()
            self._connect()

    def _drop(self) -> None:
        if self._sock is not None:
            self.reactor.remove_descriptor(self._fd)
            self._sock.close()
            self._sock, self._fd = None, -1
        for timer in (self._handshake_timer, self._resume):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._resume = None
        self._outbox.clear()
        self._queued_ends.clear()
        self._queued_total = self._flushed_total = 0
        # told after the connection's state is reset: a hook may send again (to _waiting)
        dropped = [hook for _, hook in self._written_hooks]
        self._written_hooks.clear()
        if self._waiting and any(hook is not None for _, _, hook in self._waiting):
            dropped += [hook for _, _, hook in self._waiting if hook is not None]
            self._waiting = deque(w for w in self._waiting if w[2] is None)
        self._in = bytearray()
        self._body = None
        self._frames = []
        self._greeted = False
        if self._state != _CLOSED:
            self._state = _IDLE
        for hook in dropped:
            hook(False)

    def _retry_later(self, why: str) -> None:
        if self._state == _CLOSED or self._timer is not None:
            return
        self._timer = self.reactor.call_later(self._reconnect_ms, self._connect)
        if self._reconnect_max_ms > P.RECONNECT_IVL_MS:  # else no backoff, as libzmq
            self._reconnect_ms = min(2 * self._reconnect_ms, self._reconnect_max_ms)
