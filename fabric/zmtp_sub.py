"""The SUB end of ZMTP 3.0 on TCP sockets the reactor thread reads itself.

A libzmq SUB reads on libzmq's I/O thread and hands each message over to the thread that
handles it: one more thread to wake on every message. ``ZmtpSubscriber`` speaks the same wire
as the clients' ``ZmtpDealer`` (``fabric.zmtp_client``, whose connection handling it reuses:
reconnect with backoff, handshake timeout, bounded input, PING answered), with ``Socket-Type``
SUB, to any ZMTP 3 PUB (a node's libzmq PUB socket): the kernel wakes the thread that handles
the message. A broker's replication stream is read this way (``nodes.broker.replication``).

What a libzmq SUB's users rely on, kept:
- ``connect(endpoint)`` / ``disconnect(endpoint)``, one connection per publisher, each made
  again by itself when lost;
- ``subscribe(prefix)`` / ``unsubscribe(prefix)``: ZMTP 3.0's subscription messages (``\\x01``
  or ``\\x00`` and the prefix) to every connected publisher, and all current subscriptions to a
  publisher at every handshake -- after a publisher restarts too;
- only messages whose first frame starts with a subscribed prefix are handed on (a publisher
  filters too; a message sent before an unsubscription reached it is dropped here);
- ``messages_per_pass`` bounds the messages handed on per reactor pass and connection (twice
  that when the rest of a read is handed on by the pass's timers), as
  ``Reactor.add_socket(messages_max=...)`` did for the libzmq socket.
A SUB drops nothing itself: a publisher whose subscriber does not keep up drops at its
high-water mark, as before.

Not thread-safe: owned by the reactor's thread.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from fabric import protocol as P
from fabric.reactor import Reactor
from fabric.zmtp_codec import encode_frames
from fabric.zmtp_client import ZmtpDealer, connect_address

_SUBSCRIBE, _UNSUBSCRIBE = b"\x01", b"\x00"


def _subscription_bytes(prefixes: list[bytes], command: bytes) -> bytes:
    """ZMTP 3.0 subscription messages, one per prefix, as one piece of output."""
    out = bytearray()
    for prefix in prefixes:
        for piece in encode_frames([command + prefix], len(prefix) + 2)[0]:
            out += piece
    return bytes(out)


class _Connection(ZmtpDealer):
    """One publisher: a dealer's connection that introduces itself as a SUB and subscribes to
    everything its subscriber wants at every handshake."""

    SOCKET_TYPE = b"SUB"
    PEER_SOCKET_TYPES = (b"PUB", b"XPUB")

    def __init__(self, owner: ZmtpSubscriber, endpoint: str, **kw) -> None:
        self.owner = owner
        super().__init__(owner.reactor, endpoint, owner._deliver, **kw)

    def _handshake_done(self) -> None:
        self.write_subscriptions(sorted(self.owner.prefixes), _SUBSCRIBE)

    def write_subscriptions(self, prefixes: list[bytes], command: bytes) -> None:
        """Subscription messages to a connected publisher (not counted against the high-water
        mark: they are bounded by the prefixes there are); nothing before the handshake, which
        sends all of them."""
        if self.connected and prefixes:
            data = _subscription_bytes(prefixes, command)
            self._write([data], [len(data)])


class ZmtpSubscriber:
    def __init__(self, reactor: Reactor, on_message: Callable[[list[bytes]], None] | None = None, *,
                 messages_per_pass: int | None = None, reconnect_ivl_max_ms: int = P.RECONNECT_IVL_MAX_MS,
                 counters: Counter[str] | None = None) -> None:
        if messages_per_pass is not None and messages_per_pass < 1:  # refused now, not at connect
            raise ValueError(f"messages_per_pass must be at least 1, not {messages_per_pass}")
        self.reactor = reactor
        self.on_message: Callable[[list[bytes]], None] = on_message or (lambda frames: None)  # before connecting
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.prefixes: set[bytes] = set()
        self._lengths: dict[int, int] = {}  # prefix length -> how many prefixes have it
        self._connections: dict[str, _Connection] = {}
        self._options = {"messages_per_pass": messages_per_pass, "reconnect_ivl_max_ms": reconnect_ivl_max_ms,
                         "counters": self.counters}

    @property
    def endpoints(self) -> list[str]:
        return list(self._connections)

    def connect(self, endpoint: str) -> None:
        """Connect to a publisher (a second connect to the same endpoint does nothing). A
        malformed endpoint raises ``zmq.ZMQError``, as libzmq's connect."""
        connect_address(endpoint)
        if endpoint not in self._connections:
            self._connections[endpoint] = _Connection(self, endpoint, **self._options)

    def disconnect(self, endpoint: str) -> None:
        conn = self._connections.pop(endpoint, None)
        if conn is not None:
            conn.close()

    def subscribe(self, prefix: bytes) -> None:
        self.subscribe_many([prefix])

    def unsubscribe(self, prefix: bytes) -> None:
        self.unsubscribe_many([prefix])

    def subscribe_many(self, prefixes: Iterable[bytes]) -> None:
        """Subscribe to each prefix not yet subscribed: one write per connected publisher (a
        broker following 1,000 partitions subscribes to 1,000 prefixes at once)."""
        new = [p for p in dict.fromkeys(prefixes) if p not in self.prefixes]
        for prefix in new:
            self.prefixes.add(prefix)
            self._lengths[len(prefix)] = self._lengths.get(len(prefix), 0) + 1
        for conn in self._connections.values():
            conn.write_subscriptions(new, _SUBSCRIBE)

    def unsubscribe_many(self, prefixes: Iterable[bytes]) -> None:
        gone = [p for p in dict.fromkeys(prefixes) if p in self.prefixes]
        for prefix in gone:
            self.prefixes.discard(prefix)
            left = self._lengths[len(prefix)] - 1
            if left:
                self._lengths[len(prefix)] = left
            else:
                del self._lengths[len(prefix)]
        for conn in self._connections.values():
            conn.write_subscriptions(gone, _UNSUBSCRIBE)

    def _deliver(self, frames: list[bytes]) -> None:
        topic = frames[0]
        if type(topic) is not bytes:
            topic = bytes(topic[:max(self._lengths, default=0)])
        prefixes = self.prefixes
        if topic in prefixes:  # a topic frame that is the prefix itself (Loom's streams)
            self.on_message(frames)
            return
        for n in self._lengths:
            if topic[:n] in prefixes:
                self.on_message(frames)
                return
        self.counters["sub_unsubscribed_dropped"] += 1

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


__all__ = ["ZmtpSubscriber"]
