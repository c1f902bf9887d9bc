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

Not thread-safe: owned by the node's reactor thread.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from typing import Callable

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.buffers import OwnedFrame
from fabric.errors import MalformedFrame
from fabric.hoptrace import mark
from fabric.reactor import Reactor, Timer
from fabric.tcp_port import TcpPort
from fabric.zmtp_codec import (FLAG_COMMAND, FLAG_MORE, GREETING, GREETING_BYTES, HANDSHAKE_BYTES_MAX, ProtocolViolation,
                               encode_frames, frame_header_at, greeting_at, parse_ready, pong_for,
                               ready_command)

log = logging.getLogger(__name__)

COMMAND_BYTES_MAX = 1024           # PING and other commands after the handshake
PEER_IDENTITY_BYTES_MAX = 255      # ZMTP's limit for a routing id
CONNECTIONS_MAX = 10_000           # at the limit a new one replaces the least recently active one
# messages of one connection handed on (or answered: a PING, a discarded request) per reactor pass
# (as the reactor drained a libzmq ROUTER):
# the rest wait in the connection's buffer, and the connection is not read, until the next pass
MESSAGES_PER_PASS = P.DRAIN_MESSAGES_MAX
# Partly received requests of all connections together may hold at most this many bytes (the
# limits above bound one connection, and a peer may open many). A request that would go over
# it is read and discarded and answered ``buffer_full`` (retriable); a request of at most
# SMALL_REQUEST_BYTES is never refused for it, so replica fetches, heartbeats and metadata
# requests go on while large requests are held up: the worst case is
# BUFFERED_REQUEST_BYTES_MAX + CONNECTIONS_MAX * SMALL_REQUEST_BYTES.
BUFFERED_REQUEST_BYTES_MAX = 4 * P.REQUEST_BYTES_MAX
SMALL_REQUEST_BYTES = 64 * 1024

_NOT_SHORT_MESSAGE_FRAME = ~FLAG_MORE & 0xFF  # any flag but MORE: long, command, or reserved bits
_PEER_SOCKET_TYPES = (b"DEALER", b"REQ")


READY = ready_command(b"ROUTER")


class _Connection:
    """One peer's ZMTP state: handshake, then at most one message being received."""

    __slots__ = ("conn_id", "identity", "buf", "greeted", "ready", "frames", "message_bytes",
                 "skip_bytes", "discarding", "discard_request_id", "discard_code", "need_bytes", "held_bytes",
                 "complete", "body", "body_missing", "body_more", "closed", "pass_no", "delivered", "paused")

    def __init__(self, conn_id: bytes) -> None:
        self.conn_id = conn_id
        self.identity: bytes | None = None
        self.buf = bytearray()     # bytes received and not yet parsed (bounded: see feed)
        self.greeted = False       # the peer's greeting has arrived
        self.ready = False         # the peer's READY has arrived
        self.frames: list[bytes] = []
        self.message_bytes = 0
        self.skip_bytes = 0        # body bytes of an oversized message still to discard
        self.discarding = False    # the message in progress is over a limit
        self.discard_request_id = 0
        self.discard_code = P.REQUEST_TOO_LARGE
        self.held_bytes = 0        # counted in ZmtpServer.buffered_bytes: the message so far + the frame arriving
        self.need_bytes = 0        # buf cannot be parsed before it holds this many bytes
        self.complete = False      # conn.frames is a whole message, to hand on once its bytes are consumed
        # a frame of at least OWNED_FRAME_BYTES_MIN bytes whose body is still arriving: the bytes
        # go straight into its own buffer (handed on as it is: no copy after reassembly)
        self.body: OwnedFrame | None = None
        self.body_missing = 0      # bytes of ``body`` still to come
        self.body_more = False     # the frame's MORE flag
        self.closed = False        # closed by us or gone: nothing more of it is parsed or answered
        self.pass_no = -1          # the reactor pass ``delivered`` counts in
        self.delivered = 0         # messages handed on in that pass (MESSAGES_PER_PASS)
        self.paused = False        # over its pass's budget: not read until the rest of buf is handed on


