"""The Brokers page shows each broker's storage engine and fsync mode (from the gateway's broker
list), next to the figures the monitor's /metrics gives through the gateway."""

from __future__ import annotations

from tests.browser.conftest import login


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
