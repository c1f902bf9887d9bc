"""The dashboard's files as webui/dashboard.py serves them: no key needed, JavaScript modules
with a JavaScript type, a same-origin Content-Security-Policy, nothing outside webui/static,
every module import resolving to a file, and nothing loaded from another host."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from webui.dashboard import STATIC_DIR, dashboard_blueprint

IMPORT_RE = re.compile(r"""(?:import|from)\s*(?:\(\s*)?["'](\.{1,2}/[^"']+)["']""")
MODULE_PATH_RE = re.compile(r"""module:\s*["'](\./[^"']+)["']""")


@pytest.fixture
def client():
    app = Flask("test", static_folder=None)  # as the gateway's app: its /static is ours
    app.register_blueprint(dashboard_blueprint)
    return app.test_client()


def test_index_is_served_without_a_key_with_a_same_origin_policy(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert r.headers["Cache-Control"] == "no-cache"
    assert b'type="module" src="/static/js/app.js"' in r.data
    assert b'href="/docs"' in r.data          # the API documentation is one click away


def test_the_page_may_connect_only_to_its_own_origin(client) -> None:
    directives = dict(d.strip().split(" ", 1) for d in client.get("/").headers["Content-Security-Policy"].split(";"))
    assert directives["connect-src"] == "'self'", \
        f"connect-src {directives['connect-src']}: a script in the page could open a WebSocket to any host"
    # 'self' covers ws:/wss: of the page's own host (CSP Level 3): every socket the page opens goes there
    api = (STATIC_DIR / "js" / "api.js").read_text()
    assert "`${scheme}//${location.host}${path}`" in api
    for f in (STATIC_DIR / "js").rglob("*.js"):
        for opened in re.findall(r"new WebSocket\(([^)]*)\)", f.read_text()):
            assert opened.startswith("wsUrl("), f"{f.name} opens a WebSocket to {opened}"


def test_modules_are_javascript_and_revalidated(client) -> None:
    r = client.get("/static/js/app.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    again = client.get("/static/js/app.js", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_nothing_outside_the_static_directory(client) -> None:
    assert client.get("/static/../dashboard.py").status_code == 404
    assert client.get("/static/%2e%2e/dashboard.py").status_code == 404
    assert client.get("/static/js/missing.js").status_code == 404


def test_every_import_resolves_and_nothing_comes_from_another_host() -> None:
    files = sorted((STATIC_DIR / "js").rglob("*.js"))
    assert files
    for f in files:
        text = f.read_text()
        for spec in IMPORT_RE.findall(text) + MODULE_PATH_RE.findall(text):
            target = (f.parent / spec).resolve()
            assert target.is_file(), f"{f.relative_to(STATIC_DIR)} imports {spec}: no such file"
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), f"{f.name} refers to another host"
    html = (STATIC_DIR / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert (STATIC_DIR / ref.removeprefix("/static/")).is_file(), ref


def test_vendored_libraries_carry_their_licence_and_version() -> None:
    versions = (STATIC_DIR / "vendor" / "VERSIONS.md").read_text()
    for lib in (p for p in (STATIC_DIR / "vendor").iterdir() if p.is_dir()):
        assert (lib / "LICENSE").is_file(), lib.name
        assert f"`{lib.name}/" in versions, f"{lib.name} is not in VERSIONS.md"
