"""The request port's TCP connections, read and written by the node's reactor thread itself.

A libzmq socket hands each chunk of bytes from its I/O thread to the application thread: every
request crossed two threads in the node (the I/O thread woken by the kernel, then the reactor
woken by the I/O thread), and every reply crossed them back. Here the reactor polls the
operating system's sockets directly (``Reactor.add_descriptor``): the kernel wakes the thread
that parses the request, and a reply is written by the thread that made it. Measured on this
machine with a DEALER client: a round trip of 135 µs through a libzmq socket, 93 µs this way.

The port only moves bytes; ``fabric.zmtp.ZmtpServer`` speaks ZMTP over it. It hands the server
the events a ZMQ_STREAM socket would: ``[connection id, b""]`` when a peer connects and when
it goes, ``[connection id, data]`` for bytes (a view onto the port's receive buffer, valid only
during the call: the server copies what it keeps).

Output is all or nothing per message: ``write`` sends what the kernel takes at once and keeps
the rest, in order, until the socket is writable again; a message is refused whole (False)
when the connection's waiting output is at ``OUTPUT_BYTES_MAX`` or all connections' together
at ``OUTPUT_BYTES_TOTAL_MAX`` -- a peer that does not read its replies loses later replies (its
requests time out and are retried), as at a ROUTER's high-water mark, and never half a reply.
Input is bounded by the kernel's buffers: a connection is read at most ``READS_PER_PASS``
times per reactor pass, so one busy peer cannot starve the others, and not at all while its
server has paused it (``pause``/``resume``: the server has more of its messages than one pass
may hand on).

Not thread-safe: owned by the node's reactor thread.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
from collections import deque
from typing import Callable

import zmq

from fabric.reactor import Reactor, Timer
from fabric.zmq_io import _size

log = logging.getLogger(__name__)

RECEIVE_BYTES = 256 * 1024          # one read: a produced batch of up to this size in one call
READS_PER_PASS = 16                 # per connection and reactor pass (4 MiB at most)
ACCEPTS_PER_PASS = 64               # new connections taken per pass
ACCEPT_PAUSE_MS = 100               # no accepting for this long when no descriptor (or memory) is free
LISTEN_BACKLOG = 1024
OUTPUT_BYTES_MAX = 16 * 1024 * 1024        # waiting output of one connection before replies are refused
OUTPUT_BYTES_TOTAL_MAX = 512 * 1024 * 1024  # of all connections together
SEND_PIECES_MAX = 512               # buffers handed to one sendmsg (the kernel takes at most IOV_MAX)

_POLLIN, _POLLOUT, _POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)
# accept failures of that one connection (reset before it was taken; Linux passes its pending
# network errors on, to be retried: accept(2)). Any other (EMFILE, ENFILE, ENOBUFS, ENOMEM) is
# the node's: retried at once it fails again, and the connection waiting in the backlog keeps the
# listening socket ready, so a level-triggered poll would spin on it.
_ACCEPT_CONNECTION_ERRORS = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
                                      "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "EINTR")
    if hasattr(errno, name))

# ``on_stream(frames)``: the events of a ZMQ_STREAM socket, see the module docstring
StreamHandler = Callable[[list], None]


def listen_address(endpoint: str) -> tuple[socket.AddressFamily, tuple]:
    """``tcp://HOST:PORT`` (HOST ``*`` for every interface, ``[v6]`` in brackets) as a family
    and an address to bind. Errors are a ``zmq.ZMQError``, as libzmq's bind raised them (the
    node's start reports them: nodes/run.py): EINVAL for a malformed endpoint, EADDRNOTAVAIL
    for a host that does not resolve."""
    host, _, port_text = endpoint[6:].rpartition(":")
    if not endpoint.startswith("tcp://") or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise zmq.ZMQError(errno.EINVAL, f"not a tcp://host:port endpoint: {endpoint!r}")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "*":
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        return resolve(host, port, passive=True)
    except (OSError, UnicodeError) as e:
        raise zmq.ZMQError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r} in {endpoint!r}: {e}") from None


def resolve(host: str, port: int, *, passive: bool = False) -> tuple[socket.AddressFamily, tuple]:
    """The address of ``host``: an IPv4 one when it has one (as libzmq, whose sockets are
    IPv4 unless told otherwise: a libzmq peer given the same host name finds the same
    address), else its first. Raises OSError (or UnicodeError for a name the resolver cannot
    encode)."""
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    for family, _, _, _, address in infos:
        if family == socket.AF_INET:
            return family, address
    family, _, _, _, address = infos[0]
    return family, address


class _Link:
    """One accepted connection and its waiting output."""

    __slots__ = ("conn_id", "sock", "fd", "outbox", "closed", "broken", "paused")

    def __init__(self, conn_id: bytes, sock: socket.socket) -> None:
        self.conn_id = conn_id
        self.sock = sock
        self.fd = sock.fileno()
        self.outbox = Outbox()
        self.closed = False
        self.broken = False            # a send failed: nothing more is written, the read ends it
        self.paused = False            # not read until resumed (its server has enough for this pass)

    def events(self, output: bool) -> int:
        """What to poll it for: input unless paused (or broken: reading reports the end), and
        output while some waits."""
        return (_POLLIN if not self.paused or self.broken else 0) | (_POLLOUT if output else 0)


class TcpPort:
    def __init__(self, reactor: Reactor, endpoint: str, on_stream: StreamHandler,
                 counters: dict[str, int], *, output_bytes_max: int = OUTPUT_BYTES_MAX,
                 receive_bytes: int | None = None, reads_per_pass: int | None = None) -> None:
        """``output_bytes_max``: one connection's waiting output at which writes to it are refused.
        ``receive_bytes``, ``reads_per_pass``: one read's bytes and a connection's reads per pass
        (``RECEIVE_BYTES``, ``READS_PER_PASS`` unless given): a port whose peers send little
        reads less, so that a peer sending what costs much to parse holds a pass up less."""
        self.reactor = reactor
        self.output_bytes_max = output_bytes_max
        self.reads_per_pass = reads_per_pass
        self.on_stream = on_stream
        self.counters = counters
        family, address = listen_address(endpoint)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
            self.sock.bind(address)
            self.sock.listen(LISTEN_BACKLOG)
            self.sock.setblocking(False)
        except OSError as e:  # reported as libzmq's bind reported it (nodes/run.py)
            self.sock.close()
            raise zmq.ZMQError(e.errno or errno.EINVAL, f"{endpoint}: {e.strerror}") from e
        self.address = self.sock.getsockname()
        self._links: dict[bytes, _Link] = {}
        self._ids = itertools.count(1)
        self.output_bytes = 0  # all connections' waiting output (OUTPUT_BYTES_TOTAL_MAX)
        self._buffer = bytearray(receive_bytes or RECEIVE_BYTES)
        self._view = memoryview(self._buffer)
        self._accept_timer: Timer | None = None  # while accepting is paused (out of descriptors)
        reactor.add_descriptor(self.sock.fileno(), self._on_listen)

    # -- connections ---------------------------------------------------------------------------
    def _on_listen(self, ready: int) -> None:
        for _ in range(ACCEPTS_PER_PASS):
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                self.counters["accept_failed"] += 1
                if e.errno in _ACCEPT_CONNECTION_ERRORS:
                    log.debug("accepting a connection failed: %s", e)
                    continue
                # out of descriptors or memory: poll the listening socket again once some may be
                # free, not every pass
                log.warning("accepting a connection failed: %s (not accepting for %d ms)", e, ACCEPT_PAUSE_MS)
                self.reactor.modify_descriptor(self.sock.fileno(), 0)
                self._accept_timer = self.reactor.call_later(ACCEPT_PAUSE_MS, self._resume_accepting)
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:  # reset before it was set up (possible on some systems)
                self.counters["accept_failed"] += 1
                log.debug("setting up a connection failed: %s", e)
                sock.close()
                continue
            link = _Link(b"\0" + next(self._ids).to_bytes(8, "big"), sock)
            self._links[link.conn_id] = link
            self.reactor.add_descriptor(link.fd, lambda ready, link=link: self._on_ready(link, ready))
            self.on_stream([link.conn_id, b""])

    def _resume_accepting(self) -> None:
        self._accept_timer = None
        self.reactor.modify_descriptor(self.sock.fileno(), _POLLIN)

    def _on_ready(self, link: _Link, ready: int) -> None:
        if ready & _POLLOUT:
            self._flush(link)
        if not ready & (_POLLIN | _POLLERR) or link.closed or (link.paused and not link.broken):
            return
        buffer, view, on_stream = self._buffer, self._view, self.on_stream
        for _ in range(self.reads_per_pass or READS_PER_PASS):
            try:
                n = link.sock.recv_into(buffer)
            except BlockingIOError:
                return
            except OSError as e:  # reset by the peer
                log.debug("a connection failed: %s", e)
                self._gone(link)
                return
            if not n:
                self._gone(link)
                return
            with view[:n] as data:  # released before the next read overwrites the buffer
                on_stream([link.conn_id, data])
            if link.closed or link.paused or n < len(buffer):
                return  # closed by the server, or the kernel had no more for now

    def _gone(self, link: _Link) -> None:
        """The peer closed or reset the connection: forget it, then tell the server."""
        self.close(link.conn_id)
        self.on_stream([link.conn_id, b""])

    def close(self, conn_id: bytes) -> None:
        """Close a connection now; its waiting output is dropped. No event follows."""
        link = self._links.pop(conn_id, None)
        if link is None:
            return
        link.closed = True
        self._drop_output(link)
        self.reactor.remove_descriptor(link.fd)
        link.sock.close()

    def pause(self, conn_id: bytes) -> None:
        """Stop reading the connection (its output still goes out) until ``resume``: what the
        peer sends waits in the kernel, and its sends block when that is full."""
        link = self._links.get(conn_id)
        if link is not None and not link.paused:
            link.paused = True
            self.reactor.modify_descriptor(link.fd, link.events(bool(link.outbox.bytes)))

    def resume(self, conn_id: bytes) -> None:
        link = self._links.get(conn_id)
        if link is not None and link.paused:
            link.paused = False
            self.reactor.modify_descriptor(link.fd, link.events(bool(link.outbox.bytes)))

    @property
    def connections(self) -> int:
        return len(self._links)

    # -- output ----------------------------------------------------------------------------------
    def write(self, conn_id: bytes, pieces: list, *, sizes: list[int] | None = None,
              handshake: bool = False) -> bool:
        """Send ``pieces`` (bytes-like) as one unit, in order after what is waiting; False when
        refused whole: the connection is gone or broken, or its output is at the bounds. A
        piece that is not a contiguous buffer raises before anything is sent or queued.
        ``sizes``: the pieces' sizes in bytes when the caller already has them
        (``fabric.zmtp_codec.encode_frames``, which raised for a bad piece); measured here otherwise.
        ``handshake``: a protocol's opening (a few bytes, once per connection), which cannot be
        sent again later: not refused at the bound on all connections together, which other
        peers filled (a new connection would otherwise hang in its handshake long after the
        bound is released); the connection's own bound still applies."""
        if sizes is None:
            sizes = [_size(p) for p in pieces]
        link = self._links.get(conn_id)
        if link is None or link.broken:
            return False
        outbox = link.outbox
        if outbox.bytes >= self.output_bytes_max or (self.output_bytes >= OUTPUT_BYTES_TOTAL_MAX and not handshake):
            return False
        was_waiting = bool(outbox.bytes)
        try:
            queued = outbox.send(link.sock, pieces, sizes)
        except OSError as e:
            self._broken(link, e)
            return False
        self.output_bytes += queued
        if queued and not was_waiting:
            self.reactor.modify_descriptor(link.fd, link.events(True))
        return True

    def _flush(self, link: _Link) -> None:
        try:
            self.output_bytes -= link.outbox.flush(link.sock)
        except OSError as e:
            self._broken(link, e)
            return
        if not link.outbox.bytes and not link.closed:
            self.reactor.modify_descriptor(link.fd, link.events(False))

    def _broken(self, link: _Link, error: OSError) -> None:
        """A send failed (the peer reset the connection): nothing more is sent; reading it
        reports the end (``_gone``), as the poll marks it readable."""
        log.debug("a send failed: %s", error)
        link.broken = True
        self._drop_output(link)
        if not link.closed:
            self.reactor.modify_descriptor(link.fd, link.events(False))

    def _drop_output(self, link: _Link) -> None:
        self.output_bytes -= link.outbox.clear()

    def shutdown(self) -> None:
        if self._accept_timer is not None:  # its descriptor number may be another's by then
            self._accept_timer.cancel()
            self._accept_timer = None
        for conn_id in list(self._links):
            self.close(conn_id)
        self.reactor.remove_descriptor(self.sock.fileno())
        self.sock.close()


