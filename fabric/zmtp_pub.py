"""The PUB end of ZMTP 3.0 on a TCP port the reactor thread writes itself.

A libzmq PUB socket hands every message to libzmq's I/O thread, which wakes to write it: on a
broker, every replicated batch crossed a thread on its way to the followers (the largest hop of
a produce's round trip, and ~50 µs of CPU per message in that thread, most of it waking). Here
the thread that publishes writes the message to each subscriber's socket itself (one
``sendmsg`` each, on ``fabric.tcp_port``), as the request port answers requests: the kernel
wakes the follower's thread directly.

What a libzmq PUB's users rely on, kept:
- any ZMTP 3 SUB or XSUB connects (libzmq's, or ``fabric.zmtp_sub.ZmtpSubscriber``), with the
  same handshake (greeting, READY with ``Socket-Type`` PUB);
- subscriptions: ZMTP 3.0's subscription messages (``\\x01`` or ``\\x00`` and the prefix) and
  ZMTP 3.1's SUBSCRIBE and CANCEL commands; counted per prefix, so a prefix subscribed twice
  needs two unsubscriptions, as libzmq's trie counts them; an empty prefix takes everything;
- a message goes whole, or not at all, to each subscriber whose prefixes match its first frame,
  and nothing to the others; messages published before a subscription arrived are not sent
  (ZeroMQ's slow joiner); the messages of one reactor pass are written together at its end, as
  libzmq's I/O thread writes what is queued at once;
- **never blocks**: a subscriber that does not read loses messages once ``OUTPUT_BYTES_MAX``
  of its output is waiting (counted in ``counters["dropped"]``), as at a PUB's high-water mark; the
  replication stream repairs a gap over the fetch path;
- what a subscriber sends that is not a subscription (an XSUB's own messages) is read and
  ignored; a peer that breaks the protocol (a bad greeting, a frame over its limit, too many
  prefixes, or of too many bytes) is disconnected, and so is one whose handshake is not done within
  ``HANDSHAKE_IVL_MS`` (libzmq's ZMQ_HANDSHAKE_IVL: silent, or greeting byte by byte);
- at most ``CONNECTIONS_MAX`` connections: a new one takes the place of one still in its
  handshake, else of the least recently active one without a subscription, else of the least
  recently active one (as at the request port, ``fabric.zmtp``), so that peers which connect and
  stay cannot lock the node's subscribers out, and a burst of them that never subscribes does
  not cut the followers' replication streams, which only read once subscribed (a SUB that is
  dropped connects again by itself).

Not thread-safe: owned by the node's reactor thread.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

from fabric.reactor import Reactor, Timer
from fabric.tcp_port import TcpPort
from fabric.zmtp_codec import (FLAG_COMMAND, FLAG_MORE, GREETING, GREETING_UNIT, HANDSHAKE_BYTES_MAX,
                               ProtocolViolation, encode_frames, next_unit, parse_ready, pong_for, ready_command)

log = logging.getLogger(__name__)

OUTPUT_BYTES_MAX = 32 * 1024 * 1024  # one subscriber's waiting output before messages to it are dropped
SUBSCRIPTION_BYTES_MAX = 64 * 1024    # one subscription message (its prefix and the \x01)
PREFIXES_MAX = 100_000               # distinct prefixes one subscriber may hold
PREFIX_BYTES_MAX = 16 * 1024 * 1024  # their bytes together (a follower's: ~100 bytes per partition)
INPUT_BYTES_MAX = 1024 * 1024        # unparsed input held for one subscriber
JOIN_BYTES_MAX = 64 * 1024           # frames up to this size are joined with their headers
# a subscriber's input read per reactor pass: ~5,000 subscription messages, whose parsing holds the
# pass up (the port's default, 4 MiB, took seconds); a follower of 1,000 partitions subscribes in ~30 KB
RECEIVE_BYTES = 16 * 1024
CONNECTIONS_MAX = 1_000              # a node's subscribers: the brokers, the coordinator, monitor, gateways
HANDSHAKE_IVL_MS = 30_000            # libzmq's ZMQ_HANDSHAKE_IVL default: connect to READY

_PEER_SOCKET_TYPES = (b"SUB", b"XSUB")
READY = ready_command(b"PUB")


def _input_limit(flags: int) -> int:
    return HANDSHAKE_BYTES_MAX if flags & FLAG_COMMAND else SUBSCRIPTION_BYTES_MAX


class _Subscriber:
    __slots__ = ("conn_id", "buf", "greeted", "ready", "prefixes", "lengths", "prefix_bytes", "in_message", "pieces",
                 "sizes", "messages")

    def __init__(self, conn_id: bytes) -> None:
        self.conn_id = conn_id
        self.buf = bytearray()
        self.greeted = False
        self.ready = False
        self.prefixes: dict[bytes, int] = {}  # prefix -> times subscribed
        self.lengths: dict[int, int] = {}     # prefix length -> distinct prefixes of that length
        self.prefix_bytes = 0                 # of the distinct prefixes (PREFIX_BYTES_MAX)
        self.in_message = False               # later frames of a multi-frame message: not subscriptions
        self.pieces: list = []                # the messages published to it in this pass, to write at its end
        self.sizes: list[int] = []
        self.messages = 0

    def wants(self, topic: bytes) -> bool:
        prefixes = self.prefixes
        if topic in prefixes:
            return True
        lengths = self.lengths
        if len(lengths) > len(topic):  # the topic's own prefixes are fewer (a subscriber may have thousands)
            lengths = range(len(topic))
        for n in lengths:
            if topic[:n] in prefixes:
                return True
        return False

    def subscribe(self, prefix: bytes) -> None:
        count = self.prefixes.get(prefix, 0)
        if not count:
            if len(self.prefixes) >= PREFIXES_MAX:
                raise ProtocolViolation(f"more than {PREFIXES_MAX} subscriptions")
            if self.prefix_bytes + len(prefix) > PREFIX_BYTES_MAX:
                raise ProtocolViolation(f"subscriptions of more than {PREFIX_BYTES_MAX} bytes")
            self.prefix_bytes += len(prefix)
            self.lengths[len(prefix)] = self.lengths.get(len(prefix), 0) + 1
        self.prefixes[prefix] = count + 1

    def unsubscribe(self, prefix: bytes) -> None:
        count = self.prefixes.get(prefix, 0)
        if count > 1:
            self.prefixes[prefix] = count - 1
        elif count == 1:
            del self.prefixes[prefix]
            self.prefix_bytes -= len(prefix)
            left = self.lengths[len(prefix)] - 1
            if left:
                self.lengths[len(prefix)] = left
            else:
                del self.lengths[len(prefix)]


class ZmtpPublisher:
    """A PUB socket bound to ``endpoint`` (``tcp://host:port``); ``send(frames)`` publishes.
    A bind that fails raises ``zmq.ZMQError``, as libzmq's bind."""

    def __init__(self, reactor: Reactor, endpoint: str, counters: Counter[str] | None = None) -> None:
        self.counters: Counter[str] = counters if counters is not None else Counter()
        # least recently active first: the order _eviction_victim picks in when the table is full
        self._subscribers: OrderedDict[bytes, _Subscriber] = OrderedDict()
        self._ready: list[_Subscriber] = []  # handshake done: the ones a message may go to
        self._pending: list[_Subscriber] = []  # with messages published in this pass, to write at its end
        self._flush_waiting = False  # a flush is handed to the reactor's pass end
        # connections whose handshake is under way -> its deadline (ms), oldest first: one timer for all
        self._handshaking: dict[bytes, int] = {}
        self._handshake_timer: Timer | None = None
        self.reactor = reactor
        self.tcp = TcpPort(reactor, endpoint, self._on_stream, self.counters, output_bytes_max=OUTPUT_BYTES_MAX,
                           receive_bytes=RECEIVE_BYTES, reads_per_pass=1)

    @property
    def address(self) -> tuple:
        return self.tcp.address

    @property
    def subscribers(self) -> int:
        return len(self._ready)

    # -- publishing ------------------------------------------------------------------------------
    def send(self, frames: list) -> None:
        """Publish one message to every subscriber of its first frame (matched now, as libzmq's
        PUB matches at send). The messages of one reactor pass go out together at its end
        (``Reactor.at_pass_end``: after the pass's handlers, hooks and timers), one ``sendmsg``
        per subscriber for all of them -- a produce of many partitions publishes a message per
        partition. A message dropped for a subscriber (its output full, its connection broken or
        gone) is counted in ``counters["dropped"]``. A frame that is not a contiguous buffer
        raises before anything is queued."""
        topic = frames[0]
        if topic.__class__ is not bytes:
            topic = bytes(topic)
        pieces = sizes = None
        for sub in self._ready:
            if not sub.wants(topic):
                continue
            if pieces is None:
                pieces, sizes = encode_frames(frames, JOIN_BYTES_MAX)
            if not sub.messages:
                self._pending.append(sub)
            sub.pieces += pieces
            sub.sizes += sizes
            sub.messages += 1
        if self._pending and not self._flush_waiting:
            self._flush_waiting = True
            self.reactor.at_pass_end(self._flush_at_pass_end)

    def _flush_at_pass_end(self) -> None:
        self._flush_waiting = False
        self.flush()

    def flush(self) -> None:
        """Write what was published since the last flush now."""
        pending, self._pending = self._pending, []
        dropped = 0
        for sub in pending:
            pieces, sizes, messages = sub.pieces, sub.sizes, sub.messages
            sub.pieces, sub.sizes, sub.messages = [], [], 0
            if not sub.ready or not self.tcp.write(sub.conn_id, pieces, sizes=sizes):
                dropped += messages
        if dropped:
            self.counters["dropped"] += dropped

    # -- subscribers -------------------------------------------------------------------------------
    def _on_stream(self, frames: list) -> None:
        conn_id, data = frames
        sub = self._subscribers.get(conn_id)
        if not data:
            if sub is None:  # a new connection
                if len(self._subscribers) >= CONNECTIONS_MAX:
                    self.counters["connections_evicted"] += 1
                    self._close(self._eviction_victim())
                sub = self._subscribers[conn_id] = _Subscriber(conn_id)
                self._handshaking[conn_id] = self.reactor.clock.now_ms() + HANDSHAKE_IVL_MS
                if self._handshake_timer is None:
                    self._handshake_timer = self.reactor.call_later(HANDSHAKE_IVL_MS, self._expire_handshakes)
                self.tcp.write(conn_id, [GREETING], handshake=True)
            else:  # gone
                self._forget(sub)
            return
        if sub is None:
            return
        self._subscribers.move_to_end(conn_id)
        try:
            self._feed(sub, data)
        except ProtocolViolation as e:
            self.counters["protocol_violations"] += 1
            log.info("disconnecting a subscriber that broke ZMTP: %s", e)
            self._close(sub)

    def _eviction_victim(self) -> _Subscriber:
        """The connection that makes room for a new one at CONNECTIONS_MAX: the oldest still in
        its handshake, else the least recently active without a subscription, else the least
        recently active. A subscriber only reads once it has subscribed -- by its input a
        follower's replication stream is always the idlest connection, and a burst of
        connections that never subscribe would evict the streams first."""
        if self._handshaking:
            return self._subscribers[next(iter(self._handshaking))]
        for sub in self._subscribers.values():  # a scan only at the bound, of at most CONNECTIONS_MAX
            if not sub.prefixes:
                return sub
        return next(iter(self._subscribers.values()))

    def _expire_handshakes(self) -> None:
        """Disconnect the peers whose handshake is past its deadline; wait for the next one."""
        self._handshake_timer = None
        now = self.reactor.clock.now_ms()
        while self._handshaking:
            conn_id, deadline_ms = next(iter(self._handshaking.items()))
            if deadline_ms > now:
                self._handshake_timer = self.reactor.call_later(deadline_ms - now, self._expire_handshakes)
                return
            self.counters["handshake_timeouts"] += 1
            self._close(self._subscribers[conn_id])  # forgets its handshake too

    def _feed(self, sub: _Subscriber, data) -> None:
        buf = sub.buf
        buf += data
        pos = 0
        try:
            while True:
                unit = next_unit(buf, pos, sub.greeted, _input_limit)
                if unit is None:
                    break
                flags, body, used = unit
                pos += used
                if flags == GREETING_UNIT:
                    sub.greeted = True
                elif flags & FLAG_COMMAND:
                    self._on_command(sub, body)
                elif not sub.ready:
                    raise ProtocolViolation("a message before the READY handshake")
                else:
                    self._on_message_frame(sub, body, flags)
        finally:
            del buf[:pos]
        if len(buf) > INPUT_BYTES_MAX:
            raise ProtocolViolation(f"more than {INPUT_BYTES_MAX} bytes of input unparsed")

    def _on_message_frame(self, sub: _Subscriber, body: bytes, flags: int) -> None:
        first = not sub.in_message
        sub.in_message = bool(flags & FLAG_MORE)
        if not first or sub.in_message or not body or body[0] > 1:
            return  # not a subscription: a frame of an XSUB's own message
        self._subscription(sub, body[1:], body[0] == 1)

    def _subscription(self, sub: _Subscriber, prefix: bytes, subscribe: bool) -> None:
        if subscribe:
            sub.subscribe(prefix)
        else:
            sub.unsubscribe(prefix)

    def _on_command(self, sub: _Subscriber, body: bytes) -> None:
        if not sub.ready:
            props = parse_ready(body)
            if props.get(b"socket-type") not in _PEER_SOCKET_TYPES:
                raise ProtocolViolation(f"socket type {props.get(b'socket-type')!r} cannot subscribe to a PUB")
            sub.ready = True
            self._ready.append(sub)
            self._handshaking.pop(sub.conn_id, None)
            self.tcp.write(sub.conn_id, [READY], handshake=True)
            return
        if body[:10] == b"\x09SUBSCRIBE":  # ZMTP 3.1
            self._subscription(sub, body[10:], True)
            return
        if body[:7] == b"\x06CANCEL":
            self._subscription(sub, body[7:], False)
            return
        pong = pong_for(body)
        if pong is not None:
            self.tcp.write(sub.conn_id, [pong])

    def _close(self, sub: _Subscriber) -> None:
        """Disconnect the peer now (its waiting output is dropped)."""
        self._forget(sub)
        self.tcp.close(sub.conn_id)

    def _forget(self, sub: _Subscriber) -> None:
        self._subscribers.pop(sub.conn_id, None)
        self._handshaking.pop(sub.conn_id, None)
        if sub.ready:
            self._ready.remove(sub)
            sub.ready = False
        sub.buf = bytearray()

    def close(self) -> None:
        self.flush()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._handshaking.clear()
        self.tcp.shutdown()
        self._subscribers.clear()
        self._ready.clear()


__all__ = ["ZmtpPublisher"]
