"""``BlockingClient``: a synchronous DEALER for simple callers (the CLI, admin, bootstrap's
metadata asks, tests), with retries and capped exponential backoff for idempotent requests,
and -- on request -- early failure when its connection ends or is refused (libzmq's socket
monitor). The reactor-driven side, on the request path of every node, is ``fabric.rpc``.

Thread-safety: none; a client belongs to its caller's thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from fabric import protocol as P
from fabric import wire
from fabric.errors import (CodedError, ConnectFailed, ConnectionLost, GaveUp, MalformedFrame, RemoteError, RequestTimeout,
                           connect_failed)
from fabric.rpc import make_socket, reply_details
from fabric.zmtp_client_connection import connect_errno

log = logging.getLogger(__name__)

GIVE_UP_CHECK_MS = 100  # how often a blocking call with give_up asks whether to stop waiting
_MONITOR_IDS = itertools.count(1)  # the clients' connection monitors: one inproc endpoint each
# a BlockingClient's connect failed (libzmq does not say why): its own connect, to learn the
# errno, waits at most this long (a refusal or a route's absence answers at once)
CONNECT_PROBE_MS = 200


class BlockingClient:
    """A synchronous DEALER for simple callers. Retries idempotent requests with capped
    exponential backoff. ``fail_on_disconnect``: when the connection a call's request went out
    on ends before the reply, the call fails at once with ``ConnectionLost`` (a retriable
    ``RequestTimeout``) instead of at its deadline -- a peer killed with the request took it
    along (libzmq's socket monitor reports the disconnect). A disconnect before the request
    was sent does not count: it goes out on the next connection. ``fail_on_refused``: when a
    connect fails while a call's request waits for a connection, the call fails at once with a
    ``ConnectFailed`` (a retriable ``RequestTimeout``) instead of at its deadline, as libzmq
    would retry the connect until then: ``ConnectionRefused`` when the peer's port refused it
    (its process is dead, its host up), ``PeerUnreachable`` when its host is out of reach
    (EHOSTUNREACH, ENETUNREACH, ETIMEDOUT), the errno named in the message -- libzmq's monitor
    does not say it, so one connect of the client's own finds it (``connect_errno``, at most
    CONNECT_PROBE_MS; one that is taken means the peer listens again, and libzmq's next connect
    is waited for). A peer that takes the connection and does not answer, or a host that does
    not answer the connect at all (no failed connect before the deadline), is still waited for
    until the deadline. For asks that another
    node can answer instead (``fetch_metadata``'s). ``reconnect_ivl_max_ms``: the cap of its
    reconnect backoff, for a caller that must reach a restarted peer sooner than
    ``P.RECONNECT_IVL_MAX_MS``. Not thread-safe."""

    def __init__(self, ctx: zmq.Context, endpoint: str, identity: str | None = "client", *,
                 fail_on_disconnect: bool = False, fail_on_refused: bool = False,
                 reconnect_ivl_max_ms: int = P.RECONNECT_IVL_MAX_MS) -> None:
        self.endpoint = endpoint
        self.sock = make_socket(ctx, zmq.DEALER, identity)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_ivl_max_ms)
        self._fail_on_disconnect = fail_on_disconnect
        self._fail_on_refused = fail_on_refused
        self._up = False  # a connection is made (known from the monitor's events)
        self._refused = False  # the last connect failed, and none is up
        self._events: zmq.Socket | None = None
        if fail_on_disconnect or fail_on_refused:  # before connecting: no connection goes unwatched
            # a failed connect is EVENT_CLOSED of the connecting descriptor (then a retry, which
            # libzmq also reports after a disconnect); an ended connection is EVENT_DISCONNECTED
            events = zmq.EVENT_DISCONNECTED | (zmq.EVENT_CONNECTED | zmq.EVENT_CLOSED if fail_on_refused else 0)
            self._events = self.sock.get_monitor_socket(
                events, f"inproc://loom-connection-events-{os.getpid()}-{next(_MONITOR_IDS)}")
            self._events.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._rid = 0  # the id of the last call's request

    def call(self, command: bytes, header: dict | None = None, payloads: list | tuple = (), *,
             timeout_ms: int = 5000, retries: int = 0, backoff_ms: int = 100,
             give_up: Callable[[], bool] | None = None) -> tuple[dict, list[bytes]]:
        """Send and wait for the reply. Raises RemoteError (the node's answer) or RequestTimeout
        (after the last try, or -- GaveUp -- as soon as ``give_up()``, asked every GIVE_UP_CHECK_MS,
        says the peer is gone; ConnectionLost and ConnectFailed, see the class): catch
        CodedError for both."""
        attempt = 0
        while True:
            try:
                return self._call_once(command, header or {}, payloads, timeout_ms, give_up)
            except CodedError as e:
                if attempt >= retries or not e.retriable:
                    raise
                attempt += 1
                zmq.Poller().poll(min(backoff_ms * 2 ** (attempt - 1), P.RECONNECT_IVL_MAX_MS))

    def _call_once(self, command: bytes, header: dict, payloads: list | tuple, timeout_ms: int,
                   give_up: Callable[[], bool] | None = None) -> tuple[dict, list[bytes]]:
        rid = self._rid = next(self._ids)
        self._connection_events()  # ended before this request: it goes out on the next connection
        self.sock.send_multipart(wire.encode_request(command, dict(header, id=rid), payloads), copy=False)
        return self._reply(rid, timeout_ms, give_up)

    def late_reply(self, timeout_ms: int = 0) -> tuple[dict, list[bytes]]:
        """The reply to the last call, which timed out, when it comes within ``timeout_ms``
        (0: only one already here). Raises as ``call``."""
        return self._reply(self._rid, timeout_ms)

    def _reply(self, rid: int, timeout_ms: int, give_up: Callable[[], bool] | None = None) -> tuple[dict, list[bytes]]:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self._events is not None:
            poller.register(self._events, zmq.POLLIN)
        deadline = time.monotonic() + timeout_ms / 1000
        # the connection ended, or its peer refused it (also before the request was sent: a
        # refused peer cannot answer it): only what it delivered before may still be read
        lost = self._failed(False)
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and not self.sock.poll(0):  # one here at the deadline is taken
                raise RequestTimeout(f"no reply from {self.endpoint} within {timeout_ms} ms")
            left_ms = max(0, left_ms)
            wait_ms = left_ms if give_up is None else min(left_ms, GIVE_UP_CHECK_MS)
            ready = dict(poller.poll(0 if lost is not None else wait_ms))
            if self._events in ready and lost is None:
                lost = self._failed(self._connection_events())
            # what the connection delivered before it ended is read first (its arrival is
            # queued ahead of the disconnect's event)
            if self.sock not in ready and not (lost is not None and self.sock.poll(0)):
                if lost is not None:
                    try:
                        raise lost
                    finally:  # the error's traceback holds this frame: no local may hold the error
                        lost = None
                if not ready and give_up is not None and give_up():
                    raise GaveUp(f"gave up waiting for {self.endpoint}: it is down")
                continue
            try:
                reply, payloads_in = wire.decode_reply(self.sock.recv_multipart())
            except MalformedFrame as e:  # dropped: the reply we wait for may still come
                log.debug("malformed reply from %s dropped: %s", self.endpoint, e)
                continue
            if reply.get("id") != rid:
                continue  # a late reply to an earlier, timed-out attempt
            code = reply.get("error", 0)
            if code:
                raise RemoteError(code, reply.get("message", ""), **reply_details(reply))
            return reply, payloads_in

    def _connection_events(self) -> bool:
        """Take the monitor's events since the last look: whether a connection ended among
        them. A connect that fails with none up (refused) marks the peer refused until one is
        made; libzmq reports a retry after a disconnect too, but no failed connect."""
        ended = False
        while self._events is not None and self._events.poll(0):
            event = parse_monitor_message(self._events.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                self._up, self._refused = True, False
            elif event == zmq.EVENT_DISCONNECTED:
                self._up, ended = False, True
            elif event == zmq.EVENT_CLOSED and not self._up:
                self._refused = True
        return ended

    def _failed(self, ended: bool) -> CodedError | None:
        """The error that ends a call waiting now, its connection's events just taken."""
        if ended and self._fail_on_disconnect:
            return ConnectionLost(f"connection to {self.endpoint} lost before the reply")
        if self._refused and self._fail_on_refused:
            code = connect_errno(self.endpoint, CONNECT_PROBE_MS)
            if code == 0:  # listening again: libzmq's next connect is waited for
                self._refused = False
                return None
            if code is None:
                return ConnectFailed(f"cannot connect to {self.endpoint} (a second connect got no answer within "
                                     f"{CONNECT_PROBE_MS} ms)", reason="unknown")
            return connect_failed(self.endpoint, code)
        return None

    def close(self) -> None:
        if self._events is not None:
            self.sock.disable_monitor()
            self._events.close(0)
        self.sock.close(0)


class ClientsByEndpoint:
    """One ``BlockingClient`` per endpoint, made by ``make(endpoint)`` when first asked for; one
    dropped (closed) is made afresh next time -- a client whose call timed out holds the
    unanswered request, whose late reply a fresh socket never sees. Not thread-safe: its
    owner's."""

    def __init__(self, make: Callable[[str], BlockingClient]) -> None:
        self._make = make
        self._clients: dict[str, BlockingClient] = {}

    def get(self, endpoint: str) -> BlockingClient:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = self._make(endpoint)
        return c

    def drop(self, endpoint: str) -> None:
        c = self._clients.pop(endpoint, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
