"""One table of the gateway's routes: each route is declared once with its role, query
parameters, body schema per content type, response schema and errors, and that declaration
both serves the request (auth, rate limit, validation, error mapping) and writes the OpenAPI
3.1 document (``/openapi.json``), so the document cannot drift from what is served.

Validation uses the same JSON Schemas the document publishes (draft 2020-12, checked by
jsonschema-rs: a 500-record produce body costs ~0.3 ms there against ~20 ms in pure Python):
a body or parameter the document allows is accepted, one it forbids gets 422.

Bodies are read and answers written as strict JSON (webui/json_text.py).

Thread-safe after ``install`` (the table is read-only then).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

from flask import Flask, Response, g, request
import jsonschema_rs

from webui.errors import CODES, ApiError
from webui.json_text import dumps, integers_read, loads_body
from webui.schemas import BASE64, NAME_RULE, NAME_RULES, NameRule

ERROR_SCHEMA = {"type": "object", "required": ["error_code", "message"], "additionalProperties": False,
                "properties": {"error_code": {"type": "integer", "enum": sorted(CODES)}, "message": {"type": "string"}}}
STATUS_TEXT = {400: "Bad request", 401: "No valid API key", 403: "The key lacks the role", 404: "Not found",
               408: "Timeout", 409: "Conflict", 413: "Body too large", 415: "Unsupported content type",
               422: "Invalid input", 429: "Rate limited (see Retry-After)", 500: "Internal error (logged with X-Request-Id)",
               503: "A cluster service is unavailable"}
JSON = "application/json"
# The HTTP server (gunicorn's limit_request_line, at its maximum) answers a longer request line
# 414 itself, as text/html, before any route sees it: documented on every operation.
REQUEST_LINE_BYTES_MAX = 8190
URI_TOO_LONG = {"description": f"URI too long: a request line over {REQUEST_LINE_BYTES_MAX} bytes "
                               "(answered by the HTTP server, as HTML)",
                "content": {"text/html": {"schema": {"type": "string"}}}}


class Answer(NamedTuple):
    """A handler's answer with another status than its op's ``status``: one of the op's
    ``statuses``, with a body of the op's ``response`` schema (a readiness probe is read by its
    status code, and its body says why)."""
    status: int
    body: Any


@dataclass
class Op:
    method: str
    path: str                           # OpenAPI form: /topics/{topic_name}
    handler: Callable[..., Any]
    role: str | None                    # None: no key needed
    summary: str
    tag: str
    path_params: dict[str, dict] = field(default_factory=dict)
    query: dict[str, dict] = field(default_factory=dict)
    query_required: tuple[str, ...] = ()
    body: dict[str, dict] | None = None  # content type -> schema
    body_required: bool = True           # False: a request without a body calls the handler with body None
    response: dict | None = None         # None: 204 No Content
    response_type: str = JSON            # another type: the handler returns (body bytes, content type)
    status: int = 200
    statuses: dict[int, str] = field(default_factory=dict)  # other status -> its description (Answer)
    errors: tuple[int, ...] = ()         # error codes besides the common ones
    cluster: bool = True                 # talks to the cluster: may answer 408 / 503
    description: str = ""
    # False: the handler reads the body's integers itself (see integers_read)
    body_integers: bool = True
    # the error code of a body its schema refuses (a consumer instance's: 42203, its configuration)
    body_error: int = 42204
    # (path, query, body) jsonschema-rs validators by name / content type, and the body schemas
    # inlined by content type: set by Api.install
    validators: tuple[dict, dict, dict, dict] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    def flask_rule(self, components: dict[str, dict]) -> str:
        rule = self.path
        for name, schema in self.path_params.items():
            ref = schema.get("$ref", "")
            schema = components.get(ref.rsplit("/", 1)[-1], schema) if ref else schema
            conv = "int:" if schema.get("type") == "integer" else ""
            rule = rule.replace("{" + name + "}", f"<{conv}{name}>")
        return rule

    def error_codes(self, components: dict[str, dict]) -> list[int]:
        codes = set(self.errors) | {42901, 50001}
        if self.role:
            codes |= {40101, 40301}
        if self.body is not None:
            codes |= {40001, 40802, 41301, 41501, self.body_error}
        if self.query or self.path_params:
            codes |= {42206}
        if self.path_params:
            codes |= {40404}
        if any(_inline(s, components).get("type") != "integer" for s in self.path_params.values()):
            codes |= {40002}  # a name in the path that breaks the naming rule
        if self.cluster:
            codes |= {40801, 50002, 50301}
        return sorted(codes)


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def _coerce(raw: str, schema: dict) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(42206, f"{raw[:40]!r} is not an integer") from None
        if not INT64_MIN <= value <= INT64_MAX:  # what msgpack and the wire carry
            raise ApiError(42206, f"{raw[:40]} is out of range (a 64-bit integer)")
        return value
    if kind == "boolean":
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise ApiError(42206, f"{raw[:40]!r} is not a boolean")
    return raw


def _read_body() -> bytes:
    """The request's body. One without a length (chunked) is read here up to the limit and
    refused past it (413): werkzeug's stream would cut it at the limit unseen, and the cut body
    was answered 400 as JSON that does not parse."""
    limit = request.max_content_length
    if request.content_length is None and limit is not None:
        data = request.environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise ApiError(41301)
        return data
    return request.get_data(cache=False)


def invalid_name(what: str, value: str, rule: NameRule = NAME_RULE) -> str:
    """The message for ``value``, a ``what`` (a topic name, a group...) that breaks its naming
    ``rule`` (webui/schemas.py): what is wrong, and the rule."""
    shown = repr(value[:20]) + ("..." if len(value) > 20 else "")  # short: a WebSocket's close reason holds 123 bytes
    why = f"{len(value)} characters, over {rule.len_max}" if len(value) > rule.len_max else \
        "empty" if not value else "a dot segment" if value in (".", "..") else "characters outside the allowed ones"
    return f"invalid {what} {shown}: {why}; a name has {rule.text}"


# a name whose percent-escapes are not UTF-8: decoded with replacement (werkzeug's), "%FF" named the
# group "\ufffd" -- another group than the client's
NOT_UTF8_NAME = "invalid name: its percent-escapes are not UTF-8 (a name is text, percent-encoded as UTF-8)"


# "/" percent-encoded in a path: decoded before routing, it made the path another route's
ENCODED_SLASH_NAME = ("invalid name: it holds '/' (%2F), which a path cannot carry in a name -- the server reads it "
                      "as a separator (a topic, instance or cluster name never holds one; a group's cannot be "
                      "named over REST)")


def raw_path(environ: dict) -> str | None:
    """The raw request target's path, still percent-encoded (RAW_URI or REQUEST_URI, as
    gunicorn and werkzeug give it, before its "?"); None when the server gives neither."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return None if raw is None else raw.partition("?")[0]


