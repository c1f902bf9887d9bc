"""The dashboard's static files (webui/static): ``/`` is the single page, ``/static/...`` its
modules, stylesheet and vendored libraries. No API key is needed for these files -- the page
asks for the key and sends it on every API call, never in a URL.

Every file is revalidated on each load (``no-cache`` with an ETag, so an unchanged file costs a
304); modules are served as ``text/javascript`` whatever the host's mimetypes table says.
A Content-Security-Policy keeps the page to its own origin: no inline script, no CDN.
No HTML page of the gateway may be framed by another (``forbid_framing``: clickjacking).

The gateway's app registers it with ``app.register_blueprint(dashboard_blueprint)``.
Thread-safe (stateless).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from werkzeug.datastructures import Headers

STATIC_DIR = Path(__file__).parent / "static"
# self only. The page's WebSockets go to its own host (js/api.js: wsUrl), which 'self' covers:
# CSP Level 3 matches ws: and wss: of the page's own host and port for 'self' (browsers older
# than that rule refuse the sockets: the page shows the gateway as not reachable). "ws: wss:"
# would let a script in the page send data to any host.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
FRAME_ANCESTORS_NONE = "frame-ancestors 'none'"
MIMETYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}

dashboard_blueprint = Blueprint("dashboard", __name__)


def forbid_framing(headers: Headers) -> None:
    """An HTML answer may not be shown in a frame of any page: ``X-Frame-Options`` for older
    browsers, and ``frame-ancestors 'none'`` -- in the policy the answer has (the dashboard's
    has it), else as a policy of its own (``/docs``, whose inline script no policy is written
    for)."""
    headers["X-Frame-Options"] = "DENY"
    csp = headers.get("Content-Security-Policy")
    if csp is None:
        headers["Content-Security-Policy"] = FRAME_ANCESTORS_NONE
    elif "frame-ancestors" not in csp:
        headers["Content-Security-Policy"] = f"{csp}; {FRAME_ANCESTORS_NONE}"


def _send(name: str) -> Response:
    resp = send_from_directory(STATIC_DIR, name, max_age=0, conditional=True, etag=True)
    suffix = Path(name).suffix
    if suffix in MIMETYPES:
        resp.mimetype = MIMETYPES[suffix]
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    if suffix == ".html":
        resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        resp.headers["Referrer-Policy"] = "no-referrer"
        forbid_framing(resp.headers)
    return resp


@dashboard_blueprint.get("/")
def index() -> Response:
    return _send("index.html")


@dashboard_blueprint.get("/static/<path:name>")
def static_file(name: str) -> Response:
    # send_from_directory refuses paths outside STATIC_DIR (404), so ../ cannot escape
    return _send(name)
