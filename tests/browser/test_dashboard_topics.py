"""Topics from the UI: create (and its inline validation error), the detail page, add
partitions, delete with typed confirmation; produce from the form and find the record in the
message browser and in the live tail."""

from __future__ import annotations

import base64
import json
import math
import time

from tests.browser.conftest import count_fetches, login, new_page, save_screenshot
from tests.harness import wait_until


def create_topic(page, name: str, partitions: str = "2", rf: str = "3") -> None:
    page.goto(page.url.split("#")[0] + "#/topics")
    page.wait_for_selector("#create-topic")
    page.fill("#create-topic [name=topic_name]", name)
    page.fill("#create-topic [name=partitions_count]", partitions)
    page.fill("#create-topic [name=replication_factor]", rf)
    page.click("#create-topic button[type=submit]")


def test_create_topic_from_the_ui_and_see_it_listed(dashboard, page) -> None:
    login(page, dashboard)
    create_topic(page, "ui-created")
    page.wait_for_selector('#topics-list a[href="#/topics/ui-created"]')
    r = dashboard.rest("GET", dashboard.v3("/topics/ui-created"))
    assert r.status_code == 200 and r.json()["partitions_count"] == 2
    page.click('#topics-list a[href="#/topics/ui-created"]')
    page.wait_for_selector("#partitions table tbody tr")
    assert page.locator("#partitions tbody tr").count() == 2
    assert page.console_errors == []


def test_create_topic_error_from_the_api_is_shown_at_the_form(dashboard, page) -> None:
    login(page, dashboard)
    create_topic(page, "too-many-replicas", partitions="1", rf="9")
    page.wait_for_selector("#create-error:not([hidden])")
    text = page.inner_text("#create-error")
    assert "422" in text or "replication" in text.lower(), text
    assert page.get_attribute("#create-topic [name=replication_factor]", "aria-invalid") == "true"
    assert dashboard.rest("GET", dashboard.v3("/topics/too-many-replicas")).status_code == 404


def test_add_partitions_then_delete_with_typed_confirmation(dashboard, page) -> None:
    login(page, dashboard)
    create_topic(page, "short-lived", partitions="1")
    page.wait_for_selector('#topics-list a[href="#/topics/short-lived"]')
    page.goto(f"{dashboard.url}/#/topics/short-lived")
    page.click("#add-partitions")
    page.fill("dialog input[type=number]", "3")
    page.click("dialog button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#partitions tbody tr').length === 3")
    page.click("#delete-topic")
    page.fill("#confirm-delete", "short-live")          # not the name: the button stays off
    assert page.is_disabled("dialog button.danger")
    page.fill("#confirm-delete", "short-lived")
    page.click("dialog button.danger")
    page.wait_for_function("location.hash === '#/topics'")
    wait_until(lambda: dashboard.rest("GET", dashboard.v3("/topics/short-lived")).status_code == 404, 10,
               what="the topic to be deleted")


def test_produce_from_the_form_then_find_it_in_the_browser_and_the_live_tail(dashboard, browser, page, tmp_path) -> None:
    dashboard.ensure_topic("payments", 2)
    login(page, dashboard)
    # the live tail, in a second tab, from new records only
    tail = new_page(browser)
    try:
        login(tail, dashboard)
        tail.goto(f"{dashboard.url}/#/tail?topic=payments")
        tail.wait_for_function("document.querySelector('#tail-status')?.textContent.startsWith('live')")

        value = json.dumps({"amount": 42, "currency": "EUR"})
        page.goto(f"{dashboard.url}/#/produce?topic=payments")
        page.fill("#produce-key", "customer-7")
        page.fill("#produce-value", value)
        page.click("#add-header")
        page.fill("#produce-headers .header-name", "source")
        page.fill("#produce-headers .header-value", "dashboard-test")
        page.click("#produce-form button[type=submit]")
        page.wait_for_selector("#produce-ok")
        partition = int(page.inner_text("#produced-partition"))
        offset = int(page.inner_text("#produced-offset"))

        row = tail.wait_for_selector(f'#tail-rows tr[data-partition="{partition}"][data-offset="{offset}"]', timeout=15_000)
        assert '"amount": 42' in row.inner_text() and "customer-7" in row.inner_text()
        save_screenshot(tail, "tail-live", tmp_path)

        page.click("#produce-ok a")                      # "see it in the browser"
        page.wait_for_selector("#msg-results table tbody tr td.num")
        cells = page.inner_text("#msg-results tbody tr")
        assert str(offset) in cells and '"currency": "EUR"' in cells and "source: dashboard-test" in cells
        assert page.console_errors == [] and tail.console_errors == []
    finally:
        tail.context.close()