class ZmtpServer:
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

    def _feed(self, conn: _Connection, data: bytes) -> None:
        try:
            if conn.ready and not conn.buf and not conn.frames and conn.body is None and not conn.skip_bytes \
                    and not conn.discarding and not conn.complete:
                # between messages with nothing buffered: whole small messages straight from the chunk
                used = self._deliver_whole(conn, data)
                if used == len(data) or conn.closed:
                    return
                data = memoryview(data)[used:]
            self._feed_general(conn, data)
        except ProtocolViolation:
            raise
        except BaseException:
            # the code a message was handed to raised (a node's reactor logs an operating error
            # and goes on): the rest of what arrived waits in the buffer, handed on at a later
            # pass -- not when, if ever, the peer sends more
            if conn.buf and not conn.closed:
                self._pause(conn)
            raise

    def _deliver_whole(self, conn: _Connection, data: bytes) -> int:
        """The fast path of a request of short frames (each at most 255 bytes: the requests that
        carry no batch, and replica acks) that arrived whole in one chunk: parsed and handed on
        without the per-frame state machine and without buffering. Stops, returning the bytes
        used, at the first message that is not whole in ``data`` or has a long frame, a
        command, more frames than ``P.FRAMES_MAX``, more bytes than a request may hold
        unquestioned (``P.REQUEST_BYTES_MAX``, ``SMALL_REQUEST_BYTES``) or a frame that would
        be an ``OwnedFrame`` -- the general parser takes it from its first byte, limits and
        answers unchanged, however the stream was cut. A message is consumed before it is
        handed on (as in ``_feed_general``): when the code it is handed to raises, the rest of
        the chunk is kept in ``conn.buf`` for the next feed, never parsed twice."""
        pos, end = 0, len(data)
        frames_max = P.FRAMES_MAX - 1  # the identity put in front counts against it
        bytes_max = min(P.REQUEST_BYTES_MAX, SMALL_REQUEST_BYTES)
        owned_min = P.OWNED_FRAME_BYTES_MIN
        try:
            while pos < end:
                if not self._budget_left(conn):
                    return pos  # the rest is parsed on a later pass (_feed_general pauses the connection)
                frames: list = []
                held = 0
                at = pos
                while True:
                    if at + 2 > end:
                        return pos
                    flags = data[at]
                    if flags & _NOT_SHORT_MESSAGE_FRAME:
                        return pos
                    size = data[at + 1]
                    held += size
                    body_end = at + 2 + size
                    if body_end > end or len(frames) >= frames_max or held > bytes_max or size >= owned_min:
                        return pos
                    frames.append(bytes(data[at + 2:body_end]))
                    at = body_end
                    if not flags & FLAG_MORE:
                        break
                pos = at  # consumed before it is handed on
                conn.delivered += 1
                self.on_message([conn.identity, *frames])
                if conn.closed:  # a reply to it may have closed the connection
                    return pos
            return pos
        except BaseException:
            if not conn.closed and pos < end:
                conn.buf += memoryview(data)[pos:]
            raise

    def _feed_general(self, conn: _Connection, data: bytes) -> None:
        if conn.body is not None:  # the rest of a large frame's body: into its own buffer
            n = min(len(data), conn.body_missing)
            conn.body += data if n == len(data) else memoryview(data)[:n]
            conn.body_missing -= n
            if conn.body_missing:
                return
            self._frame_done(conn, conn.body, conn.body_more)
            data = memoryview(data)[n:]
        if conn.skip_bytes:  # the body of a frame of an oversized message: never buffered
            if len(data) <= conn.skip_bytes:
                conn.skip_bytes -= len(data)
                return
            data = data[conn.skip_bytes:]
            conn.skip_bytes = 0
        buf = conn.buf
        buf += data
        if len(buf) < conn.need_bytes:
            return  # the rest of a frame's body: nothing to parse yet (8 KiB chunks)
        conn.need_bytes = 0
        pos = 0
        try:
            if conn.complete:  # a large frame completed the message above (the rest is in buf)
                conn.complete = False
                self._deliver(conn)
            while not conn.closed:  # a reply to what was delivered may have closed it
                if not self._budget_left(conn):
                    break  # the rest on a later pass: the connection is paused below
                used = self._parse_one(conn, buf, pos)
                if used == 0:
                    break
                pos += used
                if conn.complete:  # handed on after its bytes are consumed: never parsed twice,
                    conn.complete = False  # even when the code it is handed to raises
                    self._deliver(conn)
                if conn.skip_bytes:  # drop what is here of the discarded body, wait for the rest
                    dropped = min(conn.skip_bytes, len(buf) - pos)
                    conn.skip_bytes -= dropped
                    pos += dropped
                    if conn.skip_bytes:
                        break
        finally:
            del buf[:pos]
        if buf and not conn.closed and not self._budget_left(conn):
            self._pause(conn)

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

    def _parse_one(self, conn: _Connection, buf: bytearray, pos: int) -> int:
        """Parse one unit (greeting, command or frame) at ``pos``: bytes used, 0 for "need more"."""
        if not conn.greeted:
            if not greeting_at(buf, pos):
                return 0
            conn.greeted = True
            return GREETING_BYTES
        header = frame_header_at(buf, pos)
        if header is None:
            return 0
        flags, size, head = header
        avail = len(buf) - pos
        if flags & FLAG_COMMAND:
            limit = COMMAND_BYTES_MAX if conn.ready else HANDSHAKE_BYTES_MAX
            if size > limit or flags & FLAG_MORE:
                raise ProtocolViolation(f"command of {size} bytes (at most {limit})")
            if avail < head + size:
                return 0
            self._on_command(conn, bytes(buf[pos + head:pos + head + size]))
            return head + size
        if not conn.ready:
            raise ProtocolViolation("a message before the READY handshake")
        more = bool(flags & FLAG_MORE)
        if conn.discarding or not self._within_limits(conn, size):
            # over a limit: the rest of the message is read and dropped, never kept
            conn.skip_bytes = size
            if not more:
                self._answer_discarded(conn)
            return head
        if size >= P.OWNED_FRAME_BYTES_MIN:
            # its own buffer: what is here now, the rest as it arrives (_feed), handed on as is
            have = min(avail - head, size)
            with memoryview(buf) as view:  # released before the buffer shrinks
                body = OwnedFrame(view[pos + head:pos + head + have])
            if have < size:
                conn.body, conn.body_missing, conn.body_more = body, size - have, more
                return head + have
            self._frame_done(conn, body, more)
            return head + size
        if avail < head + size:
            conn.need_bytes = head + size  # buf starts at this frame once this feed is done
            return 0
        with memoryview(buf) as view:  # one copy, and released before the buffer shrinks
            frame = bytes(view[pos + head:pos + head + size])
        self._frame_done(conn, frame, more)
        return head + size

    @staticmethod
    def _frame_done(conn: _Connection, frame: bytes | OwnedFrame, more: bool) -> None:
        conn.frames.append(frame)
        conn.message_bytes += len(frame)
        conn.complete = not more
        conn.body = None
        conn.body_missing = 0

    def _within_limits(self, conn: _Connection, size: int) -> bool:
        """Checked at each frame's header, before its body is buffered (and again, with the
        same answer, each time the header is parsed while the body arrives). One frame and one
        byte budget go to the identity frame that is put in front of the message. A frame
        within the limits reserves its bytes in ``buffered_bytes`` until the message ends."""
        held = conn.message_bytes + size
        if len(conn.frames) + 2 > P.FRAMES_MAX or held > P.REQUEST_BYTES_MAX:
            code = P.REQUEST_TOO_LARGE
            self.counters["requests_over_limit"] += 1
            self.counters["malformed"] += 1
        elif held > SMALL_REQUEST_BYTES and self.buffered_bytes - conn.held_bytes + held > BUFFERED_REQUEST_BYTES_MAX:
            code = P.BUFFER_FULL
            self.counters["requests_over_buffer"] += 1
        else:
            self.buffered_bytes += held - conn.held_bytes
            conn.held_bytes = held
            return True
        conn.discarding = True
        conn.discard_code = code
        conn.discard_request_id = _request_id(conn.frames)
        self._release(conn)
        return False

    def _release(self, conn: _Connection) -> None:
        """The message in progress is delivered, discarded or gone: free what it held."""
        self.buffered_bytes -= conn.held_bytes
        conn.held_bytes = 0
        conn.frames = []
        conn.message_bytes = 0
        conn.body = None
        conn.body_missing = 0

    def _answer_discarded(self, conn: _Connection) -> None:
        conn.discarding = False
        conn.delivered += 1  # answered as a request is: counted in the pass's budget (MESSAGES_PER_PASS)
        identity = conn.identity or conn.conn_id
        if conn.discard_code == P.BUFFER_FULL:
            message = (f"the node holds {BUFFERED_REQUEST_BYTES_MAX} bytes of partly received requests: "
                       "discarded, retry later")
        else:
            message = f"request over {P.REQUEST_BYTES_MAX} bytes or {P.FRAMES_MAX} frames: discarded"
        self.send(wire.encode_reply([identity], wire.error_header(conn.discard_request_id, conn.discard_code, message)))

    def _deliver(self, conn: _Connection) -> None:
        frames = conn.frames
        self._release(conn)
        conn.delivered += 1
        assert conn.identity is not None
        self.on_message([conn.identity, *frames])

    def _on_command(self, conn: _Connection, body: bytes) -> None:
        if not conn.ready:
            props = parse_ready(body)
            if props.get(b"socket-type") not in _PEER_SOCKET_TYPES:
                raise ProtocolViolation(f"socket type {props.get(b'socket-type')!r} cannot talk to a ROUTER")
            conn.identity = self._identity_for(conn, props.get(b"identity", b""))
            self._by_identity[conn.identity] = conn
            conn.ready = True
            self._write(conn, [READY], handshake=True)
            return
        conn.delivered += 1  # parsed and maybe answered as a request is: a PING flood holds a pass up as much
        pong = pong_for(body)
        if pong is not None:
            self._write(conn, [pong])

    def _identity_for(self, conn: _Connection, announced: bytes) -> bytes:
        """The peer's own identity when it set one that no live peer uses, as ROUTER does;
        otherwise one made up (a zero byte and random bytes, never a valid announced one)."""
        if announced and not announced.startswith(b"\0") and len(announced) <= PEER_IDENTITY_BYTES_MAX \
                and announced not in self._by_identity:
            return announced
        return b"\0" + os.urandom(8)

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


def _request_id(frames: list[bytes]) -> int:
    """The request id of a partly received request (``[b"", VERSION, command, header...]``),
    so that the error reply can name it; 0 when the header has not arrived or is bad."""
    if len(frames) < 4:
        return 0
    try:
        header = wire.unpack(frames[3])
    except MalformedFrame:
        return 0
    rid = header.get("id", 0) if isinstance(header, dict) else 0
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
