"""Login, the overview with every node healthy, every page without console errors (with a
screenshot of each), phone width, keyboard navigation, logout."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import PHONE, login, new_page, save_screenshot

PAGES = {  # hash -> a selector that shows the page has its data
    "overview": "#nodes .node",
    "brokers": "table td strong",
    "topics": "#topics-list table",
    "messages": "#msg-info:not(:empty)",
    "produce": "#produce-form",
    "tail": "#tail-form",
    "groups": "#groups-list table",
    "alerts": "#events-timeline",
}


SHOWN_ELSEWHERE = {"tail", "alerts"}   # their screenshots come from tests that fill them
TRAFFIC_REQUESTS_MAX = 60
CHART_POINTS_MIN = 4


def traffic_until_charted(dashboard, page) -> None:
    """Produce small batches (bounded) until the overview has measured a records/s rate."""
    records = [{"value": {"n": i}} for i in range(50)]
    for _ in range(TRAFFIC_REQUESTS_MAX):
        dashboard.produce("orders", records)
        if int(page.get_attribute("#chart-records", "data-points") or 0) >= CHART_POINTS_MIN:
            break
        page.wait_for_timeout(250)


def seed(dashboard) -> None:
    """A topic with a few records and a group with committed offsets, so pages have content."""
    dashboard.ensure_topic("orders", 3)
    records = [{"key": f"user-{i}", "value": {"item": "book", "n": i}} for i in range(12)]
    dashboard.produce("orders", records)


def test_login_then_overview_shows_every_node_healthy(dashboard, page) -> None:
    login(page, dashboard)
    assert page.evaluate("sessionStorage.getItem('loom.apiKey')") == dashboard.admin_key
    assert dashboard.admin_key not in page.url
    for name in dashboard.cluster.node_names:
        page.wait_for_selector(f'.node[data-node="{name}"][data-state="healthy"]', timeout=15_000)
    assert page.console_errors == []


# a WebSocket to another origin (the gateway's API port): the policy refuses it, or it opens
OTHER_ORIGIN_SOCKET_JS = """url => new Promise(done => {
  document.addEventListener("securitypolicyviolation", e => done(e.effectiveDirective), {once: true});
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); done("opened"); };
  setTimeout(() => done("neither refused nor opened"), 5000);
})"""


def test_the_page_works_under_its_own_policy(dashboard, browser) -> None:
    page = new_page(browser, bypass_csp=False)
    try:
        login(page, dashboard)  # the key is checked over a WebSocket (js/api.js: whoami)
        for name in dashboard.cluster.node_names:  # node states come over /ws/events
            page.wait_for_selector(f'.node[data-node="{name}"][data-state="healthy"]', timeout=15_000)
        assert page.console_errors == []
        other = dashboard.api_url.replace("http:", "ws:") + "/ws/events"
        assert page.evaluate(OTHER_ORIGIN_SOCKET_JS, other) == "connect-src", "a socket to another origin opened"
    finally:
        page.context.close()


def test_the_api_docs_page_lists_every_operation(dashboard, page) -> None:
    """/docs (the README's "readable offline") stopped at "cannot load /openapi.json: TypeError"
    once a response was documented in a type other than JSON (414 as text/html, /metrics as
    Prometheus text), and asked for a favicon it does not have."""
    spec = dashboard.rest("GET", "/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    page.goto(dashboard.url + "/docs")
    page.wait_for_function(f"document.querySelectorAll('#ops details').length > {operations}")
    assert "cannot load" not in page.inner_text("#ops")
    assert page.console_errors == []


def test_wrong_key_is_refused_at_login(dashboard, page) -> None:
    page.goto(dashboard.url + "/")
    page.fill("#api-key", "not-a-key")
    page.press("#api-key", "Enter")
    page.wait_for_selector(".login .error:not([hidden])")
    assert "invalid API key" in page.inner_text(".login .error")
    assert page.evaluate("sessionStorage.getItem('loom.apiKey')") is None


def test_every_page_renders_without_console_errors(dashboard, page, tmp_path: Path) -> None:
    seed(dashboard)
    login(page, dashboard)
    for name, ready in PAGES.items():
        page.goto(f"{dashboard.url}/#/{name}")
        page.wait_for_selector(ready)
        page.wait_for_load_state("networkidle")
        if name == "overview":
            traffic_until_charted(dashboard, page)
        if name not in SHOWN_ELSEWHERE:
            save_screenshot(page, name, tmp_path)
    page.goto(f"{dashboard.url}/#/topics/orders")
    page.wait_for_selector("#partitions table tbody tr td.num")
    save_screenshot(page, "topic", tmp_path)
    for wrong in ("topic/orders", "group/x", "topic", "nothing-here"):  # not "topic 'undefined'" and its 404s
        page.goto(f"{dashboard.url}/#/{wrong}")
        page.wait_for_function("document.querySelector('#main h1')?.textContent === 'Not found'")
    assert page.console_errors == []


def test_overview_is_readable_at_phone_width(dashboard, browser, tmp_path: Path) -> None:
    page = new_page(browser, PHONE)
    try:
        login(page, dashboard)
        page.wait_for_selector("#nodes .node")
        # nothing wider than the screen but the tables' own scrolling boxes
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert not page.is_visible("#nav a[href='#/topics']")        # the menu is folded
        page.click(".menu-toggle")
        page.click("#nav a[href='#/topics']")
        page.wait_for_selector("#topics-list table")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.goto(f"{dashboard.url}/#/overview")
        page.wait_for_selector("#nodes .node")
        save_screenshot(page, "overview-phone", tmp_path)
        assert page.console_errors == []
    finally:
        page.context.close()


def test_keyboard_reaches_and_opens_pages(dashboard, page) -> None:
    login(page, dashboard)
    page.reload()                      # still logged in (session storage); focus starts at the top
    page.wait_for_selector("#nodes .node")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.getAttribute('href') || document.activeElement.id"))
        if focused[-1] == "#/topics":
            break
    assert "#/topics" in focused, focused
    page.keyboard.press("Enter")
    page.wait_for_selector("#topics-list table")
    assert page.evaluate("location.hash") == "#/topics"


def test_logout_forgets_the_key(dashboard, page) -> None:
    login(page, dashboard)
    page.click("#logout")
    page.wait_for_selector("#api-key")
    assert page.evaluate("sessionStorage.getItem('loom.apiKey')") is None
    page.reload()
    page.wait_for_selector("#api-key")
    assert page.is_hidden(".topbar")