def test_a_produce_whose_answer_never_came_says_the_record_may_have_been_written(dashboard, page) -> None:
    """The produce request went out and its answer was lost (a dropped connection, the page's
    own 15 s timeout): the form said only "the gateway is not reachable", and a user who
    submitted again could store the record twice."""
    dashboard.ensure_topic("payments", 2)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/produce?topic=payments")
    page.route("**/topics/payments*", lambda route: route.abort("connectionreset")
               if route.request.method == "POST" else route.continue_())
    page.fill("#produce-value", "lost-answer")
    page.click("#produce-form button[type=submit]")
    page.wait_for_selector("#produce-error:not([hidden])")
    assert "may have been written" in page.inner_text("#produce-error"), page.inner_text("#produce-error")


def test_a_failed_produce_does_not_leave_the_last_success_on_show(dashboard, page) -> None:
    """A record written, then one refused (a partition the topic lacks): the form showed the
    error under the first record's "Written to ... at offset N", as if the second had landed."""
    dashboard.ensure_topic("payments", 2)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/produce?topic=payments")
    page.fill("#produce-value", "first")
    page.click("#produce-form button[type=submit]")
    page.wait_for_selector("#produce-ok")
    page.fill("#produce-partition", "7")
    page.fill("#produce-value", "second")
    page.click("#produce-form button[type=submit]")
    page.wait_for_selector("#produce-error:not([hidden])")
    assert "no partition 7" in page.inner_text("#produce-error"), page.inner_text("#produce-error")
    assert page.locator("#produce-ok").count() == 0, page.inner_text("#produce-result")


def test_message_browser_filters_a_bounded_range(dashboard, page) -> None:
    dashboard.ensure_topic("clicks", 1)
    records = [{"key": f"k{i}", "value": f"click {i} {'special' if i % 10 == 3 else ''}"} for i in range(60)]
    dashboard.produce("clicks", records)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/messages?topic=clicks")
    page.wait_for_selector("#msg-results tbody tr td.num")
    page.fill("#msg-value-filter", "special")
    page.click("#msg-form button[type=submit]")
    page.wait_for_function("document.querySelector('#msg-info')?.textContent.includes('scanned 60 records')")
    assert page.locator("#msg-results tbody tr").count() == 6
    # paging: 20 a page from the oldest, forward and back
    page.fill("#msg-value-filter", "")
    page.select_option("#msg-size", "20")
    page.click("#msg-form button[type=submit]")
    page.wait_for_function("document.querySelector('#msg-info')?.textContent.startsWith('20 records')")
    page.click("#msg-next")
    page.wait_for_function("document.querySelector('#msg-results tbody tr td:nth-child(2)')?.textContent === '20'")
    page.click("#msg-prev")
    page.wait_for_function("document.querySelector('#msg-results tbody tr td:nth-child(2)')?.textContent === '0'")
    assert page.console_errors == []


def test_live_tail_pause_holds_records_back_and_resume_shows_them(dashboard, page) -> None:
    dashboard.ensure_topic("sensor", 1)

    def produce(first: int, n: int) -> None:
        dashboard.produce("sensor", [{"value": {"reading": i}} for i in range(first, first + n)])

    produce(0, 5)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/tail")
    page.select_option("#tail-topic", "sensor")
    page.select_option("#tail-from", "beginning")
    page.click("#tail-start")
    page.wait_for_function("document.querySelectorAll('#tail-rows tr').length === 5")
    page.click("#tail-pause")
    assert page.get_attribute("#tail-pause", "aria-pressed") == "true"
    produce(5, 7)
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.includes('paused, 7 waiting')")
    assert page.locator("#tail-rows tr").count() == 5              # held back while paused
    page.click("#tail-pause")                                       # resume
    page.wait_for_function("document.querySelectorAll('#tail-rows tr').length === 12")
    assert page.get_attribute("#tail-rows tr:first-child", "data-offset") == "11"   # newest first
    page.click("#tail-stop")
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.startsWith('stopped')")
    assert page.console_errors == []


