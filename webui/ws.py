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
import time
from typing import Any, Callable

from flask import Flask, request
from flask_sock import Sock

from webui.auth import Principal, rate_limit_client, retry_after_s
from webui.context import Gateway
from webui.events import EVENTS_QUEUE_MAX
from webui.errors import ApiError, ClusterError
from webui.routes_v2 import ACKS, encode_records, offsets_json, records_json
from webui.schemas import OFFSET, PARTITION, produce_schema
from webui.spec import Op, body_checker, loads_json
from webui.ws_guard import INBOX_MESSAGES_MAX, InboxGate, SocketsPer
from webui.ws_outbox import TRY_AGAIN_LATER, Closed, Outbox

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0
POLICY = 1008            # policy violation: auth, bad messages, too many unanswered messages
FETCH_TIMEOUT_MS = 500
# /ws/consume: a fetch's wait while the stream's consumer is not positioned, so that "ready"
# goes out at most this long after it is (a 500 ms wait held it back with nothing to send)
UNPOSITIONED_FETCH_TIMEOUT_MS = 50
FETCH_BYTES_MAX = 2 * 1024 * 1024   # keys and values per consumer-service fetch (one message)
FETCH_RECORDS_MAX = 5000
# /ws/consume: a commit of explicit offsets refused for these is answered {"committed": false, ...}
# (the client may commit again); others close the stream as a bad request
RETRIABLE_COMMIT_ERRORS = ("rebalance", "unavailable", "timeout")
# /ws/consume: marks of messages sent and not yet committed kept one by one (more are merged)
PENDING_MARKS_MAX = 1024
PENDING_AUTH_SHARE = 4   # one address may hold 1/4 of the slots with sockets not yet authenticated
AUTO_COMMIT_INTERVAL_S = 5.0  # /ws/consume: what went out to the client is committed this often
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
    "close_codes": {"1008": "auth, role or a bad message",
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
            admitted = None
            try:
                try:
                    admitted = _authenticate(ws, out, gw, role, per_key)
                finally:
                    authenticated()
                if admitted is not None:
                    body(ws, out, admitted[0], dict(request.args))
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
                if admitted is not None:
                    admitted[1]()  # the key's count, once the socket is closed
        return handler

    def guarded(path: str, role: str, body: Callable) -> None:
        inner = session(role, body)

        def route(ws: Any) -> None:
            ws.sock = InboxGate(ws)
            try:
                authorize(Op("GET", path, lambda: None, None, "", "ws"))  # the rate limit, by key or address
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
                    ws.close(TRY_AGAIN_LATER, f"{gw.settings.websockets_max} WebSockets are open: try again later")
                    return
                try:
                    inner(ws, done_waiting)
                finally:
                    slots.release()
            finally:
                done_waiting()
        route.__name__ = "ws_" + path.rsplit("/", 1)[-1]
        sock.route(path)(route)

    guarded("/ws/consume", "consume", lambda ws, out, p, q: _consume(ws, out, gw, q, _limit(gw, p)))
    guarded("/ws/produce", "produce", lambda ws, out, p, q: _produce(ws, out, gw, q, _limit(gw, p)))
    guarded("/ws/events", "read", lambda ws, out, p, q: _events(ws, out, gw))


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


def _query(q: dict, name: str, allowed: tuple[str, ...] | None = None, default: str | None = None) -> str:
    value = q.get(name, default)
    if value is None or value == "" or (allowed and value not in allowed):
        raise ApiError(42206, f"query parameter {name} must be " + (" or ".join(allowed) if allowed else "given"))
    return value


class _Delivered:
    """What of a /ws/consume stream went out to the client, and what the client said it read.
    Commits cover only that -- the instance's own positions are past records fetched and still
    queued, or dropped when the socket closed, which a commit of them would have the group skip.

    Every records message is numbered (``seq``); the marks of those that went out (message
    number, the offset after its records per partition) wait in ``pending`` until a commit
    covers them: ``{"commit": "all"}`` every one, ``{"commit": "all", "through": N}`` those up
    to message N -- what the client has read, where messages after it may be on their way and
    never arrive (the connection breaks). Once a client has named ``through``, the auto-commit
    adds nothing past it. ``pending`` is bounded: past PENDING_MARKS_MAX its older half is merged
    into one mark, which only a ``through`` at or past its last message covers. Not thread-safe:
    the stream's route thread."""

    def __init__(self, out: Outbox, gw: Gateway, group: str, name: str) -> None:
        self.out, self.gw, self.group, self.name = out, gw, group, name
        self.seq = 0  # of the last records message numbered
        self.pending: list[tuple[int, dict[tuple[str, int], int]]] = []  # went out, not yet covered
        self.client_confirms = False  # the client names what it read (through): no auto-commit past it
        self.sent: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.last_commit_s = time.monotonic()
        # the membership generation the last fetch reported, and whether the group's committed
        # offsets are to be looked up before the next commit (after every new generation)
        self.generation: int | None = None
        self.baseline_due = True

    def note_generation(self, generation: int) -> None:
        """A fetch reported ``generation``: after a rebalance, marks sent before it may be below
        what another member committed meanwhile (it held a partition that came back)."""
        if generation != self.generation:
            self.generation, self.baseline_due = generation, True

    def number(self, records: list) -> tuple[int, dict[tuple[str, int], int]]:
        """The next message's number and its mark: the offsets after its records, per partition
        (a partition's records ascend)."""
        self.seq += 1
        return self.seq, {(r.topic, r.partition): r.offset + 1 for r in records}

    def collect(self) -> None:
        """Take the marks of the messages that went out since the last call (bounded)."""
        self.pending += self.out.take_sent_marks()
        if len(self.pending) > PENDING_MARKS_MAX:
            half = len(self.pending) // 2
            merged: dict[tuple[str, int], int] = {}
            for _, after in self.pending[:half]:
                merged.update(after)  # a partition's offsets ascend from message to message
            self.pending[:half] = [(self.pending[half - 1][0], merged)]

    def commit(self, through: int | None = None, auto: bool = False) -> None:
        """Commit what went out up to message ``through`` (every message when None) and was not
        committed yet; ``auto``: the auto-commit's, nothing once the client names ``through``."""
        self.collect()
        self.last_commit_s = time.monotonic()
        if through is not None:
            self.client_confirms = True
        elif auto and self.client_confirms:
            return
        covered = [after for seq, after in self.pending if through is None or seq <= through]
        self.pending = [m for m in self.pending if through is not None and m[0] > through]
        for after in covered:
            for tp, offset in after.items():
                if offset > self.sent.get(tp, -1):
                    self.sent[tp] = offset
        wanted = {tp: o for tp, o in self.sent.items() if o > self.committed.get(tp, -1)}
        if wanted:
            self.gw.agent.call_instance(self.group, self.name, lambda h: self._commit_owned(h, wanted))

    def _commit_owned(self, handle: Any, wanted: dict[tuple[str, int], int]) -> None:
        """Commit ``wanted`` for the partitions the instance still owns: one a rebalance gave to
        another member is its to commit now (and would have the whole commit refused)."""
        owned = set(handle.assignment())
        for tp in [tp for tp in self.sent if tp not in owned]:
            del self.sent[tp]
            self.committed.pop(tp, None)
        wanted = {tp: o for tp, o in wanted.items() if tp in owned}
        if wanted and self.baseline_due:
            # marks sent before a rebalance below what the group holds now: the coordinator
            # refuses a commit that moves an offset backward, and the whole commit with it -- every
            # later one too, for as long as that partition brings nothing new
            for tp, o in handle.committed(sorted(wanted)).items():
                if o > self.committed.get(tp, -1):
                    self.committed[tp] = o
            self.baseline_due = False
            wanted = {tp: o for tp, o in wanted.items() if o > self.committed.get(tp, -1)}
        if wanted:
            handle.commit(wanted)
            self.committed.update(wanted)

    def note_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The client committed ``offsets`` itself (of records it got): never commit below them."""
        for tp, o in offsets.items():
            self.committed[tp] = max(o, self.committed.get(tp, -1))


class _Ready:
    """Tells a /ws/consume client when the stream's consumer is positioned: it has its
    assignment and a position in every partition of it, so every record produced from then on
    is delivered (a new group's member joins and looks up the log end, ~100 ms, after the
    socket opens: a tail "from the end" that counted from the open missed what came
    meanwhile). ``{"ready": true, "assignment": [{topic, partition, offset}]}`` (offset: the
    next one the stream sends from that partition) goes out after the records of the fetch
    that found it positioned, and again after every rebalance (a new generation) or position
    looked up anew; ``{"ready": false}`` when a fetch finds it no longer positioned after a
    ready (a rebalance under way). Not thread-safe: owned by the stream's route thread."""

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self.generation: int | None = None  # the membership announced ready, None while not

    def note(self, fetched: Any) -> None:
        """Announce what ``fetched`` (``fabric.client.services.Fetched``) says, if it changed."""
        if fetched.positions is None:
            if self.generation is not None:
                self.generation = None
                self.out.put({"ready": False})
            return
        if fetched.generation != self.generation:
            self.generation = fetched.generation
            self.out.put({"ready": True, "assignment": [{"topic": t, "partition": p, "offset": o}
                                                        for (t, p), o in sorted(fetched.positions.items())]})


def _consume(ws: Any, out: Outbox, gw: Gateway, q: dict, limit: Callable[[], dict | None] = lambda: None) -> None:
    topic = _query(q, "topic")
    fmt = _query(q, "format", ("json", "binary"), "json")
    start = _query(q, "from", ("beginning", "end"), "end")
    named = bool(q.get("group"))
    group = q.get("group") or f"ws-{time.monotonic_ns():x}"
    gw.agent.topic(topic)
    # a generated group is never joined again: committing would only leave it on the
    # coordinator for good (one group per stream, up to GROUPS_MAX). A named group's commits are
    # the stream's own (_Delivered): the instance does not auto-commit
    auto_commit = named and q.get("auto_commit", "true") != "false"
    config = {"auto_offset_reset": "earliest" if start == "beginning" else "latest", "enable_auto_commit": False}
    entry = gw.agent.create_instance(group, None, config, fmt)
    delivered = _Delivered(out, gw, group, entry.name)
    ready = _Ready(out)
    try:
        gw.agent.subscribe(group, entry.name, [topic])
        while ws.connected and not out.done.is_set():
            _consume_commands(ws, out, gw, delivered, limit)
            wait_ms = FETCH_TIMEOUT_MS if ready.generation is not None else UNPOSITIONED_FETCH_TIMEOUT_MS
            fetched = gw.agent.call_instance(group, entry.name, lambda h: h.fetch_with_positions(
                timeout_ms=wait_ms, max_bytes=FETCH_BYTES_MAX, max_records=FETCH_RECORDS_MAX))
            records = fetched.records
            delivered.note_generation(fetched.generation)
            if records:
                mark = delivered.number(records)
                # an anonymous stream commits nothing: no mark to keep
                out.put({"records": records_json(records, fmt), "seq": mark[0]}, mark=mark if named else None)
            ready.note(fetched)
            delivered.collect()
            if auto_commit and time.monotonic() - delivered.last_commit_s >= AUTO_COMMIT_INTERVAL_S:
                try:
                    delivered.commit(auto=True)
                except ClusterError as e:  # a rebalance meanwhile: the next one, or the new owner, goes on
                    log.info("ws consume %s: auto-commit failed: %s", group, e)
    finally:
        try:
            if auto_commit:
                delivered.commit(auto=True)  # what went out, before the instance leaves the group
        except ClusterError:
            pass
        finally:
            try:
                gw.agent.delete_instance(group, entry.name)  # leaves the group at once
            except ClusterError:
                pass


def _consume_commands(ws: Any, out: Outbox, gw: Gateway, delivered: _Delivered,
                      limit: Callable[[], dict | None]) -> None:
    """Handle what the client sent: {"commit": "all", "through"?: N} or {"commit": [{topic,
    partition, offset}]}."""
    while True:
        text = ws.receive(timeout=0)
        if text is None:
            return
        limited = limit()
        if limited is not None:
            out.put({"committed": False, **limited})
            continue
        try:
            msg = loads_json(text)
            commit = msg["commit"]
        except (ValueError, TypeError, KeyError):
            out.close(POLICY, 'expected {"commit": "all"} or {"commit": [{"topic", "partition", "offset"}]}')
            raise Closed() from None
        if commit == "all":
            through = msg.get("through")
            if through is not None and not (type(through) is int and through > 0):
                out.close(POLICY, '"through" is the seq of a records message (1, 2, ...)')
                raise Closed() from None
            try:
                delivered.commit(through)  # what went out to the client, not what is still queued for it
            except ClusterError as e:  # a rebalance under way: the client may ask again
                out.put({"committed": False, "error": e.kind, "message": e.message})
                continue
        else:
            try:
                wanted = {(c["topic"], int(c["partition"])): int(c["offset"]) + 1 for c in commit}
            except (TypeError, KeyError, ValueError, OverflowError):  # OverflowError: 1e999 is a float
                wanted = None
            # what REST's commit takes: anything else failed past this route (sorting mixed
            # topics, packing an offset beyond 64 bits) as a programmer error, stopping the worker
            if wanted is None or not all(type(t) is str and 0 <= p <= PARTITION["maximum"]
                                         and 0 < o <= OFFSET["maximum"] + 1 for (t, p), o in wanted.items()):
                out.close(POLICY, "commit entries need topic, partition and offset")
                raise Closed() from None
            try:
                gw.agent.call_instance(delivered.group, delivered.name, lambda h: h.commit(wanted))
            except ClusterError as e:
                if e.kind not in RETRIABLE_COMMIT_ERRORS:
                    raise
                out.put({"committed": False, "error": e.kind, "message": e.message})
                continue
            delivered.note_committed(wanted)
        out.put({"committed": True})


def _produce(ws: Any, out: Outbox, gw: Gateway, q: dict, limit: Callable[[], dict | None] = lambda: None) -> None:
    topic = _query(q, "topic")
    fmt = _query(q, "format", ("json", "binary"), "json")
    acks = ACKS[_query(q, "acks", tuple(ACKS), "all")]
    while ws.connected and not out.done.is_set():
        if len(getattr(ws, "input_buffer", ())) > INBOX_MESSAGES_MAX:
            out.close(POLICY, f"more than {INBOX_MESSAGES_MAX} messages unanswered: wait for the answers")
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