def has_encoded_slash(environ: dict) -> bool:
    """The raw request target's path holds "/" percent-encoded."""
    return "%2f" in (raw_path(environ) or "").lower()


def is_utf8(environ: dict, part: str) -> bool:
    """The request target's ``part`` ("path" or "query"), its percent-escapes decoded, is UTF-8
    text. The path is read from the raw target (RAW_URI or REQUEST_URI, as gunicorn and werkzeug
    give it), else from PATH_INFO, whose characters are the request's bytes; the query from
    QUERY_STRING (never decoded by the server)."""
    try:
        if part == "query":
            parse_qsl(environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8"), keep_blank_values=True,
                      errors="strict")
            return True
        raw = raw_path(environ)
        if raw is not None:
            unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
        else:
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except (UnicodeError, ValueError):
        return False
    return True


def _first_error(validator: Any, value: Any) -> str | None:
    if validator.is_valid(value):
        return None
    err = next(iter(validator.iter_errors(value)))
    where = "/".join(str(p) for p in err.instance_path)
    message = _message(err)
    options = getattr(err.kind, "options", None) if getattr(err.kind, "name", "") == "enum" else None
    if isinstance(options, list) and len(options) <= 20:  # every choice, not "or 2 other candidates"
        message = f"{json.dumps(err.instance)} is not one of {', '.join(json.dumps(o) for o in options)}"
    elif getattr(err.kind, "name", "") in ("anyOf", "oneOf") and getattr(err.kind, "context", None):
        message = _no_alternative(err)
    return f"{where or '(body)'}: {message[:300]}"


def _message(err: Any) -> str:
    """The validator's message, but a binary field that is no base64 is said so: not '"x" does
    not match "^(?:[A-Za-z0-9+/]{4})*…"', the schema's regular expression."""
    if getattr(err.kind, "name", "") == "pattern" and getattr(err.kind, "pattern", None) == BASE64["pattern"]:
        return f"{json.dumps(err.instance)} is not base64 (A-Z a-z 0-9 + /, in groups of 4, the last padded with =)"
    return err.message