def test_live_tail_from_the_end_shows_every_record_produced_once_it_says_live(dashboard, page) -> None:
    """The tail says "joining…" while its stream's consumer joins, and "live" only once the
    gateway says it is ready (positioned at the log end); every record produced from then on is
    shown. It said "live" as the socket opened, ~100 ms before the consumer had a position,
    and records produced in that moment never came."""
    dashboard.ensure_topic("arrivals", 3)
    dashboard.produce("arrivals", [{"key": f"old-{i}", "value": "old"} for i in range(6)])
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/tail")
    page.select_option("#tail-topic", "arrivals")
    page.select_option("#tail-from", "end")
    page.evaluate("""() => {
      const status = document.querySelector('#tail-status');
      window.tailStates = [];
      new MutationObserver(() => window.tailStates.push(status.textContent.split(' · ')[0]))
        .observe(status, { childList: true, characterData: true, subtree: true });
    }""")
    page.click("#tail-start")
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.startsWith('live')")
    dashboard.produce("arrivals", [{"key": f"k{i}", "value": {"n": i}} for i in range(30)])
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.includes(' 30 received')",
                           timeout=15_000)
    states = page.evaluate("window.tailStates")
    assert "joining…" in states and states.index("joining…") < states.index("live"), states
    offsets = page.eval_on_selector_all("#tail-rows tr",
                                        "rows => rows.map(r => [r.dataset.partition, r.dataset.offset])")
    assert len(set(map(tuple, offsets))) == 30, offsets
    values = page.eval_on_selector_all("#tail-rows tr td:last-child", "cells => cells.map(c => c.textContent)")
    assert not any("old" in v for v in values), "from the end: nothing produced before the tail started"
    assert page.console_errors == []


def test_a_tail_the_gateway_refuses_says_why(dashboard, page) -> None:
    """A tail the gateway closes with 1008 (here: the topic was deleted after the page listed
    it) shows the gateway's reason. The denial's reason was overwritten by "stopped" at once,
    so the tail looked as if it had been stopped by hand, with nothing received and no cause."""
    dashboard.ensure_topic("tail-gone", 1)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/tail")
    page.wait_for_selector("#tail-topic option[value=tail-gone]", state="attached")
    assert dashboard.rest("DELETE", dashboard.v3("/topics/tail-gone")).status_code == 204
    page.select_option("#tail-topic", "tail-gone")
    page.click("#tail-start")
    page.wait_for_function("!document.querySelector('#tail-start').disabled")   # the stream has ended
    status = page.inner_text("#tail-status")
    assert "'tail-gone' not found" in status, status
    assert page.is_disabled("#tail-stop") and page.is_disabled("#tail-pause")
    page.click("#tail-start")                  # a start after a refusal still tries again
    page.wait_for_function("!document.querySelector('#tail-start').disabled")
    assert "'tail-gone' not found" in page.inner_text("#tail-status")


def test_live_tail_buffers_are_bounded(dashboard, page) -> None:
    dashboard.ensure_topic("firehose", 1)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/tail?topic=firehose")
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.startsWith('live')")
    page.click("#tail-pause")
    dashboard.produce("firehose", [{"value": i} for i in range(1200)])
    # PAUSED_BUFFER_MAX (1000) wait, the 200 oldest are dropped and counted
    page.wait_for_function("document.querySelector('#tail-status')?.textContent.includes('1200 received')", timeout=20_000)
    status = page.inner_text("#tail-status")
    assert "1000 waiting" in status and "200 dropped while paused" in status, status
    page.click("#tail-pause")
    page.wait_for_function("document.querySelectorAll('#tail-rows tr').length === 500")   # TAIL_ROWS_MAX
    assert page.get_attribute("#tail-rows tr:first-child", "data-offset") == "1199"
    assert page.console_errors == []


