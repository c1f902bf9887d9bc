"""The gateway's app with the dashboard's blueprint and its own request counter, through Flask's
test client (no processes): the blueprint serves the page, static files are rate limited per
address, every response is counted by route template, every response says ``nosniff`` and no
HTML page may be framed."""

from __future__ import annotations

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import HTTP_REQUESTS_METRIC, Gateway
from webui.dashboard import CONTENT_SECURITY_POLICY
from webui.events import EventHub


def make_gateway(rate_per_s: float = 1000.0, burst: int = 2000) -> Gateway:
    return Gateway(agent=StubAgent(), hub=EventHub(), keys=KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()]), limiter=RateLimiter(rate_per_s, burst, 100),
                   settings=GatewayConfig(), security=SecurityConfig(rate_limit_per_s=rate_per_s),
                   cluster_id="test")


def test_the_dashboard_blueprint_serves_the_page_and_static_files_are_rate_limited() -> None:
    client = create_app(make_gateway(rate_per_s=0.01, burst=3)).test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert client.get("/static/js/app.js").headers["Content-Type"].startswith("text/javascript")
    assert client.get("/static/js/model.js").status_code == 200
    limited = client.get("/static/js/api.js")
    assert limited.status_code == 429 and limited.json["error_code"] == 42901 and "Retry-After" in limited.headers


def test_every_response_is_counted_by_route_template() -> None:
    gw = make_gateway()
    client = create_app(gw).test_client()
    auth = {"Authorization": f"Bearer {KEYS['admin']}"}
    for _ in range(2):
        assert client.get("/v3/clusters/test/topics/missing", headers=auth).status_code == 404
    assert client.get("/no/such/route").status_code == 404
    assert client.get("/v3/clusters/test/topics/x").status_code == 401
    counts = {labels: n for name, labels, n in gw.http_requests.samples() if name == HTTP_REQUESTS_METRIC}
    assert counts[("/v3/clusters/<cluster_id>/topics/<topic_name>", "404")] == 2
    assert counts[("/v3/clusters/<cluster_id>/topics/<topic_name>", "401")] == 1
    assert counts[("unmatched", "404")] == 1


def test_every_response_says_nosniff_and_no_html_page_may_be_framed() -> None:
    client = create_app(make_gateway()).test_client()
    auth = {"Authorization": f"Bearer {KEYS['admin']}"}
    produce = {**auth, "Content-Type": "application/vnd.kafka.binary.v2+json"}
    answers = {
        "JSON": client.get("/topics", headers=auth),
        "error": client.get("/topics"),
        "no route": client.get("/no/such/route"),
        "method": client.put("/topics", headers=auth),
        "OpenAPI": client.get("/openapi.json"),
        "produce (fast path)": client.post("/topics/t", json={"records": [{"value": "not base64!"}]}, headers=produce),
        "produce without a key (fast path)": client.post("/topics/t", json={"records": [{"value": 1}]}),
        "docs": client.get("/docs"),
        "page": client.get("/"),
        "module": client.get("/static/js/app.js"),
    }
    assert answers["produce (fast path)"].status_code == 422 and answers["docs"].mimetype == "text/html"
    limited = create_app(make_gateway(rate_per_s=0.01, burst=1)).test_client()
    limited.get("/health")
    answers["rate limited"] = limited.get("/health")
    assert answers["rate limited"].status_code == 429
    for what, r in answers.items():
        assert r.headers.get("X-Content-Type-Options") == "nosniff", f"{what}: {r.status_code} without nosniff"
    for what in ("docs", "page"):
        r = answers[what]
        assert r.headers.get("X-Frame-Options") == "DENY", f"{what} may be framed (no X-Frame-Options)"
        assert "frame-ancestors 'none'" in r.headers.get("Content-Security-Policy", ""), what
