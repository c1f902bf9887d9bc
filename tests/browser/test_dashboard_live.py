"""Live updates without reloading: a SIGKILLed broker shows as down within 2 s and as healthy
again after it restarts; a consumer group's lag falls as it consumes. And what a read-only key
sees."""

from __future__ import annotations

import time

from fabric.client.group import GroupConsumer
from tests.browser.conftest import READ_ONLY_KEY, login, save_screenshot
from tests.harness import wait_until

DOWN_SHOWN_WITHIN_S = 2.0


def test_killed_broker_goes_down_and_comes_back_on_the_overview_without_reload(dashboard, page, tmp_path) -> None:
    login(page, dashboard)
    page.wait_for_selector('.node[data-node="broker-2"][data-state="healthy"]', timeout=15_000)
    page.evaluate("window.__loomNoReload = true")
    dashboard.cluster.kill("broker-2")
    killed = time.monotonic()
    try:
        page.wait_for_selector('.node[data-node="broker-2"][data-state="down"]', timeout=5_000)
        shown_s = time.monotonic() - killed
        assert shown_s <= DOWN_SHOWN_WITHIN_S, f"down shown after {shown_s:.2f} s"
    finally:
        dashboard.cluster.start_node("broker-2")
    ready = time.monotonic()
    page.wait_for_selector('.node[data-node="broker-2"][data-state="healthy"]', timeout=5_000)
    assert time.monotonic() - ready <= DOWN_SHOWN_WITHIN_S
    assert page.evaluate("window.__loomNoReload") is True      # the same page: no reload happened
    page.click("#nav a[href='#/alerts']")                       # the timeline kept both changes
    page.wait_for_selector("#events-timeline li:has-text('broker-2')")
    save_screenshot(page, "alerts", tmp_path)
    assert page.console_errors == []


def test_consumer_group_lag_falls_as_it_consumes(dashboard, page, tmp_path) -> None:
    dashboard.ensure_topic("ledger", 1)
    dashboard.produce("ledger", [{"value": {"n": i}} for i in range(30)])
    consumer = GroupConsumer(dashboard.cluster.bootstrap, group_id="billing", auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        consumer.subscribe(["ledger"])
        got: list = []
        wait_until(lambda: got.extend(consumer.poll(timeout_ms=200)) or len(got) >= 30, 20, what="30 records")
        consumer.commit({("ledger", 0): 10})
        login(page, dashboard)
        page.goto(f"{dashboard.url}/#/groups/billing")
        page.wait_for_selector('#total-lag[data-lag="20"]')
        page.evaluate("window.__loomNoReload = true")
        consumer.commit({("ledger", 0): 25})
        page.wait_for_selector('#total-lag[data-lag="5"]')
        consumer.commit({("ledger", 0): 30})
        page.wait_for_selector('#total-lag[data-lag="0"]')
        assert page.evaluate("window.__loomNoReload") is True
        assert page.locator("#group-members tbody tr").count() == 1     # the member and its assignment
        assert "ledger-0" in page.inner_text("#group-members")
        page.click("#reset-form button[type=submit]")               # dry run (admin): a preview, nothing changed
        page.wait_for_selector("#reset-preview table")
        save_screenshot(page, "group", tmp_path)
    finally:
        consumer.close()
    page.goto(f"{dashboard.url}/#/groups")
    page.wait_for_selector('#groups-list a[href="#/groups/billing"]')
    assert page.console_errors == []


def test_read_only_key_cannot_see_the_produce_form_or_admin_actions(dashboard, page) -> None:
    dashboard.ensure_topic("orders", 3)
    login(page, dashboard, READ_ONLY_KEY)
    assert "read" in page.inner_text("#who-name")
    assert page.is_hidden("#nav a[href='#/produce']")
    assert page.is_hidden("#nav a[href='#/tail']")
    page.goto(f"{dashboard.url}/#/produce")
    page.wait_for_selector("text=has no produce role")
    assert page.locator("#produce-form").count() == 0
    page.goto(f"{dashboard.url}/#/topics")
    page.wait_for_selector("#topics-list table")
    assert page.locator("#create-topic").count() == 0
    page.goto(f"{dashboard.url}/#/topics/orders")
    page.wait_for_selector("#partitions table")
    assert page.locator("#delete-topic").count() == 0 and page.locator("#add-partitions").count() == 0
    assert page.console_errors == []
