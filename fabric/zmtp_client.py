"""The DEALER end of ZMTP 3.0 over a TCP socket the reactor thread reads and writes itself.

The client-side twin of the request port (``fabric.zmtp``, ``fabric.tcp_port``): a libzmq
DEALER hands every message to libzmq's I/O thread and back, so each request and each reply
crossed two threads in the client too. ``ZmtpDealer`` speaks the same wire (greeting, READY
with ``Socket-Type`` DEALER and the client's ``Identity``, then frames) on a non-blocking
socket polled by the reactor (``Reactor.add_descriptor``): the kernel wakes the thread that
handles the reply, and a request is written by the thread that made it. Any ZMTP 3 ROUTER
(a node's request port, a libzmq ROUTER) answers it.

Behaviour a libzmq DEALER's users rely on, kept:
- **connect and reconnect by itself**: a failed connect or a lost connection is retried after
  ``P.RECONNECT_IVL_MS``, doubling up to ``P.RECONNECT_IVL_MAX_MS``, and back to the first
  interval once a handshake completes;
- **messages sent before the handshake wait** (at most ``P.SNDHWM`` of them; ``send`` is then
  refused, as libzmq raises ``zmq.Again``) and go out in order once it completes;
- **bounded output**: once connected, at most ``P.SNDHWM`` messages wait for a peer that does
  not read (beyond what the kernel holds); ``send`` is refused meanwhile, as at libzmq's
  high-water mark -- requests that time out and are retried to a paused peer do not pile up;
- **a handshake that does not complete** within ``HANDSHAKE_IVL_MS`` (libzmq's
  ``ZMQ_HANDSHAKE_IVL`` default: a peer that accepts and never greets, or never sends READY)
  drops the connection, which is made again after the reconnect interval;
- **bounded input**: a frame over ``P.REQUEST_BYTES_MAX`` (libzmq's ``ZMQ_MAXMSGSIZE`` on the
  Loom sockets) or a message of more than ``P.FRAMES_MAX`` frames is a protocol violation, and
  the connection is dropped and made again.
Messages handed to the kernel and not yet on the wire when a connection is lost are lost with
it (a libzmq DEALER loses those in its encoder too): the request's timeout answers it, and a
one-way message is repeated by its sender's own cadence (a replica's acknowledgement).
A message sent with ``on_written`` is told its fate: ``on_written(True)`` once all its bytes
are in the kernel, ``on_written(False)`` if it is dropped before (some of its bytes still in
the outbox when the connection is lost, or waiting for a connection that failed, or closed):
it does not wait for the next connection, its sender decides (acks=0 produce sends it again).

A host name is resolved (an IPv4 address first, as libzmq's sockets) once, and again only
after a connect to that address failed, on a thread of its own: a resolver that takes seconds
(a DNS server that does not answer) holds up this connection only, never the reactor's timers
and other sockets (libzmq resolved on its I/O thread). An IP address (as ``make up``'s
configuration names nodes) is used as it is, with no thread.

``on_message(frames)`` gets each whole message as a list of ``bytes``.

A reply handler that raises (an operating error that a client's reactor hands to its caller,
or that a node's reactor logs) does not strand the messages received after it in the same
read: they are parsed on the reactor's next pass, as a libzmq socket would still hold them.

This module holds ``ZmtpDealer``'s messages: sending them and receiving them. Its connection
-- resolving, connecting, the handshake, losing a connection and making the next one -- is
``ConnectionMixin`` in ``fabric.zmtp_client_connection``, over the dealer's own state; this
module re-exports that module's public names.

Not thread-safe: owned by the reactor's thread.
"""

from __future__ import annotations

import socket
import sys
from collections import Counter, deque
from typing import Callable

from fabric import protocol as P
from fabric.buffers import OwnedFrame
from fabric.reactor import Reactor, Timer
from fabric.tcp_port import READS_PER_PASS, RECEIVE_BYTES, SEND_PIECES_MAX, Outbox
from fabric.zmtp_client_connection import (_CLOSED, _IDLE, _POLLIN, _POLLOUT, _READY, HANDSHAKE_IVL_MS,
                                           RESOLVE_POLL_MS, ConnectionMixin, Resolution, connect_address)
from fabric.zmtp_codec import (FLAG_COMMAND, FLAG_LONG, FLAG_MORE, GREETING, HANDSHAKE_BYTES_MAX, ProtocolViolation,
                               encode_frames, frame_header_at, next_unit, ready_command)