class Outbox:
    """The bytes waiting for one socket, in order. ``send`` hands a message's pieces to the
    kernel (one ``sendmsg``: no join, no copy) as far as it takes them and keeps the rest, or
    queues them all behind what already waits; ``flush`` goes on when the socket is writable.
    Both raise OSError (not BlockingIOError) when the connection failed."""

    __slots__ = ("pieces", "bytes")

    def __init__(self) -> None:
        self.pieces: deque = deque()  # not yet taken by the kernel, in order
        self.bytes = 0

    def send(self, sock: socket.socket, pieces: list, sizes: list[int]) -> int:
        """Send or queue one message; returns the bytes it left waiting (0: all sent)."""
        total = sum(sizes)
        before = self.bytes
        if self.pieces or len(pieces) > SEND_PIECES_MAX:
            sent = 0
        else:
            try:
                sent = sock.sendmsg(pieces)
            except BlockingIOError:
                sent = 0
            if sent == total:
                return 0
        for p, n in zip(pieces, sizes):
            if sent >= n:
                sent -= n
                continue
            self.pieces.append(_bytes_view(p)[sent:] if sent else p)
            self.bytes += n - sent
            sent = 0
        return self.bytes - before

    def flush(self, sock: socket.socket) -> int:
        """Hand waiting bytes to the kernel until it takes no more; returns the bytes taken."""
        taken = 0
        pieces = self.pieces
        while pieces:
            try:
                sent = sock.sendmsg(list(itertools.islice(pieces, SEND_PIECES_MAX)))
            except BlockingIOError:
                break
            taken += sent
            self.bytes -= sent
            while sent:
                n = _size(pieces[0])
                if n > sent:
                    pieces[0] = _bytes_view(pieces[0])[sent:]
                    return taken  # the kernel took what it could
                sent -= n
                pieces.popleft()
        return taken

    def clear(self) -> int:
        """Drop everything waiting; returns the bytes dropped."""
        dropped, self.bytes = self.bytes, 0
        self.pieces.clear()
        return dropped


def _bytes_view(piece: object) -> memoryview:
    """A view of ``piece`` whose items are its bytes, to slice by byte offsets."""
    view = memoryview(piece)  # type: ignore[arg-type]
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
