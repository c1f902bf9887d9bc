"""The produce routes served ahead of Flask: ``POST /topics/{topic_name}`` and
``POST /topics/{topic_name}/partitions/{partition_id}``.

Flask's request machinery (request and app contexts, URL adapter, before/after hooks, the
Response object) costs ~0.3–0.4 ms per request on this machine's cores: as much as the route's
own work for a single-record produce, and what the REST produce figures of bench/RESULTS.md
pay per request. ``ProduceFastPath`` is WSGI middleware in front of the Flask app that serves
these two routes through the same declaration as every other route (``Api.dispatch``: the
op's schemas, handler and answer) and the same access check (``check_access``: rate limit,
key, role), and writes the same answers: JSON errors ``{error_code, message}``,
``X-Request-Id``, ``X-Content-Type-Options``, ``Retry-After``, the per-route request counter,
5xx logged with the request id. ``tests/unit/test_gateway_fastpath.py`` sends each case
through both and compares.

What it does not recognise exactly -- another method, a path the two routes' pattern does not
match as werkzeug's router would (a trailing slash, a partition that is not plain digits), no
``Content-Length`` (a chunked body), a ``SCRIPT_NAME``, a "/" percent-encoded in the path (Flask
refuses it: decoded, it reads as another route's path) -- goes to Flask untouched: nothing has
been read or counted by then.

Thread-safe: no state of its own; what it calls is thread-safe (gunicorn's gthread threads).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Callable, Iterable

from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import ClosingIterator

from webui.errors import ApiError, ClusterError
from webui.spec import JSON, Op, has_encoded_slash

log = logging.getLogger("loom.gateway.http")

# werkzeug's default converter is [^/]+ and its int converter \d+; partitions with leading zeros
# or more digits than any partition count go to Flask, which answers them as it always has
PRODUCE_PATH_RE = re.compile(r"/topics/([^/]+)(?:/partitions/(0|[1-9][0-9]{0,8}))?")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# a query string of these characters reads the same split on "&" and "=" as through werkzeug's
# parse_qsl (no escapes, no "+", no ";"); any other goes to Flask
PLAIN_QUERY_RE = re.compile(r"[A-Za-z0-9_.=&-]*")
STATUS_LINES = {code: f"{code} {text.upper()}" for code, text in HTTP_STATUS_CODES.items()}  # as werkzeug writes them
# on every answer, Flask's (webui/app.py) and ours: a browser reads an answer only as the type
# it is sent with, never sniffs a JSON answer that echoes a client's text into HTML or script
NOSNIFF = ("X-Content-Type-Options", "nosniff")

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def request_id_of(presented: str) -> str:
    """The client's X-Request-Id when it is sane, else a new one."""
    return presented if REQUEST_ID_RE.fullmatch(presented) else uuid.uuid4().hex


def presented_key_of(authorization: str, x_api_key: str) -> str | None:
    """The API key a request presents: ``Authorization: Bearer KEY`` first, else ``X-API-Key``."""
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return x_api_key or None


class ProduceFastPath:
    """WSGI middleware: the two produce ops without Flask, everything else to ``app``.

    ``topic_op`` / ``partition_op``: the ops as declared (routes_v2.py); ``check_access(op,
    key, address)`` raises ApiError or returns; ``record(rule, status)`` counts a response;
    ``body_max`` is ``gateway.request_bytes_max``."""

    def __init__(self, app: WsgiApp, topic_op: Op, partition_op: Op, dispatch: Callable[..., tuple],
                 check_access: Callable[[Op, str | None, str], Any], record: Callable[[str, int], None],
                 rules: tuple[str, str], body_max: int, on_bug: Callable[[], None] = lambda: None) -> None:
        self.app = app
        self.ops = (topic_op, partition_op)
        self.dispatch = dispatch
        self.check_access = check_access
        self.record = record
        self.rules = rules
        self.body_max = body_max
        self.on_bug = on_bug  # after a programmer error's 500 is sent (webui.context.Gateway.on_bug)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("SCRIPT_NAME"):
            return self.app(environ, start_response)
        m = PRODUCE_PATH_RE.fullmatch(environ.get("PATH_INFO", ""))
        length_text = environ.get("CONTENT_LENGTH", "")
        query_string = environ.get("QUERY_STRING", "")
        if m is None or not length_text.isdigit() or not PLAIN_QUERY_RE.fullmatch(query_string) \
                or has_encoded_slash(environ):  # "/topics/t%2Fpartitions%2F0" is no produce to t-0
            return self.app(environ, start_response)
        topic, partition = m.group(1), m.group(2)
        which = 0 if partition is None else 1
        op = self.ops[which]
        path: dict[str, Any] = {"topic_name": topic} if partition is None else \
            {"topic_name": topic, "partition_id": int(partition)}
        rid = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        headers: dict[str, str] = {}
        bug = False
        try:
            length = int(length_text)
            if length > self.body_max:
                raise ApiError(41301, f"the body has {length} bytes; the limit is {self.body_max} "
                                      "(gateway.request_bytes_max)")
            self.check_access(op, presented_key_of(environ.get("HTTP_AUTHORIZATION", ""),
                                                   environ.get("HTTP_X_API_KEY", "")),
                              environ.get("REMOTE_ADDR") or "unknown")
            status, data, content_type = self.dispatch(
                op, path, _query_getter(query_string),
                environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower(),
                lambda: _read_body(environ["wsgi.input"], length))
        except ClusterError as e:
            status, data, content_type, headers = self._error(e.to_api(), environ, rid)
        except ApiError as e:
            status, data, content_type, headers = self._error(e, environ, rid)
        except Exception:
            bug = True
            log.exception("POST %s failed (request id %s)", environ.get("PATH_INFO"), rid)
            status, data, content_type, headers = self._error(
                ApiError(50001, f"internal error (request id {rid})"), environ, rid)
        out = [("Content-Type", content_type or JSON), ("Content-Length", str(len(data or b"")))]
        out += headers.items()
        out.append(("X-Request-Id", rid))
        out.append(NOSNIFF)
        self.record(self.rules[which], status)
        start_response(STATUS_LINES.get(status) or f"{status} UNKNOWN", out)
        if bug:
            return ClosingIterator([data or b""], self.on_bug)
        return [data or b""]

    @staticmethod
    def _error(e: ApiError, environ: dict, rid: str) -> tuple[int, bytes, str, dict[str, str]]:
        if e.status >= 500:
            log.error("POST %s -> %d %d %s (request id %s)", environ.get("PATH_INFO"), e.status, e.error_code,
                      e.message, rid)
        return e.status, e.body_bytes(), JSON, e.headers


def _read_body(stream: Any, length: int) -> bytes:
    """``length`` bytes of the request body. A connection lost while reading it (a client's
    network, not a bug) is Flask's answer too: werkzeug turns it into ClientDisconnected, a 400."""
    if not length:
        return b""
    try:
        return stream.read(length)
    except OSError as e:
        raise ApiError(40001, ClientDisconnected.description) from e


def _query_getter(query_string: str) -> Callable[[str], str | None]:
    """``request.args.get`` for a PLAIN_QUERY_RE query string: the first value of a name
    (a name without "=" has the value "")."""
    first: dict[str, str] = {}
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            first.setdefault(name, value)
    return first.get