def test_message_browser_starts_at_a_time(dashboard, page) -> None:
    dashboard.ensure_topic("timeline", 1)
    dashboard.produce("timeline", [{"value": {"batch": "before", "n": i}} for i in range(7)])
    boundary_s = math.ceil(time.time()) + 1        # a whole second (the time field has 1 s steps)
    wait_until(lambda: time.time() >= boundary_s + 0.05, 5, what="the next second")
    dashboard.produce("timeline", [{"value": {"batch": "after", "n": i}} for i in range(5)])
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/messages?topic=timeline")
    page.wait_for_selector("#msg-results tbody tr td.num")
    page.select_option("#msg-start", "time")
    page.fill("#msg-time", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(boundary_s)))
    page.click("#msg-form button[type=submit]")
    page.wait_for_function("document.querySelector('#msg-results tbody tr td:nth-child(2)')?.textContent === '7'")
    assert page.locator("#msg-results tbody tr").count() == 5
    assert '"after"' in page.inner_text("#msg-results tbody") and '"before"' not in page.inner_text("#msg-results tbody")
    assert page.console_errors == []


def test_message_browser_at_a_time_needs_the_time(dashboard, page) -> None:
    """"at time" with the time left empty showed the oldest records, as if "oldest" had been
    chosen, without a word; the time is now a required field while "at time" is chosen (the
    browser does not submit the form without it)."""
    dashboard.ensure_topic("timeline", 1)
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/messages?topic=timeline")
    page.wait_for_selector("#msg-results table")
    valid = "document.querySelector('#msg-form').checkValidity()"
    page.select_option("#msg-start", "time")
    assert page.evaluate(valid) is False
    assert page.evaluate("document.querySelector('#msg-time').validity.valueMissing") is True
    page.fill("#msg-time", "2026-01-01T00:00:00")
    assert page.evaluate(valid) is True
    page.fill("#msg-time", "")
    page.select_option("#msg-start", "oldest")          # the time is asked for only "at time"
    assert page.evaluate(valid) is True
    assert page.console_errors == []


def test_a_topic_that_does_not_exist_offers_nothing_to_do_with_it(dashboard, page) -> None:
    """...and is not asked for again every 3 s (a 404 in the console each time) until the user
    navigates. The page's timers run on Playwright's clock: a minute of them passes at once."""
    count_fetches(page, "/topics/no-such-topic")
    page.clock.install()
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/topics/no-such-topic")
    page.wait_for_selector("#partitions .error")
    assert "no-such-topic" in page.inner_text("#partitions .error") or "404" in page.inner_text("#partitions .error")
    page.wait_for_function("!document.querySelector('#delete-topic')")
    for selector in ("#add-partitions", "#delete-topic", '.toolbar a[href^="#/produce"]', '.toolbar a[href^="#/tail"]'):
        assert page.locator(selector).count() == 0, selector
    page.wait_for_selector("#configs .error, #configs p.muted")      # the page's first round of asks is over
    asked = page.evaluate("window.__fetches")
    page.clock.run_for(60_000)
    assert page.evaluate("window.__fetches") == asked, "the missing topic was asked for again"
    assert "does not exist" in page.inner_text("#configs")


def test_message_browser_says_a_partition_is_empty_and_a_record_without_a_key_has_none(dashboard, page) -> None:
    """An empty partition read "p0 0–0 of [0, 0)", as if offset 0 were shown; a record without a
    key showed "null" where missing headers show "—" (an empty key is still told apart)."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    dashboard.ensure_topic("sparse", 2)
    r = dashboard.rest("POST", "/topics/sparse/partitions/1",
                       json={"records": [{"value": b64("no key")}, {"key": "", "value": b64("empty key")}]},
                       headers={"Content-Type": "application/vnd.kafka.binary.v2+json"})  # a key of 0 bytes
    assert r.status_code == 200, r.text
    login(page, dashboard)
    page.goto(f"{dashboard.url}/#/messages?topic=sparse")
    page.wait_for_selector("#msg-results tbody tr td.num")
    info = page.inner_text("#msg-info")
    assert "p0 empty" in info and "0–0 of [0, 0)" not in info, info
    rows = page.eval_on_selector_all("#msg-results tbody tr", "trs => trs.map((tr) => [...tr.cells].map((td) => td.innerText))")
    keys = {row[5].split("\n")[0]: (row[3], row[4]) for row in rows}  # value -> (key, headers)
    assert keys.get("no key") == ("—", "—"), rows
    assert keys.get("empty key") == ('""', "—"), rows
    assert page.console_errors == []
