"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium; never a
downloaded browser) against a real cluster with the gateway serving the dashboard.

One cluster and one browser for all browser tests (starting them is the slow part; a test
that kills a node brings it back); each test gets a
fresh browser context (its own sessionStorage) and a page that records console errors and
uncaught exceptions in ``page.console_errors``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from fabric.apikeys import hash_key
from tests.harness import ROOT, TEST_ADMIN_KEY, running_cluster, wait_until

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READ_ONLY_KEY = "test-read-only-key"
SCREENSHOT_DIR = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
PAGE_TIMEOUT_MS = 10_000

try:
    from playwright import sync_api
except ImportError:  # a dev extra: pip install -e '.[dev]'
    sync_api = None


def cluster_nodes() -> tuple[str, ...]:
    """Every service role this build has, next to the coordinator and brokers."""
    nodes = ("producer", "consumer-1", "consumer-2", "gateway")
    return nodes + (("monitor",) if importlib.util.find_spec("nodes.monitor") else ())


class Dashboard:
    """The cluster under test and how to reach its gateway."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        gw = cluster.raw["nodes"]["gateway"]
        self.url = f"http://127.0.0.1:{gw['dashboard_port']}"
        self.api_url = f"http://127.0.0.1:{gw['port']}"
        self.admin_key = TEST_ADMIN_KEY

    def rest(self, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}", **kw.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=15, **kw)

    def v3(self, suffix: str) -> str:
        return f"/v3/clusters/{self.cluster.raw['cluster']['name']}{suffix}"

    def ensure_topic(self, name: str, partitions: int = 1) -> None:
        """Create the topic (replication factor 3) unless an earlier test did."""
        r = self.rest("POST", self.v3("/topics"), json={"topic_name": name, "partitions_count": partitions,
                                                         "replication_factor": 3})
        assert r.status_code in (201, 409), r.text

    def produce(self, topic: str, records: list[dict]) -> None:
        """Produce records ({key?, value} in the JSON embedded format) through the REST API."""
        r = self.rest("POST", f"/topics/{topic}", json={"records": records},
                      headers={"Content-Type": "application/vnd.kafka.json.v2+json"})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skip (before any cluster starts) when the browser cannot run here."""
    if sync_api is None:
        pytest.skip("playwright is not installed (a dev extra: pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")


# The cluster and the browser end with the browser tests (package scope): for the whole session
# they stayed up, nine idle node processes and a Chromium beside every later test.
@pytest.fixture(scope="package")
def dashboard(browser_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    keys = [{"name": "test", "key_hash": hash_key(TEST_ADMIN_KEY), "roles": ["admin", "produce", "consume", "read"]},
            {"name": "viewer", "key_hash": hash_key(READ_ONLY_KEY), "roles": ["read"]}]
    with running_cluster(tmp_path_factory.mktemp("dash"), 3, extra_nodes=cluster_nodes(),
                         overrides={"security": {"api_keys": keys}}) as cluster:
        d = Dashboard(cluster)
        wait_until(lambda: requests.get(d.url + "/health", timeout=2).status_code == 200, 30, what="gateway /health")
        wait_until(lambda: requests.get(d.url + "/", timeout=2).status_code == 200, 10, what="the dashboard page")
        yield d


@pytest.fixture(scope="package")
def browser(browser_available: None) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


def new_page(browser: Any, viewport: dict = DESKTOP, bypass_csp: bool = True) -> Any:
    # The page's CSP forbids eval; Playwright's wait_for_function("...") evaluates a string, so
    # the test's own probes bypass it (the CSP header itself: tests/unit/test_dashboard_static.py;
    # the page under its CSP: test_dashboard_pages.py::test_the_page_works_under_its_own_policy).
    context = browser.new_context(viewport=viewport, bypass_csp=bypass_csp)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(f"console.{m.type}: {m.text} @ {m.location}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(f"uncaught: {e}"))
    return page


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    pg = new_page(browser)
    yield pg
    pg.context.close()


def login(page: Any, dashboard: Dashboard, key: str | None = None) -> None:
    page.goto(dashboard.url + "/")
    page.fill("#api-key", key or dashboard.admin_key)
    page.press("#api-key", "Enter")
    page.wait_for_selector(".topbar:not([hidden])")


def count_fetches(page: Any, url_part: str) -> None:
    """Count the page's REST calls whose URL contains url_part in ``window.__fetches`` (every
    call goes through fetch(), and is counted as it is made: no network event to wait for)."""
    page.add_init_script("""((part) => {
      const fetchOf = window.fetch;
      window.__fetches = 0;
      window.fetch = (url, init) => {
        if (String(url).includes(part)) window.__fetches++;
        return fetchOf(url, init);
      };
    })(%s)""" % json.dumps(url_part))


def save_screenshot(page: Any, name: str, tmp_dir: Path) -> Path:
    """Save a full-page PNG under tmp_dir; also to docs/screenshots/ when LOOM_SCREENSHOTS=1
    (so a test run does not rewrite tracked files unless asked)."""
    path = tmp_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LOOM_SCREENSHOTS") == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOT_DIR / path.name)
    return path


MONITOR_DOWN = "#events-timeline li:has-text('monitor healthy → down')"
MONITOR_UP = "#events-timeline li:has-text('monitor down → healthy')"


def restart_the_monitor_at_once(page: Any, dashboard: Dashboard) -> None:
    """Log in, open the alerts page, kill the monitor and start it again as fast as the test can
    (within the gateway's PING timeout, as ``loom up``'s supervisor does); return once the
    timeline shows it down and up again and the new monitor is ready."""
    login(page, dashboard)
    page.wait_for_selector('.node[data-node="monitor"][data-state="healthy"]', timeout=15_000)
    page.click("#nav a[href='#/alerts']")
    page.wait_for_selector("#events-timeline")
    dashboard.cluster.kill("monitor")
    dashboard.cluster.start_node("monitor", wait=False)
    page.wait_for_selector(MONITOR_DOWN, timeout=15_000)
    page.wait_for_selector(MONITOR_UP, timeout=15_000)
    dashboard.cluster.wait_ready("monitor")