_NOT_SHORT_FRAME = FLAG_LONG | FLAG_COMMAND
JOIN_BYTES_MAX = 64 * 1024  # frames up to this size are joined with their headers into one piece
DIRECT_BYTES_MIN = 256 * 1024  # a frame this large is read straight into a buffer of its own
# a connection's receive buffer at first: it grows (x4, up to RECEIVE_BYTES) when a read fills it,
# so that an idle or quiet connection (a consumer service hosts hundreds) holds little
RECEIVE_BYTES_FIRST = 16 * 1024


def _input_limit(flags: int) -> int:
    """The largest frame a dealer takes: libzmq's ZMQ_MAXMSGSIZE on Loom's sockets."""
    return HANDSHAKE_BYTES_MAX if flags & FLAG_COMMAND else P.REQUEST_BYTES_MAX


def encode_message(frames: list) -> tuple[list, list[int]]:
    """``fabric.zmtp_codec.encode_frames`` with a dealer's join bound (``JOIN_BYTES_MAX``)."""
    return encode_frames(frames, JOIN_BYTES_MAX)


class ZmtpDealer(ConnectionMixin):
    """``messages_per_pass``: at most this many messages handed on per reactor pass (the rest
    of what was read waits for the next one, and nothing more is read meanwhile), as a libzmq
    socket's ``Reactor.add_socket(messages_max=...)``; None: all that arrived; 0 or less
    is refused (nothing could ever be read, and the ready socket would be polled without end).
    ``reconnect_ivl_max_ms``: the reconnect backoff's cap (libzmq's ``ZMQ_RECONNECT_IVL_MAX``:
    one not above ``P.RECONNECT_IVL_MS``, 0 included, caps nothing and the interval stays at
    ``P.RECONNECT_IVL_MS``, rather than shortening it -- to nothing, for 0).
    ``on_lost``: called when a connection that completed its handshake ends (never at
    ``close``): what was sent on it, and the answers to it, are gone with it -- a caller whose
    requests would otherwise wait out their timeouts (a peer killed with them) fails them.
    ``on_refused(errno)``: called when a connect fails (ECONNREFUSED: the peer's port refused it,
    its process dead and its host up; or EHOSTUNREACH, ETIMEDOUT...: its host out of reach);
    ``refused`` says so until the next connect is under way, and ``connect_error`` is the
    errno. The messages waiting for a connection still wait for the next one: a caller that
    would rather fail some of them (a metadata ask another node can answer) does so itself,
    and may ask for the next connect at once (``connect_now``)."""

    SOCKET_TYPE = b"DEALER"
    PEER_SOCKET_TYPES: tuple[bytes, ...] = (b"ROUTER",)

    def __init__(self, reactor: Reactor, endpoint: str, on_message: Callable[[list[bytes]], None], *,
                 identity: bytes | None = None, counters: Counter[str] | None = None,
                 messages_per_pass: int | None = None, reconnect_ivl_max_ms: int = P.RECONNECT_IVL_MAX_MS,
                 on_lost: Callable[[], None] | None = None, on_refused: Callable[[int], None] | None = None) -> None:
        self.reactor = reactor
        self.on_lost = on_lost
        self.on_refused = on_refused
        self.refused = False  # the last connect failed, and no other is under way
        self.connect_error = 0  # the errno of the last connect that failed
        self.endpoint = endpoint
        self.on_message = on_message
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.host, self.port = connect_address(endpoint)
        if identity is not None and not 0 < len(identity) <= 255:
            raise ValueError("a ZMTP identity is 1 to 255 bytes")
        if messages_per_pass is not None and messages_per_pass < 1:
            raise ValueError(f"messages_per_pass must be at least 1, not {messages_per_pass}")
        self._hello = GREETING + ready_command(self.SOCKET_TYPE, identity or b"")
        self._state = _IDLE
        self._sock: socket.socket | None = None
        self._fd = -1
        self._outbox = Outbox()
        # messages sent before the handshake, with their on_written hooks
        self._waiting: deque[tuple[list, list[int], Callable[[bool], None] | None]] = deque()
        self._in = bytearray()        # bytes received and not yet parsed
        # a large frame whose body is read straight into a buffer of its own (no copy after)
        self._body: OwnedFrame | None = None
        self._body_at = 0
        self._body_flags = 0
        self._frames: list[bytes] = []  # the message being received
        self._greeted = False
        self._buffer = bytearray(RECEIVE_BYTES_FIRST)
        self._reconnect_ms = P.RECONNECT_IVL_MS
        self._reconnect_max_ms = reconnect_ivl_max_ms
        self._messages_per_pass = messages_per_pass if messages_per_pass is not None else sys.maxsize
        self._budget = self._messages_per_pass  # messages still to hand on in this pass
        self._address: tuple | None = None  # (family, address) last resolved
        self._resolving: Resolution | None = None  # a resolution under way
        self._timer: Timer | None = None            # the reconnect
        self._handshake_timer: Timer | None = None  # while the handshake is under way
        self._resume: Timer | None = None           # parses what a raising handler left
        # messages with bytes in the outbox (P.SNDHWM): for each, the bytes ever queued on this
        # connection up to its end; the front ones leave as the flushed bytes pass them
        self._queued_ends: deque[int] = deque()
        self._written_hooks: deque[tuple[int, Callable[[bool], None]]] = deque()  # (end, on_written)
        self._queued_total = 0
        self._flushed_total = 0
        self._connect()

    @property
    def connected(self) -> bool:
        """The handshake is complete: messages go straight to the kernel."""
        return self._state == _READY

    @property
    def output_messages(self) -> int:
        """Messages (some of) whose bytes wait in the outbox for the peer to read."""
        return len(self._queued_ends)

    # -- sending ---------------------------------------------------------------------------------
    def send(self, frames: list, on_written: Callable[[bool], None] | None = None) -> bool:
        """Send one message; False when refused: ``P.SNDHWM`` messages already wait for a
        connection or for the connected peer to read them, or the dealer is closed. Raises
        TypeError/BufferError/ValueError for a bad frame, before anything is sent.
        ``on_written``: told whether the message reached the kernel (module docstring), maybe
        before ``send`` returns; never for a refused message."""
        pieces, sizes = encode_message(frames)
        if self._state != _READY:
            if self._state == _CLOSED or len(self._waiting) >= P.SNDHWM:
                return False
            self._waiting.append((pieces, sizes, on_written))
            return True
        if len(self._queued_ends) >= P.SNDHWM:
            return False
        self._write(pieces, sizes, on_written)
        return True

    def _write(self, pieces: list, sizes: list[int], on_written: Callable[[bool], None] | None = None) -> None:
        assert self._sock is not None
        was_waiting = bool(self._outbox.bytes)
        try:
            queued = self._outbox.send(self._sock, pieces, sizes)
        except OSError as e:
            self._lost(f"send failed: {e}")
            if on_written is not None:
                on_written(False)
            return
        if queued:
            self._queued_total += queued
            self._queued_ends.append(self._queued_total)
            if on_written is not None:
                self._written_hooks.append((self._queued_total, on_written))
        elif on_written is not None:
            on_written(True)
        if self._outbox.bytes and not was_waiting:
            self.reactor.modify_descriptor(self._fd, _POLLIN | _POLLOUT)

    # -- receiving -------------------------------------------------------------------------------
    def _read(self) -> None:
        if self._resume is not None:  # what an earlier pass left unparsed goes first
            self._resume.cancel()
            self._resume = None
            self._parse_or_drop()
        buffer = self._buffer
        for _ in range(READS_PER_PASS):
            sock = self._sock
            if sock is None:
                return  # lost while a message was handled
            if self._budget <= 0:
                return  # this pass's messages are handed on: the kernel holds the rest
            body = self._body
            try:
                if body is not None:  # the rest of a large frame: straight into its buffer
                    with memoryview(body) as view:
                        n = sock.recv_into(view[self._body_at:])
                    wanted = len(body) - self._body_at
                else:
                    n = sock.recv_into(buffer)
                    wanted = len(buffer)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(f"receive failed: {e}")
                return
            if not n:
                self._lost("closed by the peer")
                return
            try:
                if body is not None:
                    self._body_at += n
                    if self._body_at == len(body):
                        self._body = None
                        self._frame(body, self._body_flags)
                else:
                    self._in += memoryview(buffer)[:n]
                    self._parse()
            except ProtocolViolation as e:
                self.counters["protocol_violations"] += 1
                self._lost(f"protocol violation: {e}")
                return
            if n < wanted:
                return  # the kernel had no more for now
            if body is None and wanted < RECEIVE_BYTES and self._sock is not None:
                self._buffer = buffer = bytearray(min(wanted * 4, RECEIVE_BYTES))  # a full read: more is coming

    def _parse(self) -> None:
        buf = self._in
        pos = 0
        try:
            while self._sock is not None:
                if self._budget <= 0:
                    if pos < len(buf):
                        self._resume_later()  # the rest on the next pass
                    return
                end = len(buf)
                avail = end - pos
                if not avail:
                    return  # all of it parsed (the common end of a read)
                if avail >= 2 and not buf[pos] & _NOT_SHORT_FRAME and self._state == _READY:
                    if not self._frames:
                        # a whole message of short frames here (a replicated one-record batch, a
                        # reply): parsed in one loop and handed on once, not frame by frame
                        frames, at, whole = [], pos, False
                        while at + 2 <= end and not buf[at] & _NOT_SHORT_FRAME:
                            body_end = at + 2 + buf[at + 1]
                            if body_end > end:
                                break
                            frames.append(bytes(buf[at + 2:body_end]))
                            flags, at = buf[at], body_end
                            if not flags & FLAG_MORE:
                                if len(frames) > P.FRAMES_MAX:
                                    break  # the frame by frame path below refuses it
                                pos, whole = at, True  # consumed before it is handed on
                                self._budget -= 1
                                try:
                                    self.on_message(frames)
                                except BaseException:  # the rest of what was read: on the next pass
                                    self._resume_later()
                                    raise
                                break
                        if whole:
                            continue
                    # the common frame (a message frame of at most 255 bytes) parsed in place:
                    # the limits below cannot refuse it, and the handshake is done
                    end = pos + 2 + buf[pos + 1]
                    if end > pos + avail:
                        return
                    flags = buf[pos]
                    body = bytes(buf[pos + 2:end])
                    pos = end  # consumed before it is handed on
                    self._frame(body, flags)
                    continue
                if self._state == _READY and avail >= 9 and buf[pos] & FLAG_LONG \
                        and self._large_frame_starts(buf, pos):
                    pos = len(buf)  # all of it is in the frame's own buffer now
                    return
                unit = next_unit(buf, pos, self._greeted, _input_limit)
                if unit is None:
                    return
                flags, body, used = unit
                pos += used
                if flags < 0:
                    self._greeted = True
                    continue
                if flags & FLAG_COMMAND:
                    self._on_command(body)
                    continue
                if self._state != _READY:
                    raise ProtocolViolation("a message before the READY handshake")
                self._frame(body, flags)
        finally:
            if self._sock is not None:
                del buf[:pos]

    def _large_frame_starts(self, buf: bytearray, pos: int) -> bool:
        """A message frame of at least ``DIRECT_BYTES_MIN`` bytes whose body has not all
        arrived: what is here goes into a buffer of its own, and the rest is read into it
        (``_read``). The frame is handed on as that ``OwnedFrame``."""
        header = frame_header_at(buf, pos)
        if header is None:
            return False
        flags, size, head = header
        if flags & FLAG_COMMAND or size < DIRECT_BYTES_MIN or len(buf) - pos >= head + size:
            return False
        if size > P.REQUEST_BYTES_MAX:
            raise ProtocolViolation(f"a frame of {size} bytes (at most {P.REQUEST_BYTES_MAX})")
        body = OwnedFrame(size)
        have = len(buf) - pos - head
        with memoryview(buf) as view:  # released before the buffer shrinks
            body[:have] = view[pos + head:]
        self._body, self._body_at, self._body_flags = body, have, flags
        return True

    def _frame(self, body: bytes | OwnedFrame, flags: int) -> None:
        """One frame of a message; the message is handed on at its last."""
        self._frames.append(body)
        if len(self._frames) > P.FRAMES_MAX:
            raise ProtocolViolation(f"a message of more than {P.FRAMES_MAX} frames")
        if not flags & FLAG_MORE:
            frames, self._frames = self._frames, []
            self._budget -= 1
            try:
                self.on_message(frames)
            except BaseException:  # the rest of what was read is parsed on the next pass
                self._resume_later()
                raise

    def _resume_later(self) -> None:
        if self._resume is None and self._sock is not None:
            self._resume = self.reactor.call_later(0, self._resume_parse)

    def _resume_parse(self) -> None:
        self._resume = None
        self._budget = self._messages_per_pass
        self._parse_or_drop()

    def _parse_or_drop(self) -> None:
        if self._sock is None:
            return
        try:
            self._parse()
        except ProtocolViolation as e:
            self.counters["protocol_violations"] += 1
            self._lost(f"protocol violation: {e}")

    def close(self) -> None:
        """Close now: nothing waiting is sent, nothing more is received."""
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._resolving = None  # its thread ends on its own
        self._drop()
        self._waiting.clear()
        # the receive buffer (up to RECEIVE_BYTES) and what was half received, let go now: a closed
        # client that a reference cycle keeps until a full collection held them meanwhile
        self._buffer, self._in, self._frames, self._body = bytearray(), bytearray(), [], None


__all__ = ["ZmtpDealer", "connect_address", "encode_message", "SEND_PIECES_MAX", "HANDSHAKE_IVL_MS",
           "RESOLVE_POLL_MS", "Resolution"]
