"""The server end of ROUTER/DEALER, with a bound on what one request may make a node buffer.

libzmq's ROUTER keeps every frame of a multipart message in its pipe until the last frame
arrives, and only then shows the message to the application; ``ZMQ_MAXMSGSIZE`` bounds one
frame and ``ZMQ_RCVHWM`` counts whole messages. A peer that sends frames of one message and
never the last one makes the node allocate without bound, and nothing above libzmq can see
it happen. So the node's request port is a plain TCP port (``fabric.tcp_port``: the sockets
of the operating system, read and written by the reactor thread itself, with no libzmq I/O
thread between the wire and the parser) and this module speaks ZMTP 3.0 (NULL security) on it,
the protocol a DEALER client speaks: the greeting, the READY handshake, then frames. Each connection
buffers at most one message, bounded by ``P.REQUEST_BYTES_MAX`` bytes and
``P.FRAMES_MAX`` frames; the limit is checked at each frame's header, before its body
arrives. The rest of an oversized message is read and discarded (nothing buffered) and the
peer is answered ``request_too_large``; a peer that breaks the protocol is disconnected.
Peers can open many connections, so the partly received requests of all of them together
are bounded too (``BUFFERED_REQUEST_BYTES_MAX``, small requests exempt): a request that would
go over it is discarded the same way and answered ``buffer_full`` (retriable).
Clients are unchanged: any ZMTP 3.x DEALER (libzmq, pyzmq) talks to it. At most
``MESSAGES_PER_PASS`` messages of one connection are handed on per reactor pass (as the reactor
drained a libzmq ROUTER): a peer flooding tiny messages cannot hold a pass -- the other
connections, the heartbeats, the replication stream -- for seconds; the rest of what it sent
waits in its buffer and, unread, in the kernel until the next passes.

A complete message is handed on as ``[identity, b"", frames...]``, as a ROUTER would: the
identity is the one the peer announced (``ZMQ_IDENTITY``) or one made up for the connection.
A frame of at least ``P.OWNED_FRAME_BYTES_MIN`` bytes (a produced batch) is assembled straight
into a buffer of its own and handed on as that ``OwnedFrame``, which the receiver may modify
and keep (``fabric.buffers``); smaller frames are bytes.

This module holds ``ZmtpServer`` itself: the table of connections (accept, evict, forget,
close), each reactor pass's budget (pausing a connection, resuming it), and the replies. Its
receiving half -- the handshake, the parser and its limits -- is ``RequestParserMixin`` in
``fabric.zmtp_parser``, over the server's own state; this module re-exports that module's limits
and ``READY``.

Not thread-safe: owned by the node's reactor thread.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from typing import Callable

import zmq

from fabric import protocol as P
from fabric.hoptrace import mark
from fabric.reactor import Reactor, Timer
from fabric.tcp_port import TcpPort
from fabric.zmtp_codec import GREETING, ProtocolViolation, encode_frames
from fabric.zmtp_parser import (BUFFERED_REQUEST_BYTES_MAX, COMMAND_BYTES_MAX, PEER_IDENTITY_BYTES_MAX, READY,
                                SMALL_REQUEST_BYTES, RequestParserMixin, _Connection)

__all__ = ["ZmtpServer", "CONNECTIONS_MAX", "MESSAGES_PER_PASS", "READY", "COMMAND_BYTES_MAX",
           "PEER_IDENTITY_BYTES_MAX", "BUFFERED_REQUEST_BYTES_MAX", "SMALL_REQUEST_BYTES"]

log = logging.getLogger(__name__)

CONNECTIONS_MAX = 10_000           # at the limit a new one replaces the least recently active one
# messages of one connection handed on (or answered: a PING, a discarded request) per reactor pass
# (as the reactor drained a libzmq ROUTER):
# the rest wait in the connection's buffer, and the connection is not read, until the next pass
MESSAGES_PER_PASS = P.DRAIN_MESSAGES_MAX


class ZmtpServer(RequestParserMixin):
    """A ROUTER-like request port on a TCP port. ``on_message(frames)`` gets each
    complete message as ``[identity, b"", frames...]``; ``send(frames)`` routes a reply by
    its first frame (an identity) and drops it when that peer is gone or not reading."""

    def __init__(self, ctx: zmq.Context | None, reactor: Reactor, endpoint: str,
                 on_message: Callable[[list[bytes]], None], counters: Counter[str] | None = None) -> None:
        """``ctx`` is unused (the port is not a libzmq socket); kept for the callers' symmetry
        with ``_RouterPort``."""
        self.reactor = reactor
        self.on_message = on_message
        self.counters: Counter[str] = counters if counters is not None else Counter()
        # least recently active first: when the table is full, that one makes room
        self._connections: OrderedDict[bytes, _Connection] = OrderedDict()
        self._by_identity: dict[bytes, _Connection] = {}
        self.buffered_bytes = 0  # sum of held_bytes over connections (bounded: BUFFERED_REQUEST_BYTES_MAX)
        self._paused: list[_Connection] = []  # over their pass's budget, parsed again by _resume
        self._resume_timer: Timer | None = None
        self.tcp = TcpPort(reactor, endpoint, self._on_stream, self.counters)
        self.sock = self.tcp.sock

    # -- receiving -------------------------------------------------------------------------
    def _on_stream(self, frames: list) -> None:
        """The port's events (those of a ZMQ_STREAM socket): ``[connection id, data]``, data a
        view onto the port's receive buffer, copied into the connection's buffers by ``_feed``
        and not kept; empty data is a connect (unknown id) or a disconnect (known id)."""
        mark("port.chunk")
        if len(frames) != 2:
            return  # the port delivers [connection id, data]
        conn_id, data = frames
        conn = self._connections.get(conn_id)
        if not data:  # the port's notice of a connect (unknown id) or a disconnect (known id)
            if conn is None:
                self._accept(conn_id)
            else:
                self._forget(conn)
            return
        if conn is None:
            return  # bytes of a connection already closed by us
        self._connections.move_to_end(conn_id)
        try:
            self._feed(conn, data)
        except ProtocolViolation as e:
            self._violated(conn, e)

    def _violated(self, conn: _Connection, e: ProtocolViolation) -> None:
        self.counters["protocol_violations"] += 1
        log.info("disconnecting a peer that broke ZMTP: %s", e)
        self._close(conn)

    def _accept(self, conn_id: bytes) -> None:
        """A new connection. At CONNECTIONS_MAX the least recently active connection is closed
        to make room (a libzmq DEALER reconnects by itself), so peers that connect and go
        silent -- with or without a handshake -- cannot lock every other client out."""
        if len(self._connections) >= CONNECTIONS_MAX:
            _, idlest = next(iter(self._connections.items()))
            self.counters["connections_evicted"] += 1
            self._close(idlest)
        conn = _Connection(conn_id)
        self._connections[conn_id] = conn
        self._write(conn, [GREETING], handshake=True)

    # -- each reactor pass's budget (MESSAGES_PER_PASS) ----------------------------------------
    def _budget_left(self, conn: _Connection) -> bool:
        """Whether ``conn`` may hand on another message in this reactor pass."""
        passes = self.reactor.passes
        if conn.pass_no != passes:
            conn.pass_no = passes
            conn.delivered = 0
        return conn.delivered < MESSAGES_PER_PASS

    def _pause(self, conn: _Connection) -> None:
        """Stop reading ``conn`` (its bytes wait in the kernel) until a later pass has handed on
        what its buffer holds (``_resume``)."""
        if conn.paused:
            return
        conn.paused = True
        self.counters["passes_over_budget"] += 1
        self.tcp.pause(conn.conn_id)
        self._paused.append(conn)
        if self._resume_timer is None:
            self._resume_timer = self.reactor.call_later(0, self._resume)

    def _resume(self) -> None:
        """Hand on what the paused connections hold, within this pass's budget; read again those
        whose buffer is done."""
        self._resume_timer = None
        paused, self._paused = self._paused, []
        # what is handed on here comes after this pass's after-pass hooks (a broker's group
        # commit, its answers to parked writes): the next pass runs them without waiting
        self.reactor.pass_soon()
        for i, conn in enumerate(paused):
            conn.paused = False
            if conn.closed:
                continue
            try:
                self._feed_general(conn, b"")  # pauses it again when the budget runs out first
            except ProtocolViolation as e:
                self._violated(conn, e)
                continue
            except BaseException:
                # the code a message was handed to raised (a node's reactor logs an operating
                # error and goes on): this connection's rest and the ones not yet parsed wait
                # for the next pass, not unread for ever
                for later in paused[i:]:
                    later.paused = False
                    if not later.closed:
                        self._pause(later)
                raise
            if not conn.paused and not conn.closed:
                self.tcp.resume(conn.conn_id)

    # -- sending and closing -------------------------------------------------------------------
    def send(self, frames: list) -> None:
        """Send ``[identity, frames...]`` to that peer as one ZMTP message, whole or not at all:
        dropped (and counted) when the peer is gone or its output is full (``fabric.tcp_port``).
        Frames of at least ``REPLY_ZERO_COPY_BYTES_MIN`` go to the kernel as they are, the
        pieces between them joined."""
        conn = self._by_identity.get(bytes(frames[0]))
        if conn is None:
            self.counters["reply_dropped_gone"] += 1
            return
        pieces, sizes = encode_frames(frames[1:], P.REPLY_ZERO_COPY_BYTES_MIN - 1)  # a bad frame raises here
        self._write(conn, pieces, sizes=sizes)

    def _write(self, conn: _Connection, pieces: list, *, sizes: list[int] | None = None,
               handshake: bool = False) -> bool:
        """One unit of output to the peer; False when it was refused (counted). ``sizes``: the
        pieces' sizes when known (``encode_frames``), else the port measures them.
        ``handshake``: the greeting or READY, not refused at the port's bound on all
        connections together (``TcpPort.write``)."""
        if self.tcp.write(conn.conn_id, pieces, sizes=sizes, handshake=handshake):
            return True
        self.counters["reply_dropped_hwm"] += 1  # peer not reading (or gone): it will time out
        return False

    def _close(self, conn: _Connection) -> None:
        """Disconnect the peer now (its waiting output is dropped)."""
        self._forget(conn)
        self.tcp.close(conn.conn_id)

    def _forget(self, conn: _Connection) -> None:
        self._connections.pop(conn.conn_id, None)
        if conn.identity is not None and self._by_identity.get(conn.identity) is conn:
            del self._by_identity[conn.identity]
        conn.buf = bytearray()
        conn.closed = True
        self._release(conn)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        if self._resume_timer is not None:  # nothing is handed on once closed (the reactor may go on)
            self._resume_timer.cancel()
            self._resume_timer = None
        self._paused = []
        self.tcp.shutdown()
