"""The request port's receiving half: one connection's bytes made into whole messages.

``RequestParserMixin`` is that half of ``ZmtpServer`` (fabric/zmtp.py), over the server's own
state: the handshake (the peer's greeting and READY, answered with ours), then frames as they
arrive -- whole requests of short frames straight from the chunk (``_deliver_whole``), anything
else through the general parser, one greeting, command or frame at a time (``_parse_one``).
The limits are checked at each frame's header, before its body is buffered: one message of at
most ``P.REQUEST_BYTES_MAX`` bytes and ``P.FRAMES_MAX`` frames per connection, and
``BUFFERED_REQUEST_BYTES_MAX`` for the partly received requests of all connections together;
the rest of a message over them is read and dropped, and the peer answered
(``request_too_large``, ``buffer_full``). ``_Connection`` is one peer's state.

Not thread-safe: part of ZmtpServer, owned by the node's reactor thread.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Callable

from fabric import protocol as P
from fabric import wire
from fabric.buffers import OwnedFrame
from fabric.errors import MalformedFrame
from fabric.zmtp_codec import (FLAG_COMMAND, FLAG_MORE, GREETING_BYTES, HANDSHAKE_BYTES_MAX, ProtocolViolation,
                               frame_header_at, greeting_at, parse_ready, pong_for, ready_command)

COMMAND_BYTES_MAX = 1024           # PING and other commands after the handshake
PEER_IDENTITY_BYTES_MAX = 255      # ZMTP's limit for a routing id
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


class RequestParserMixin:
    """``ZmtpServer``'s handshake and parser. Part of ZmtpServer (its state is the server's own)."""

    # the server's state this half uses (set by ZmtpServer.__init__)
    on_message: Callable[[list[bytes]], None]
    counters: Counter[str]
    buffered_bytes: int
    _by_identity: dict[bytes, _Connection]

    if TYPE_CHECKING:  # ZmtpServer's, never these
        def _budget_left(self, conn: _Connection) -> bool: ...
        def _pause(self, conn: _Connection) -> None: ...
        def send(self, frames: list) -> None: ...
        def _write(self, conn: _Connection, pieces: list, *, sizes: list[int] | None = None,
                   handshake: bool = False) -> bool: ...

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
                held = count = 0  # the message's bytes and frames so far
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
                    if body_end > end or count >= frames_max or held > bytes_max or size >= owned_min:
                        return pos
                    frames.append(bytes(data[at + 2:body_end]))
                    count += 1
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
