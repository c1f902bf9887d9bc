"""Request/reply over ROUTER/DEALER.

``RpcServer`` binds the node's request port (``fabric.zmtp.ZmtpServer``: ROUTER semantics,
each request bounded as it arrives), decodes every request, and dispatches by command to a handler.
A handler returns ``(header, payloads)`` to answer now, or ``DEFER`` to answer later with
``server.reply`` (long-poll fetch, acks=all). Malformed input is answered with an error where
the peer can be addressed, otherwise dropped, and always counted; the node keeps serving.
A handler refuses a request by raising ``RemoteError`` (or ``MalformedFrame``), answered with
its code; another operating error (a ``LoomError``, e.g. a full disk) is answered with
``unknown`` and logged. Any other exception is a bug: it is not answered but leaves the
reactor, which stops the node (``nodes.run``) so that it restarts from disk.

``RpcClient`` is the reactor-driven DEALER side: many requests in flight on one socket,
matched by request id, each with a deadline. To a tcp:// endpoint it speaks ZMTP itself on a
socket the reactor thread reads and writes (``fabric.zmtp_client.ZmtpDealer``), as the request
port does on its side: a request and its reply cross no libzmq I/O thread at either end.
``BlockingClient`` (``fabric.blocking_client``) is the same for a simple caller (CLI, admin),
with retries and capped exponential backoff for idempotent requests.

Thread-safety: none; each object belongs to its reactor's (or caller's) thread.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from typing import Any, Callable

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.errors import (CodedError, LoomError, MalformedFrame, RemoteError, RequestQueueFullError, RequestTimeout,
                           connect_failed)
from fabric.metrics import MetricsRegistry
from fabric.reactor import Reactor, Timer
from fabric.zmq_io import send_frames
from fabric.zmtp import ZmtpServer
from fabric.zmtp_client import ZmtpDealer

log = logging.getLogger(__name__)

DEFER = object()
Handler = Callable[[wire.Request], Any]
# err: the node's answer (RemoteError), or the client's own condition (RequestTimeout,
# RequestQueueFullError): both CodedError
ReplyCallback = Callable[[dict | None, list[bytes], CodedError | None], None]


def dealer_identity(identity: str | None) -> bytes | None:
    """The identity a client announces: its name, pid and random bytes (unique per socket)."""
    if identity is None:
        return None
    return f"{identity}/{os.getpid()}/{os.urandom(3).hex()}".encode()


def make_socket(ctx: zmq.Context, kind: int, identity: str | None = None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, P.SNDHWM)
    sock.setsockopt(zmq.RCVHWM, P.RCVHWM)
    sock.setsockopt(zmq.RECONNECT_IVL, P.RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, P.RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, P.REQUEST_BYTES_MAX)
    sock.copy_threshold = P.ZERO_COPY_BYTES_MIN
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, dealer_identity(identity))
    return sock


_COMMAND_LABELS: dict[bytes, str] = {}


def command_label(command: bytes) -> str:
    """A command as a metric label (cached: only routed commands get here, a bounded set)."""
    label = _COMMAND_LABELS.get(command)
    if label is None:
        label = _COMMAND_LABELS[command] = command.decode("ascii", "replace")
    return label


class _RouterPort:
    """A libzmq ROUTER as the request port, for endpoints no remote peer can reach (inproc,
    ipc): the same ``send``/``close`` as ``ZmtpServer``."""

    def __init__(self, ctx: zmq.Context, reactor: Reactor, endpoint: str,
                 on_message: Callable[[list[bytes]], None], counters: Counter[str]) -> None:
        self.reactor = reactor
        self.counters = counters
        self.sock = make_socket(ctx, zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.sock.bind(endpoint)
        reactor.add_socket(self.sock, on_message)

    def send(self, frames: list) -> None:
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            self.counters["reply_dropped_hwm"] += 1  # peer not reading: it will time out
        except zmq.ZMQError as e:
            self.counters["reply_dropped"] += 1
            log.debug("reply dropped: %s", e)

    def close(self) -> None:
        self.reactor.remove_socket(self.sock)
        self.sock.close(0)


class RpcServer:
    """The request port of a node. It is not a libzmq ROUTER, which would buffer an unfinished
    multipart message without bound, but ``fabric.zmtp.ZmtpServer``: the same wire for DEALER
    clients, with each request bounded (REQUEST_BYTES_MAX, FRAMES_MAX) as it arrives."""

    def __init__(self, ctx: zmq.Context, reactor: Reactor, endpoint: str) -> None:
        self.reactor = reactor
        self.handlers: dict[bytes, Handler] = {}
        self.counters: Counter[str] = Counter()
        self.drop_from: Callable[[bytes], bool] | None = None  # fault injection: by identity
        if endpoint.startswith("tcp://"):
            self.port: ZmtpServer | _RouterPort = ZmtpServer(ctx, reactor, endpoint, self._on_message, self.counters)
        else:  # inproc/ipc (tests, one process): no remote peer; libzmq's STREAM is TCP only
            self.port = _RouterPort(ctx, reactor, endpoint, self._on_message, self.counters)
        self.sock = self.port.sock
        self.metrics: MetricsRegistry | None = None  # the node's registry: requests, errors, latency

    def route(self, command: bytes, handler: Handler) -> None:
        self.handlers[command] = handler

    @property
    def output_bytes(self) -> int:
        """Bytes of replies waiting for the kernel to take them (``close`` drops them); 0 on a
        libzmq port, whose own queues hold them."""
        return self.port.tcp.output_bytes if isinstance(self.port, ZmtpServer) else 0

    def reply(self, req: wire.Request, header: dict | None = None, payloads: list | tuple = ()) -> None:
        h = {"id": req.id}
        if header:
            h.update(header)
        if self.metrics is not None:
            self._observe(req)
        self._send(wire.encode_reply(req.identity, h, payloads))

    def reply_error(self, req: wire.Request, code: int, message: str, **extra: Any) -> None:
        self.counters[f"error_{P.error_name(code)}"] += 1
        if self.metrics is not None and req.command in self.handlers:
            self._observe(req)
            self.metrics.inc("loom_request_errors_total", (command_label(req.command), P.error_name(code)))
        self._send(wire.encode_reply(req.identity, wire.error_header(req.id, code, message, **extra)))

    def _observe(self, req: wire.Request) -> None:
        if req.received_ms:
            elapsed_s = (self.reactor.clock.now_ms() - req.received_ms) / 1000
            self.metrics.observe("loom_request_duration_seconds", (command_label(req.command),), elapsed_s)  # type: ignore[union-attr]

    def _send(self, frames: list) -> None:
        self.port.send(frames)

    def _on_message(self, frames: list[bytes]) -> None:
        if self.drop_from is not None and self.drop_from(frames[0]):
            return
        try:
            req = wire.decode_request(frames, self.reactor.clock.now_ms())
        except MalformedFrame as e:
            self.counters["malformed"] += 1
            if e.request is not None:
                self.reply_error(e.request, e.code, str(e))  # type: ignore[arg-type]
            else:
                self._answer_malformed(frames, e)
            return
        handler = self.handlers.get(req.command)
        if handler is None:
            self.counters["malformed"] += 1
            self.reply_error(req, P.UNKNOWN_COMMAND, f"unknown command {req.command[:32]!r}")
            return
        self.counters["requests"] += 1
        if self.metrics is not None:
            self.metrics.inc("loom_requests_total", (command_label(req.command),))
        try:
            result = handler(req)
        except RemoteError as e:
            self.reply_error(req, e.code, e.message, **e.details)
            return
        except MalformedFrame as e:
            self.counters["malformed"] += 1
            self.reply_error(req, e.code, str(e))
            return
        except LoomError as e:  # an operating error (disk full…): answered; a bug is not caught
            log.exception("handler for %r failed", req.command)
            self.reply_error(req, P.UNKNOWN, f"{type(e).__name__}: {e}")
            return
        if result is DEFER:
            return
        header, payloads = result if isinstance(result, tuple) else (result, ())
        self.reply(req, header, payloads)

    def _answer_malformed(self, frames: list[bytes], e: MalformedFrame) -> None:
        try:
            identity, _ = wire.split_router_frames(frames)
        except MalformedFrame:
            identity = frames[:1]  # ROUTER always prepends one identity frame
        if identity:
            self._send(wire.encode_reply(identity, wire.error_header(0, e.code, str(e))))

    def close(self) -> None:
        self.port.close()


class _LibzmqDealer:
    """A libzmq DEALER as an RpcClient's transport, for endpoints no remote peer can reach
    (inproc, ipc): the same ``send``/``close``/``refused`` as ``ZmtpDealer``."""

    refused = False  # not watched (libzmq retries in silence): these endpoints serve one host's tests
    connect_error = 0

    def __init__(self, ctx: zmq.Context, reactor: Reactor, endpoint: str, identity: str | None,
                 on_message: Callable[[list[bytes]], None]) -> None:
        self.reactor = reactor
        self.sock = make_socket(ctx, zmq.DEALER, identity)
        self.sock.connect(endpoint)
        reactor.add_socket(self.sock, on_message)

    def send(self, frames: list, on_written: Callable[[bool], None] | None = None) -> bool:
        """``on_written(True)`` once libzmq took the message (its own queue is not visible:
        inproc and ipc only)."""
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            return False
        if on_written is not None:
            on_written(True)
        return True

    def connect_now(self) -> None:
        """Nothing to do: never ``refused``."""

    def close(self) -> None:
        self.reactor.remove_socket(self.sock)
        self.sock.close(0)


class RpcClient:
    """Reactor-driven DEALER to one endpoint, many requests in flight. For a tcp:// endpoint
    it is a ``fabric.zmtp_client.ZmtpDealer`` (ZMTP on a socket the reactor thread reads and
    writes itself: no libzmq I/O thread between the request and the wire); else a libzmq
    DEALER.

    ``reconnect_ivl_max_ms``: the cap of its reconnect backoff (tcp:// only), for a client that
    must see a restarted peer sooner than ``P.RECONNECT_IVL_MAX_MS``. ``fail_on_disconnect``
    (tcp:// only): when the connection the requests in flight went out on ends, they fail at
    once (on the reactor's next pass) with a retriable ``RequestTimeout`` instead of at their
    deadlines: no answer can come on it (a peer killed with them took them along). For callers
    whose deadlines are long and whose retries are harmless (a group member's requests to its
    coordinator); an answer its peer still sends on a new connection is dropped as a late one.
    ``fail_on_refused`` (tcp:// only): the commands whose requests fail when a connect to the
    peer fails while they wait -- at once, on the reactor's next pass, with a retriable
    ``ConnectFailed`` instead of at their deadlines, as the transport retries the connect in
    silence: ``ConnectionRefused`` when its port refused it (its process dead, its host up),
    ``PeerUnreachable`` when its host is out of reach (EHOSTUNREACH, ENETUNREACH, the kernel's
    connect timeout), the errno named in the message either way. One made while the last
    connect failed (and the next is not under way) is not sent and fails so too, and has the
    next connect made at once: the caller's retry finds the peer back on its port (or refusing
    again), paced by the caller, not by the transport's backoff (seconds). For requests another
    node can answer instead, or that change nothing when carried out twice (metadata asks,
    INIT_PRODUCER_ID), never for one whose outcome matters (a produce: it may still go out on
    the next connection)."""

    def __init__(self, ctx: zmq.Context, reactor: Reactor, endpoint: str, identity: str | None = None, *,
                 reconnect_ivl_max_ms: int = P.RECONNECT_IVL_MAX_MS, fail_on_disconnect: bool = False,
                 fail_on_refused: tuple[bytes, ...] = ()) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self._fail_on_refused = frozenset(fail_on_refused)
        self._ids = itertools.count(1)
        # request id -> (callback, timeout timer, whether a refused connect fails it: fail_on_refused)
        self._pending: dict[int, tuple[ReplyCallback, Timer, bool]] = {}
        self.counters: Counter[str] = Counter()
        self.drop_replies: Callable[[], bool] | None = None  # fault injection
        if endpoint.startswith("tcp://"):
            self.transport: ZmtpDealer | _LibzmqDealer = ZmtpDealer(
                reactor, endpoint, self._on_message, identity=dealer_identity(identity), counters=self.counters,
                reconnect_ivl_max_ms=reconnect_ivl_max_ms,
                on_lost=self._connection_lost if fail_on_disconnect else None, on_refused=self._connection_refused)
        else:
            self.transport = _LibzmqDealer(ctx, reactor, endpoint, identity, self._on_message)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def request(self, command: bytes, header: dict, payloads: list | tuple = (), *,
                callback: ReplyCallback, timeout_ms: int) -> int:
        """Send a request; ``callback`` gets its reply or error once. Returns its id (0: it
        failed at once)."""
        if len(self._pending) >= P.IN_FLIGHT_REQUESTS_MAX:
            callback(None, [], RequestQueueFullError("too many requests in flight"))
            return 0
        rid = next(self._ids)
        header = dict(header, id=rid)
        fail_on_refused = command in self._fail_on_refused
        refused = fail_on_refused and self.transport.refused
        if refused:  # not sent (it would wait, and go out late); the caller's retry finds this connect
            self.transport.connect_now()
        if not refused and not self.transport.send(wire.encode_request(command, header, payloads)):
            callback(None, [], RequestQueueFullError(f"send queue to {self.endpoint} is full"))
            return 0
        timer = self.reactor.call_later(timeout_ms, lambda: self._expire(rid))
        self._pending[rid] = (callback, timer, fail_on_refused)
        if refused:
            self._connection_refused(self.transport.connect_error)
        return rid

    def send_oneway(self, command: bytes, header: dict, payloads: list | tuple = (),
                    on_written: Callable[[bool], None] | None = None) -> bool:
        """Fire and forget (the reply, if any, is ignored). False: refused (the send queue is
        full), nothing sent. ``on_written(ok)``: whether the message reached the kernel, or
        was dropped unwritten with its connection (``ZmtpDealer.send``)."""
        if not self.transport.send(wire.encode_request(command, dict(header, id=0), payloads), on_written):
            self.counters["oneway_dropped"] += 1
            return False
        return True

    def _expire(self, rid: int) -> None:
        entry = self._pending.pop(rid, None)
        if entry is not None:
            entry[0](None, [], RequestTimeout(f"no reply from {self.endpoint}"))

    def _connection_lost(self) -> None:
        """The requests pending now went out on a connection that ended: fail them on the next
        pass (not inside the transport's handling, which may be inside a ``request``)."""
        lost = list(self._pending)
        error = RequestTimeout(f"connection to {self.endpoint} lost before the reply")
        self.reactor.call_later(0, lambda: self._fail(lost, error))

    def _connection_refused(self, code: int) -> None:
        """A connect failed with errno ``code``: the pending requests of the ``fail_on_refused``
        commands fail on the next pass, as at a lost connection."""
        refused = [rid for rid, (_, _, refusable) in self._pending.items() if refusable]
        if refused:
            error = connect_failed(self.endpoint, code)
            log.debug("%s: %d request(s) failed: %s", self.endpoint, len(refused), error.message)
            self.reactor.call_later(0, lambda: self._fail(refused, error))

    def _fail(self, request_ids: list[int], error: CodedError) -> None:
        for rid in request_ids:
            entry = self._pending.pop(rid, None)
            if entry is not None:  # else answered or timed out meanwhile
                entry[1].cancel()
                entry[0](None, [], error)

    def _on_message(self, frames: list[bytes]) -> None:
        if self.drop_replies is not None and self.drop_replies():
            return
        try:
            header, payloads = wire.decode_reply(frames)
        except MalformedFrame:
            self.counters["malformed"] += 1
            return
        entry = self._pending.pop(header.get("id", -1), None)
        if entry is None:
            return  # late reply to a request that timed out, or a one-way ack
        callback, timer, _ = entry
        timer.cancel()
        code = header.get("error", 0)
        if code:
            callback(None, payloads, RemoteError(code, header.get("message", ""), **reply_details(header)))
        else:
            callback(header, payloads, None)

    def cancel(self, request_id: int) -> bool:
        """Forget request ``request_id``: its callback is never called, and a reply that still
        comes is dropped like a late one. False if it was not pending (answered, timed out)."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return False
        entry[1].cancel()
        return True

    def fail_all(self, error: CodedError) -> None:
        pending, self._pending = self._pending, {}
        for callback, timer, _ in pending.values():
            timer.cancel()
            callback(None, [], error)

    def close(self) -> None:
        self.transport.close()


def reply_details(header: dict) -> dict:
    """An error reply's fields besides its id, code and message (``RemoteError``'s details)."""
    return {k: v for k, v in header.items() if k not in ("id", "error", "message")}
