"""The gateway's Flask app: REST routes (routes_v2, routes_consumers, routes_v3), ops routes,
WebSockets (ws.py) and the dashboard (webui/dashboard.py's blueprint, rate limited like the API).

Every response carries ``X-Request-Id`` (the client's, when it sent a sane one) and
``X-Content-Type-Options: nosniff``, and an HTML one may not be framed; every error is
JSON ``{error_code, message}`` -- never HTML, a stack trace or an internal address; a 5xx is
logged with its request id. Bodies over ``gateway.request_bytes_max`` get 413 before they are
read.

``create_app`` takes everything cluster-side through ``Gateway.agent``; this package never
imports zmq. Thread-safe: served by gunicorn's gthread worker, one thread per request.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Callable

from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import HTTPException
from wsproto.utilities import RemoteProtocolError

from fabric import protocol as P
from webui import routes_consumers, routes_v2, routes_v3, ws
from webui.auth import Principal, rate_limit_client, retry_after_s
from webui.context import Gateway
from webui.dashboard import dashboard_blueprint, forbid_framing
from webui.errors import ApiError, ClusterError
from webui.events import RECENT_EVENTS_MAX
from webui.fastpath import NOSNIFF, ProduceFastPath, presented_key_of, request_id_of
from webui.spec import ENCODED_SLASH_NAME, JSON, Answer, Api, Op, has_encoded_slash

log = logging.getLogger("loom.gateway.http")
STATIC = Path(__file__).parent / "static"
API_VERSION = "1.0.0"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
SERVING_STATES = frozenset({"up", "healthy", "degraded"})  # node states that count as ready
HTTP_STATUS_TO_CODE = {400: 40001, 404: 40404, 405: 40501, 413: 41301, 415: 41501}
EVENTS_LIMIT_DEFAULT = 500         # GET /monitor/events: the dashboard's timeline keeps as many
EVENTS_LIMIT_MAX = P.EVENTS_MAX    # the monitor keeps no more
EVENT_SCHEMA = {"type": "object", "required": ["type", "ts_ms"], "properties": {
    "type": {"type": "string", "description": "node (a health change), alert or recovery"},
    "kind": {"type": "string", "description": "health, alert or recovery"},
    "seq": {"type": "integer", "description": "the monitor's sequence number of the event"},
    "ts_ms": {"type": "integer", "description": "when the monitor recorded it (wall clock, ms)"},
    # the rest as the monitor wrote them (their types are its, not checked here)
    "node": {"description": "the node a health change or a recovery is about"},
    "state": {"description": "a node's new health, or an alert's state"}, "previous": {"description": "a node's health before"},
    "name": {"description": "an alert's rule/subject"}, "action": {"description": "a recovery's action"}}}

EVENTS_RESPONSE = {"type": "object", "required": ["events"], "properties": {
    "events": {"type": "array", "items": EVENT_SCHEMA}}}


def events_query(limit_max: int, limit_default: int) -> dict:
    """The query of an event log's route: ``since_ms`` (wall clock) and ``limit`` (the newest)."""
    return {"since_ms": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": limit_max, "default": limit_default}}


def presented_key() -> str | None:
    return presented_key_of(request.headers.get("Authorization", ""), request.headers.get("X-API-Key", ""))


def client_address() -> str:
    return request.remote_addr or "unknown"


def check_access(gw: Gateway, op: Op, key: str | None, address: str) -> Principal | None:
    """Rate limit, then authentication and role, for a request to ``op`` presenting ``key``
    from ``address``: the principal (None for a route that needs no key and got none valid).
    Raises ApiError 42901 (with Retry-After), 40101 or 40301."""
    principal = gw.keys.lookup(key)
    wait_s = gw.limiter.take(rate_limit_client(principal, address), keyed=principal is not None)
    if wait_s > 0:
        raise ApiError(42901, f"rate limit of {gw.security.rate_limit_per_s:g} requests/s exceeded",
                       {"Retry-After": retry_after_s(wait_s)})
    if op.role is None:
        return principal
    if principal is None:
        raise ApiError(40101, "send a valid API key as `Authorization: Bearer KEY` or `X-API-Key: KEY`")
    if not principal.may(op.role):
        raise ApiError(40301, f"this route needs the {op.role!r} role; key {principal.name!r} has "
                              f"{', '.join(sorted(principal.roles))}")
    return principal


def build_api(gw: Gateway) -> Api:
    api = Api("Loom gateway", API_VERSION)
    routes_v2.register(api, gw)
    routes_consumers.register(api, gw)
    routes_v3.register(api, gw)

    @api.op("GET", "/health", role=None, tag="ops", summary="200 while the gateway reaches the coordinator, else 503",
            cluster=False, errors=(50301,), response={"type": "object", "required": ["status"], "properties": {
                "status": {"const": "ok"}, "coordinator": {"type": "boolean"}}})
    def health() -> dict:
        if not gw.agent.coordinator_reachable():
            raise ApiError(50301, "the coordinator is not reachable")
        return {"status": "ok", "coordinator": True}

    @api.op("GET", "/health/live", role=None, tag="ops", cluster=False,
            summary="Liveness: 200 whenever a request thread serves it; asks the cluster nothing",
            response={"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})
    def live() -> dict:
        # the monitor's HTTP probe (nodes/monitor/http_probe.py): /health waits on the
        # coordinator, and a coordinator outage must not make every gateway look hung
        return {"status": "ok"}

    @api.op("GET", "/status/ready", role="read", tag="ops", summary="Readiness: coordinator, brokers and services",
            description="200 when ready, 503 when not (a load balancer or a Kubernetes probe reads the status "
                        "code), with the same body: `reasons` says what is not ready.",
            statuses={503: "Not ready: the same body, `ready` false, with its `reasons`"},
            response={"type": "object", "required": ["ready", "nodes"], "properties": {
                "ready": {"type": "boolean"}, "nodes": {"type": "object", "additionalProperties": {"type": "string"}},
                "brokers_alive": {"type": "integer"}, "brokers": {"type": "integer"},
                "coordinator": {"type": "boolean"}, "reasons": {"type": "array", "items": {"type": "string"}}}})
    def ready() -> dict | Answer:
        states = gw.hub.node_states()
        # "up"/"down" from the gateway's own health watcher; the monitor's finer states when it
        # runs (a degraded node serves; an unresponsive one does not)
        reasons = [f"{node} is {state}" for node, state in sorted(states.items()) if state not in SERVING_STATES]
        body: dict = {"ready": False, "nodes": states}
        try:  # the coordinator's own answer: a broker's copy also answers a metadata fetch
            md = gw.agent.coordinator_metadata()
        except ClusterError as e:  # no broker counts without the coordinator's metadata
            body.update(coordinator=False, reasons=[f"the coordinator: {e.message}", *reasons])
            return Answer(503, body)
        alive = sum(1 for b in md.brokers.values() if b.alive)
        if alive < len(md.brokers) or alive == 0:
            reasons.insert(0, f"{alive} of {len(md.brokers)} brokers alive")
        body.update(ready=not reasons, brokers_alive=alive, brokers=len(md.brokers), coordinator=True,
                    reasons=reasons)
        return body if not reasons else Answer(503, body)

    @api.op("GET", "/metrics", role="read", tag="ops", response={"type": "string"}, response_type=PROMETHEUS_TEXT,
            summary="Every node's metrics in the Prometheus text format, from the monitor (503 without one)",
            errors=(50301,))
    def metrics() -> tuple[bytes, str]:
        return gw.agent.monitor_metrics()

    @api.op("GET", "/monitor/history", role="read", tag="ops", errors=(50301,),
            summary="The monitor's history of rates and gauges, one point per check (503 without a monitor)",
            query={"since_ms": {"type": "integer", "minimum": 0}},
            response={"type": "object", "required": ["interval_ms", "t", "series"], "properties": {
                "interval_ms": {"type": "integer"}, "t": {"type": "array", "items": {"type": "integer"}},
                "series": {"type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": ["number", "null"]}}}}})
    def history(query: dict) -> dict:
        h = gw.agent.monitor_history(query.get("since_ms", 0))
        return {"interval_ms": h["interval_ms"], "t": h["t"], "series": h["series"]}

    @api.op("GET", "/monitor/events", role="read", tag="ops", errors=(50301,),
            summary="The monitor's recent events: health changes, alerts, recovery actions (503 without a monitor)",
            description="The newest `limit` events recorded after `since_ms` (wall clock), oldest first, each "
                        "as `/ws/events` relays it (`type` node, alert or recovery; `seq`, `ts_ms`, ...). The "
                        f"monitor keeps its last {P.EVENTS_MAX:,}.",
            query=events_query(EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEFAULT), response=EVENTS_RESPONSE)
    def events(query: dict) -> dict:
        since_ms, limit = query.get("since_ms", 0), query.get("limit", EVENTS_LIMIT_DEFAULT)
        # the peer's input: an event out of the stream's shape is left out, not passed on
        kept = [e for e in gw.agent.monitor_events() if isinstance(e, dict) and isinstance(e.get("type"), str)
                and type(e.get("ts_ms")) is int and e["ts_ms"] > since_ms]
        return {"events": kept[-limit:]}

    @api.op("GET", "/gateway/events", role="read", tag="ops",
            summary="The gateway's own watcher's recent node health changes (kept for a reload of the dashboard)",
            description="Node events the gateway's health watcher published on `/ws/events` (`type` node, `node`, "
                        "`role`, `state` up or down, `previous`, `reason`, `ts_ms`; no `kind` or `seq`: not the "
                        "monitor's) that the dashboard shows: the monitor's own, and every node's while the monitor "
                        f"does not report. The newest `limit` after `since_ms`, oldest first; the gateway keeps its "
                        f"last {RECENT_EVENTS_MAX} (since it started).",
            query=events_query(RECENT_EVENTS_MAX, RECENT_EVENTS_MAX), response=EVENTS_RESPONSE)
    def gateway_events(query: dict) -> dict:
        since_ms, limit = query.get("since_ms", 0), query.get("limit", RECENT_EVENTS_MAX)
        return {"events": [e for e in gw.hub.recent() if e["ts_ms"] > since_ms][-limit:]}
    return api


def create_app(gw: Gateway) -> Flask:
    app = Flask("loom.gateway", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = gw.settings.request_bytes_max
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api = build_api(gw)

    def authorize(op: Op) -> None:
        principal = check_access(gw, op, presented_key(), client_address())
        if principal is not None:
            g.principal = principal
    api.authorize = authorize
    api.install(app)
    doc = api.openapi()
    doc["x-websockets"] = ws.DESCRIPTION  # OpenAPI has no words for WebSockets: listed beside it
    doc_bytes = json.dumps(doc, separators=(",", ":")).encode()
    ws.install(app, gw, authorize)

    @app.get("/openapi.json")
    def openapi() -> Response:
        authorize(Op("GET", "/openapi.json", lambda: None, None, "", "ops"))
        return Response(doc_bytes, mimetype=JSON)

    @app.get("/docs")
    def docs() -> Response:
        authorize(Op("GET", "/docs", lambda: None, None, "", "ops"))
        return send_from_directory(STATIC, "docs.html", max_age=0)

    app.register_blueprint(dashboard_blueprint)  # "/" and "/static/...": the dashboard (webui/dashboard.py)
    _install_request_hooks(app, gw, authorize)
    _install_error_handlers(app, gw)
    app.extensions["loom.api"] = api
    ops = {op.endpoint: op for op in api.ops}
    produce_ops = (ops["POST /topics/{topic_name}"], ops["POST /topics/{topic_name}/partitions/{partition_id}"])
    app.wsgi_app = ProduceFastPath(  # type: ignore[method-assign]
        app.wsgi_app, *produce_ops, api.dispatch, lambda op, key, address: check_access(gw, op, key, address),
        gw.http_requests.record, tuple(op.flask_rule(api.components) for op in produce_ops),  # type: ignore[arg-type]
        gw.settings.request_bytes_max, on_bug=gw.on_bug)
    if gw.hold is not None:  # outermost: the fault holds every request, the fast path's too
        app.wsgi_app = gw.hold.wrap(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _install_request_hooks(app: Flask, gw: Gateway, authorize: Callable[[Op], None]) -> None:
    """Every request: its id, the encoded-slash and body-size refusals, the dashboard's rate
    limit; every answer: its id, the security headers, the per-route count."""
    static_op = Op("GET", "/static", lambda: None, None, "", "ops")

    @app.before_request
    def request_id() -> Response | None:
        g.request_id = request_id_of(request.headers.get("X-Request-Id", ""))
        if has_encoded_slash(request.environ):  # routed as decoded: another route's path, or none
            raise ApiError(40002, ENCODED_SLASH_NAME)
        if request.blueprint == dashboard_blueprint.name:
            authorize(static_op)  # no key needed, but the per-address rate limit applies
        length = request.content_length
        if length is not None and length > gw.settings.request_bytes_max:
            raise ApiError(41301, f"the body has {length} bytes; the limit is {gw.settings.request_bytes_max} "
                                  "(gateway.request_bytes_max)")
        return None

    @app.after_request
    def add_request_id(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
        resp.headers[NOSNIFF[0]] = NOSNIFF[1]
        if resp.mimetype == "text/html":
            forbid_framing(resp.headers)
        gw.http_requests.record(request.url_rule.rule if request.url_rule else "unmatched", resp.status_code)
        return resp


def _install_error_handlers(app: Flask, gw: Gateway) -> None:
    """Every error the routes raise answered as Loom's JSON error body; a bug also stops the
    worker once answered."""
    def error_response(e: ApiError) -> Response:
        if e.status >= 500:
            log.error("%s %s -> %d %d %s (request id %s)", request.method, request.path, e.status, e.error_code,
                      e.message, g.get("request_id"))
        resp = Response(e.body_bytes(), status=e.status, mimetype=JSON)
        for k, v in e.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(ApiError)
    def on_api_error(e: ApiError) -> Response:
        return error_response(e)

    @app.errorhandler(ClusterError)
    def on_cluster_error(e: ClusterError) -> Response:
        return error_response(e.to_api())

    @app.errorhandler(HTTPException)
    def on_http(e: HTTPException) -> Response:
        code = HTTP_STATUS_TO_CODE.get(e.code or 500, 40001 if (e.code or 500) < 500 else 50001)
        err = ApiError(code, e.description if code != 41301 else
                       f"the body is larger than {gw.settings.request_bytes_max} bytes (gateway.request_bytes_max)")
        resp = error_response(err)
        for k, v in e.get_headers():
            if k.lower() == "allow":
                resp.headers[k] = v
        return resp

    @app.errorhandler(RemoteProtocolError)
    def on_bad_handshake(e: RemoteProtocolError) -> Response:
        # a WebSocket upgrade wsproto refuses (a header missing or wrong), before any route code
        # runs: the client's error; as a bug it let any client stop the worker at will
        return error_response(ApiError(40001, f"not a valid WebSocket handshake: {e}"))

    @app.errorhandler(ConnectionError)
    def on_connection_lost(e: ConnectionError) -> Response:
        # the builtin (reset, broken pipe): only a client's socket raises it here -- a WebSocket
        # whose client left during its handshake or its refusal (werkzeug turns a body's into a
        # 400, the cluster's errors are FabricError) -- an operating error, no bug; the answer
        # is most likely never read
        return error_response(ApiError(40001, f"the connection was lost: {e}"))

    @app.errorhandler(Exception)
    def on_unexpected(e: Exception) -> Response:
        log.exception("%s %s failed (request id %s)", request.method, request.path, g.get("request_id"))
        resp = error_response(ApiError(50001, f"internal error (request id {g.get('request_id')})"))
        resp.call_on_close(gw.on_bug)  # answered first, then the worker stops (a bug)
        return resp