def _no_alternative(err: Any) -> str:
    """What each alternative of an anyOf/oneOf wants, from its first error ('"x" matches no
    alternative: it is not of type "integer"; it is not of type "null"'), instead of the
    validator's 'is not valid under any of the schemas listed in the 'anyOf' keyword'."""
    shown = json.dumps(err.instance)
    wants = []
    for errors in err.kind.context:
        if errors:
            first = _message(errors[0])
            wants.append("it " + first[len(shown) + 1:] if first.startswith(shown + " ") else first)
    return f"{shown} matches no alternative: {'; '.join(wants)}"


def body_checker(schema: dict) -> Callable[[Any], str | None]:
    """``check(value)``: the first problem of ``value`` against ``schema`` (one without
    ``$ref``s) as a route's 422 message words it, or None when it is valid."""
    validator = jsonschema_rs.Draft202012Validator(schema)
    return lambda value: _first_error(validator, value)


class Api:
    def __init__(self, title: str, version: str) -> None:
        self.title, self.version = title, version
        self.ops: list[Op] = []
        self.components: dict[str, dict] = {"Error": ERROR_SCHEMA}
        self.authorize: Callable[[Op], None] = lambda op: None   # set by the app: auth + rate limit

    def schema(self, name: str, schema: dict) -> dict:
        """Register a named schema; returns a $ref to it."""
        self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def op(self, method: str, path: str, **kw: Any) -> Callable:
        def register(fn: Callable) -> Callable:
            self.ops.append(Op(method, path, fn, **kw))
            return fn
        return register

    # -- serving -------------------------------------------------------------------------
    def install(self, app: Flask) -> None:
        for op in self.ops:
            app.add_url_rule(op.flask_rule(self.components), endpoint=op.endpoint, view_func=self._view(op),
                             methods=[op.method])

    def _validator(self, schema: dict) -> Any:
        return jsonschema_rs.Draft202012Validator(_inline(schema, self.components))

    def _view(self, op: Op) -> Callable:
        for name, schema in op.path_params.items():
            inlined = _inline(schema, self.components)
            # dispatch answers a string path parameter that fails its schema as an invalid name
            assert inlined.get("type") == "integer" or inlined == NAME_RULES.get(name, NAME_RULE).schema, \
                (op.endpoint, name)
        op.validators = (
            {n: self._validator(s) for n, s in op.path_params.items()},
            {n: self._validator(s) for n, s in op.query.items()},
            {ct: self._validator(s) for ct, s in (op.body or {}).items()},
            {ct: _inline(s, self.components) for ct, s in (op.body or {}).items()})

        def view(**path: Any) -> Response:
            g.op = op
            self.authorize(op)
            if any("\ufffd" in v for v in path.values() if isinstance(v, str)) \
                    and not is_utf8(request.environ, "path"):
                raise ApiError(40002, NOT_UTF8_NAME)
            status, data, content_type = self.dispatch(op, path, request.args.get, (request.mimetype or "").lower(),
                                                       _read_body)
            response = Response(data, status=status, content_type=content_type)
            if data is None:
                del response.headers["Content-Type"]  # 204: no content, so no type (Flask's default is text/html)
            return response
        view.__name__ = op.endpoint
        return view

    @staticmethod
    def dispatch(op: Op, path: dict[str, Any], query_get: Callable[[str], str | None], mimetype: str,
                 read_body: Callable[[], bytes]) -> tuple[int, bytes | None, str | None]:
        """Serve ``op`` for an authorized request, whatever serves HTTP (the Flask view, or
        webui/fastpath.py for produce): check the path parameters, the query and the body
        against the op's schemas, call the handler, encode its answer. Returns (status, body,
        content type); raises ApiError (and the handler's errors)."""
        assert op.validators is not None, "Api.install sets each op's validators"
        path_v, query_v, body_v, body_schemas = op.validators
        for name, value in path.items():
            if _first_error(path_v[name], value):
                if isinstance(value, str):  # a name no such thing can have: the request is wrong, nothing is missing
                    raise ApiError(40002, invalid_name(name.replace("_", " "), value, NAME_RULES.get(name, NAME_RULE)))
                raise ApiError(40404, f"no such {name.replace('_', ' ')}: {str(value)[:100]!r}")
        kw: dict[str, Any] = dict(path)
        if op.query:
            query: dict[str, Any] = {}
            for name, schema in op.query.items():
                raw = query_get(name)
                if raw is None:
                    if name in op.query_required:
                        raise ApiError(42206, f"query parameter {name} is required")
                    continue
                try:
                    value = _coerce(raw, schema)
                except ApiError as e:  # which parameter, as every other 42206 says
                    raise ApiError(e.error_code, f"query parameter {name}: {e.message}") from None
                problem = _first_error(query_v[name], value)
                if problem:
                    raise ApiError(42206, f"query parameter {name}: {problem.split(': ', 1)[1]}")
                query[name] = value
            kw["query"] = query
        raw = read_body() if op.body is not None else None
        if op.body is not None and not raw and not op.body_required:
            kw["body"], kw["content_type"] = None, None
        elif op.body is not None:
            if mimetype not in body_v:
                raise ApiError(41501, f"Content-Type must be one of: {', '.join(body_v)}")
            if not raw:
                raise ApiError(40001, "the body is empty: a JSON object is wanted")
            try:
                body = loads_body(raw, mimetype)
            except ValueError as e:
                raise ApiError(40001, f"the body is not JSON: {e}") from None
            problem = _first_error(body_v[mimetype], body)
            if problem:
                raise ApiError(op.body_error, problem)
            kw["body"] = integers_read(body_schemas[mimetype], body) if op.body_integers else body
            kw["content_type"] = mimetype
        result = op.handler(**kw)
        status = op.status
        if isinstance(result, Answer):
            assert result.status in op.statuses and op.response_type == JSON, (op.endpoint, result.status)
            status, result = result
        if op.response is None:
            return 204, None, None
        if op.response_type != JSON:
            body_bytes, content_type = result
            return op.status, body_bytes, content_type
        return status, dumps(result), JSON

    # -- the document ----------------------------------------------------------------------
    def openapi(self) -> dict[str, Any]:
        paths: dict[str, dict] = {}
        for op in self.ops:
            params = [{"name": n, "in": "path", "required": True, "schema": s} for n, s in op.path_params.items()]
            params += [{"name": n, "in": "query", "required": n in op.query_required,
                        "schema": {"maximum": INT64_MAX, **s} if s.get("type") == "integer" else s}
                       for n, s in op.query.items()]  # integers past int64 are refused (_coerce)
            responses: dict[str, Any] = {}
            if op.response is None:
                responses[str(op.status)] = {"description": "Done (no content)"}
            else:
                responses[str(op.status)] = {"description": "Success",
                                             "content": {op.response_type: {"schema": op.response}}}
            by_status: dict[int, list[int]] = {}
            for code in op.error_codes(self.components):
                by_status.setdefault(code // 100, []).append(code)
            for status, codes in sorted(by_status.items()):
                desc = STATUS_TEXT.get(status, "Error") + ": " + "; ".join(f"{c} {CODES[c]}" for c in codes)
                schema = {"allOf": [{"$ref": "#/components/schemas/Error"},
                                    {"properties": {"error_code": {"enum": codes}}}]}
                entry: dict[str, Any] = {"description": desc, "content": {JSON: {"schema": schema}}}
                if status == 429:
                    entry["headers"] = {"Retry-After": {"description": "seconds to wait", "required": True,
                                                        "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
                responses[str(status)] = entry
            for status, desc in op.statuses.items():  # the op's body; or else an error of that status
                assert op.response is not None, op.endpoint
                other = responses.get(str(status))
                schemas = [op.response] + ([other["content"][JSON]["schema"]] if other else [])
                responses[str(status)] = {
                    "description": desc + (" -- or an error. " + other["description"] if other else ""),
                    "content": {JSON: {"schema": {"anyOf": schemas} if other else op.response}}}
            responses["414"] = URI_TOO_LONG
            item: dict[str, Any] = {"operationId": _operation_id(op), "summary": op.summary, "tags": [op.tag],
                                    "parameters": params, "responses": responses,
                                    "security": [{"bearer": []}, {"apiKey": []}] if op.role else []}
            if op.role:
                item["x-loom-role"] = op.role
            if op.description:
                item["description"] = op.description
            if op.body is not None:
                item["requestBody"] = {"required": op.body_required,
                                       "content": {ct: {"schema": s} for ct, s in op.body.items()}}
            paths.setdefault(op.path, {})[op.method.lower()] = item
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version,
                     "description": "Loom's REST API: Confluent REST Proxy v2 data plane, v3-shaped admin, "
                                    "ops. Errors are JSON {error_code, message}; every response has X-Request-Id."},
            "paths": paths,
            "components": {"schemas": self.components, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        }


def _operation_id(op: Op) -> str:
    words = [w.strip("{}") for w in op.path.strip("/").replace("-", "_").split("/") if w]
    return op.method.lower() + "_" + "_".join(words or ["root"])


def _inline(schema: Any, components: dict[str, dict]) -> Any:
    """The schema with every ``#/components/schemas/X`` reference replaced by X (the
    components are not recursive), so a validator needs no registry."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            target = _inline(components[ref.rsplit("/", 1)[-1]], components)
            return {"allOf": [target, _inline(rest, components)]} if rest else target
        return {k: _inline(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, components) for v in schema]
    return schema
