"""WebSockets (flask-sock): ``/ws/consume``, ``/ws/produce``, ``/ws/events``.

Auth: the key in a header (as for REST) or, for browsers (which cannot set WebSocket headers),
a first message ``{"api_key": KEY}`` within ``AUTH_TIMEOUT_S``, before anything else is
accepted; keys never travel in URLs. A bad key or a missing role closes with 1008. A socket
waiting for its first message holds a slot: one client address may hold at most a quarter of
the slots that way (more get 1013), so a client that opens sockets and sends nothing cannot
shut the others out. Once its key is known, a socket counts against that key's
``gateway.websockets_per_key_max`` (more get 1013, before ``{"authenticated": true}``), so one
key cannot hold every slot either.

Rate limits: opening a socket takes a token (by key, or by address until the key comes), and so
does every message a client sends to /ws/produce or /ws/consume, from its key's bucket as a REST
request would: a message over the limit is answered with error 42901 and ``retry_after_s``.

Inbound bound: simple_websocket's reader thread queues every message it reads, without bound
(and with permessage-deflate a small frame can inflate to a ``MESSAGE_BYTES_MAX`` message).
``ws_guard.InboxGate`` makes it read from the network only while few messages wait for the
route: a client sending faster than its route takes messages is held back by TCP.

Backpressure: everything a client is sent goes through its ``Outbox`` (webui/ws_outbox.py): a
bounded queue drained by one sender thread; a client too slow to drain it is closed with 1013.
Each connection also sets a small kernel send buffer (``SOCKET_SNDBUF_BYTES``).

Threads: each connection holds one gunicorn worker thread (the route) and one sender thread;
at most ``gateway.websockets_max`` connections are open at once (more are closed with 1013).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from flask import Flask, request
from flask_sock import Sock

from webui.auth import Principal, rate_limit_client, retry_after_s
from webui.context import Gateway
from webui.events import EVENTS_QUEUE_MAX
from webui.errors import ApiError, ClusterError
from webui.routes_v2 import ACKS, encode_records, offsets_json
from webui.schemas import produce_schema
from webui.json_text import loads_json
from webui.spec import Op, body_checker
from webui.ws_guard import InboxGate, SocketsPer
from webui.ws_consume import consume, name_param, query_args, query_param
from webui.ws_outbox import GOING_AWAY, GOING_AWAY_FLUSH_S, POLICY, TRY_AGAIN_LATER, Closed, Outbox

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0
PENDING_AUTH_SHARE = 4   # one address may hold 1/4 of the slots with sockets not yet authenticated
SOCKET_SNDBUF_BYTES = 256 * 1024
MESSAGE_BYTES_MAX = 4 * 1024 * 1024
# /ws/produce: a message is checked as a REST produce body is (a record, or {"records": [...]}):
# the agent packs what passes for the producer service, and a header name that is not a string
# or a partition msgpack cannot pack failed there, as a programmer error that stopped the worker
PRODUCE_CHECKS = {fmt: body_checker(produce_schema(fmt == "binary")) for fmt in ("json", "binary")}


DESCRIPTION = {
    "/ws/produce": {"role": "produce", "query": ["topic", "format=json|binary", "acks=0|1|all"],
                    "in": "a record {id, key, value, headers, partition} or {records: [...]}",
                    "out": "{id, offsets: [{partition, offset, error_code, error}]} or {error_code, message}"},
    "/ws/consume": {"role": "consume", "query": ["topic", "group", "from=beginning|end", "format=json|binary",
                                                 "auto_commit=true|false"],
                    "in": '{"commit": "all"}, {"commit": "all", "through": SEQ} (the records of messages 1..SEQ: '
                          'what the client has read) or {"commit": [{topic, partition, offset}]}',
                    "out": "{records: [{topic, partition, offset, timestamp, key, value, headers}], seq: 1, 2, ...}, "
                           "{committed: true}, "
                           "{ready: true, assignment: [{topic, partition, offset}]} once the stream's consumer is "
                           "positioned (every record produced after it is delivered), or {ready: false} when a "
                           "rebalance takes its positions away"},
    "/ws/events": {"role": "read", "out": "{type: node, node, role, state: up|down, ts_ms} (the monitor adds metrics, alerts)"},
    "auth": 'Authorization or X-API-Key header, or a first message {"api_key": KEY}; 1008 when refused',
    "rate_limit": "opening a socket and every message to /ws/produce or /ws/consume take a token of the key's "
                  "limit; a message over it is answered {error_code: 42901, message, retry_after_s}",
    "close_codes": {"1001": "the gateway is stopping: reconnect (to it once restarted, or another); /ws/produce "
                            "answers the messages it took first",
                    "1008": "auth, role, a bad message, or a query parameter missing or invalid (a topic or group "
                            "name breaking the naming rule: a topic's 1 to 249 characters of [A-Za-z0-9._-], a group's "
                            "any but '/', not '.' or '..', in UTF-8)",
                    "1013": "client too slow, too many sockets (in all, or of one key), or too many from one address "
                            "waiting for their key"},
}


def install(app: Flask, gw: Gateway, authorize: Callable[[Op], None]) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25, "max_message_size": MESSAGE_BYTES_MAX}
    sock = Sock(app)
    slots = threading.BoundedSemaphore(gw.settings.websockets_max)
    pending = SocketsPer(max(1, gw.settings.websockets_max // PENDING_AUTH_SHARE))  # by address
    per_key = SocketsPer(gw.settings.websockets_per_key_max)  # by key name

    def session(role: str, body: Callable[[Any, Outbox, Principal, dict], None]) -> Callable[[Any, Callable], None]:
        """Auth, slot and outbox around one route. Runs in the route's worker thread;
        ``authenticated()`` is called once the key is known (or the socket is refused)."""
        def handler(ws: Any, authenticated: Callable[[], None]) -> None:
            try:
                ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF_BYTES)
            except (AttributeError, OSError):
                pass
            out = Outbox(ws, gw.settings.ws_send_queue_max, gw.settings.ws_slow_client_timeout_ms / 1000)
            gw.websockets.add(out)
            admitted = None
            try:
                try:
                    admitted = _authenticate(ws, out, gw, role, per_key)
                finally:
                    authenticated()
                if admitted is not None:
                    body(ws, out, admitted[0], query_args(request.environ))
                    out.close(1000, "done")
            except Closed:
                pass
            except ApiError as e:
                out.close(POLICY if e.status < 500 else 1011, e.message)
            except ClusterError as e:
                out.close(POLICY if e.to_api().status < 500 else 1011, e.message)
            finally:
                if not out.done.is_set():
                    out.close(1000, "done")
                gw.websockets.discard(out)
                if admitted is not None:
                    admitted[1]()  # the key's count, once the socket is closed
        return handler

    def guarded(path: str, role: str, body: Callable) -> None:
        inner = session(role, body)
        op = Op("GET", path, lambda: None, None, "", "ws")

        def route(ws: Any) -> None:
            ws.sock = gate = InboxGate(ws)
            try:
                _admit(ws, lambda: authorize(op), pending, slots, gw.settings.websockets_max, inner)
            finally:
                gate.route_ended()  # the socket closed lingering before gunicorn gets it back
        route.__name__ = "ws_" + path.rsplit("/", 1)[-1]
        sock.route(path)(route)

    guarded("/ws/consume", "consume", lambda ws, out, p, q: consume(ws, out, gw, q, _limit(gw, p)))
    guarded("/ws/produce", "produce", lambda ws, out, p, q: _produce(ws, out, gw, q, _limit(gw, p)))
    guarded("/ws/events", "read", lambda ws, out, p, q: _events(ws, out, gw))


def _admit(ws: Any, authorize: Callable[[], None], pending: SocketsPer, slots: threading.BoundedSemaphore,
           slots_max: int, route: Callable[[Any, Callable[[], None]], None]) -> None:
    """The rate limit (by key or address), the share of sockets one address may hold while
    they wait for their key, and a slot: ``route`` runs with all three, else the socket is
    closed with 1013."""
    try:
        authorize()
    except ApiError as e:
        ws.close(TRY_AGAIN_LATER, e.message[:120])
        return
    from webui.app import client_address, presented_key
    # a browser's socket waits for its first message (the key) holding a slot
    done_waiting = pending.enter(client_address()) if presented_key() is None else (lambda: None)
    if done_waiting is None:
        ws.close(TRY_AGAIN_LATER, "too many WebSockets from this address wait for their key: try again later")
        return
    try:
        if not slots.acquire(blocking=False):
            ws.close(TRY_AGAIN_LATER, f"{slots_max} WebSockets are open: try again later")
            return
        try:
            route(ws, done_waiting)
        finally:
            slots.release()
    finally:
        done_waiting()


def _authenticate(ws: Any, out: Outbox, gw: Gateway, role: str,
                  per_key: SocketsPer) -> tuple[Principal, Callable[[], None]] | None:
    """The socket's principal and the function that stops counting it against its key's
    sockets, or None when it was refused (and closed: 1008, or 1013 when its key has
    ``gateway.websockets_per_key_max`` sockets open)."""
    from webui.app import presented_key
    key = presented_key()
    by_message = key is None
    if by_message:  # a browser: the key comes as the first message
        first = ws.receive(timeout=AUTH_TIMEOUT_S)
        try:
            key = loads_json(first)["api_key"] if first is not None else None
        except (ValueError, TypeError, KeyError):
            key = None
        if not isinstance(key, str):
            out.close(POLICY, 'authentication required: send {"api_key": KEY} first (or an Authorization header)')
            return None
    principal = gw.keys.lookup(key)
    if principal is None:
        out.close(POLICY, "invalid API key")
        return None
    if not principal.may(role):
        out.close(POLICY, f"this stream needs the {role!r} role")
        return None
    leave = per_key.enter(principal.name)
    if leave is None:
        out.close(TRY_AGAIN_LATER, f"key {principal.name!r} has {per_key.per_name_max} WebSockets open: "
                                   "try again later")
        return None
    if by_message:
        try:
            out.put({"authenticated": True, "key": principal.name, "roles": sorted(principal.roles)})
            # sent before anything else can close the socket (a close drops what is queued): the
            # dashboard learns the key's roles from it even when the stream then refuses its query
            out.flush(AUTH_TIMEOUT_S)
        except Closed:
            leave()
            raise
    return principal, leave


def _limit(gw: Gateway, principal: Principal) -> Callable[[], dict | None]:
    """Takes a token of ``principal``'s rate limit for one client message: None when allowed,
    else the error to answer (42901 with ``retry_after_s``, as REST's 429 and Retry-After)."""
    from webui.app import client_address
    client = rate_limit_client(principal, client_address())

    def take() -> dict | None:
        wait_s = gw.limiter.take(client, keyed=True)
        if wait_s <= 0:
            return None
        return {"error_code": 42901, "message": f"rate limit of {gw.security.rate_limit_per_s:g} requests/s exceeded",
                "retry_after_s": int(retry_after_s(wait_s))}
    return take


def _produce(ws: Any, out: Outbox, gw: Gateway, q: dict, limit: Callable[[], dict | None] = lambda: None) -> None:
    topic = name_param(q, "topic")
    fmt = query_param(q, "format", ("json", "binary"), "json")
    acks = ACKS[query_param(q, "acks", tuple(ACKS), "all")]
    out.answers_first = True  # a client must learn whether each message it sent was written
    while ws.connected and not out.done.is_set():
        if out.going_away is not None:  # the message under way was answered: its answers go out, then 1001
            out.flush(GOING_AWAY_FLUSH_S)
            out.close(GOING_AWAY, out.going_away)
            return
        text = ws.receive(timeout=1.0)
        if text is None:
            continue
        limited = limit()  # every message, as every REST request, before its body is decoded
        msg_id = None
        try:
            msg = loads_json(text)
            if not isinstance(msg, dict):
                raise ValueError(f"a JSON object is wanted, not {type(msg).__name__}")
            msg_id = msg.get("id")
            if limited is not None:
                out.put({"id": msg_id, **limited})
                continue
            body = msg if "records" in msg else {"records": [msg]}
            problem = PRODUCE_CHECKS[fmt](body)
            if problem is not None:
                raise ApiError(42204, problem)
            records = encode_records(body, fmt == "binary")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            out.put({"error_code": 42204, "message": f"expected a record or {{\"records\": [...]}}: {e}", "id": msg_id})
            continue
        except ApiError as e:
            out.put({**e.body(), "id": msg_id})
            continue
        try:
            outcomes = gw.agent.produce(topic, records, acks)
        except ClusterError as e:
            out.put({**e.to_api().body(), "id": msg.get("id")})
            continue
        out.put({"id": msg.get("id"), "offsets": offsets_json(outcomes)})


def _events(ws: Any, out: Outbox, gw: Gateway) -> None:
    sub = gw.hub.subscribe(EVENTS_QUEUE_MAX)
    if sub is None:
        out.close(TRY_AGAIN_LATER, "too many event subscribers")
        return
    try:
        while ws.connected and not out.done.is_set():
            if sub.overflowed:
                out.close(TRY_AGAIN_LATER, "client too slow for the event stream")
                return
            event = sub.get(1.0)
            if event is not None:
                out.put(event)
            ws.receive(timeout=0)  # drain (and ignore) anything the client sends
    finally:
        sub.close()


__all__ = ["install"]
