"""The Brokers page shows each broker's storage engine and fsync mode (from the gateway's broker
list), next to the figures the monitor's /metrics gives through the gateway."""

from __future__ import annotations

import re

from tests.browser.conftest import login
from tests.harness import wait_until


def test_brokers_page_shows_engine_and_fsync_mode(dashboard, page) -> None:
    brokers = dashboard.rest("GET", dashboard.v3("/brokers")).json()["data"]
    assert {(b["engine"], b["fsync"], b["fsync_interval_ms"]) for b in brokers} == {("segment", "interval", 50)}
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/brokers")
    page.wait_for_selector("table td strong")
    rows = page.locator("table tbody tr")
    assert rows.count() == len(brokers)
    for i in range(rows.count()):
        text = rows.nth(i).inner_text()
        assert "interval (50 ms)" in text and "segment" in text, text
    assert page.console_errors == []


def cpu_cells(page) -> list[str]:
    return page.eval_on_selector_all("table tbody tr", "trs => trs.map((tr) => tr.cells[tr.cells.length - 1].innerText)")


def test_broker_cpu_says_measuring_until_it_has_two_readings(dashboard, page) -> None:
    """CPU is a rate between two readings of the monitor's CPU seconds, one a refresh (5 s): it
    showed "—", as if the monitor gave none, for the first 5 s. The page is loaded once the
    monitor reports every broker's CPU seconds (its first readings come a scrape after the
    cluster starts: until then "—" is the right answer, and this test ran first once)."""
    brokers = {f"broker-{b['broker_id']}" for b in dashboard.rest("GET", dashboard.v3("/brokers")).json()["data"]}

    def cpu_reported() -> bool:
        text = dashboard.rest("GET", "/metrics").text
        return brokers <= set(re.findall(r'^loom_process_cpu_seconds(?:_total)?\{[^}]*node="([^"]+)"', text, re.M))
    wait_until(cpu_reported, 30, what="the monitor's CPU seconds of every broker")
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/brokers")
    page.wait_for_selector("table td strong")
    first = cpu_cells(page)
    assert first and all(c == "measuring…" for c in first), first
    page.wait_for_function("[...document.querySelectorAll('table tbody tr')].every((tr) => "
                           "/^\\d+\\.\\d%$/.test(tr.cells[tr.cells.length - 1].innerText))", timeout=15_000)
    assert page.console_errors == []
