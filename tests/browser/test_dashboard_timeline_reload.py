"""The alerts page's timeline survives a reload: on load the page replays the monitor's event log
(``GET /monitor/events``) into the live model, oldest first, without changing the live state and
without showing an event twice -- also one that arrived over ``/ws/events`` while the REST answer
was on its way. A reload showed an empty timeline until new events came."""

from __future__ import annotations

from collections import Counter

from tests.browser.conftest import MONITOR_DOWN, MONITOR_UP, login, restart_the_monitor_at_once
from tests.harness import wait_until

REPLAY = """async () => {
  const m = await import('/static/js/model.js');
  const down = {type: 'node', kind: 'health', node: 'consumer-2', role: 'consumer', state: 'down', previous: 'healthy',
                reason: 'exited', seq: 11, ts_ms: 11000};
  const fired = {type: 'alert', kind: 'alert', name: 'node_down/consumer-2', rule: 'node_down', subject: 'consumer-2',
                 state: 'firing', message: 'consumer-2 is down', value: null, started_ms: 11000, fired_ms: 11500,
                 resolved_ms: null, seq: 12, ts_ms: 11500};
  const back = {type: 'node', kind: 'health', node: 'consumer-2', role: 'consumer', state: 'healthy', previous: 'down',
                reason: '', seq: 13, ts_ms: 12000};
  const restarted = {type: 'recovery', kind: 'recovery', source: 'supervisor', action: 'restarted', node: 'consumer-2',
                     reason: 'exited with -9', seq: 14, ts_ms: 13000};
  const first = {type: 'node', kind: 'health', node: 'broker-1', role: 'broker', state: 'healthy', previous: 'unknown',
                 reason: '', seq: 10, ts_ms: 10000};   // a first verdict is no change: not on the timeline, live or not
  const slow = {type: 'node', kind: 'health', node: 'consumer-2', role: 'consumer', state: 'degraded', previous: 'healthy',
                reason: 'STATS got no answer', seq: 15, ts_ms: 15000};
  // the stream's snapshot (consumer-2 healthy), then an event that came while the REST answer was on its way
  m.apply({type: 'status', cluster: {name: 't'}, nodes: [{node: 'consumer-2', role: 'consumer', state: 'healthy'}],
           rates: {}, checked_ms: 12500});
  m.apply(slow);
  m.replay([first, down, fired, back, restarted, slow]);   // the REST answer, oldest first: the live event in it too
  m.replay([down, back]);                                   // loaded again (a second answer): nothing twice
  m.apply(restarted);                                       // the stream repeating one the answer had
  const timeline = m.model.events.map((e) => [e.ts_ms, e.kind, e.node, e.state, e.text]);
  const state = m.model.nodes.get('consumer-2').state;
  const alerts = m.model.alerts.size;
  // bounded: a log longer than the page keeps gives its newest EVENTS_MAX, oldest first
  const many = Array.from({length: m.EVENTS_MAX + 100}, (_, i) => ({type: 'recovery', kind: 'recovery',
    action: 'restarted', node: 'broker-3', reason: '', seq: 100 + i, ts_ms: 100000 + i}));
  m.replay(many);
  const ts = m.model.events.map((e) => e.ts_ms);
  return {timeline, state, alerts, max: m.EVENTS_MAX, n: ts.length, first: ts[0], last: ts[ts.length - 1],
          sorted: ts.every((t, i) => i === 0 || ts[i - 1] <= t)};
}"""


def test_a_replayed_log_joins_the_live_timeline_in_order_and_once(dashboard, page) -> None:
    page.goto(dashboard.url + "/")          # not logged in: no live stream mixes in
    got = page.evaluate(REPLAY)
    assert got["timeline"] == [
        [11000, "health", "consumer-2", "down", "consumer-2 healthy → down: exited"],
        [11500, "alert", "consumer-2", "firing", "node_down firing: consumer-2 is down"],
        [12000, "health", "consumer-2", "healthy", "consumer-2 down → healthy"],
        [13000, "recovery", "consumer-2", "restarted", "consumer-2 restarted: exited with -9"],
        [15000, "health", "consumer-2", "degraded", "consumer-2 healthy → degraded: STATS got no answer"],
    ]
    assert got["state"] == "degraded", "a replayed (older) event does not change the live state"
    assert got["alerts"] == 0, "alerts come from the stream's snapshot, not from the replay"
    assert got["n"] == got["max"] and got["sorted"]
    assert (got["first"], got["last"]) == (100000 + 100, 100000 + got["max"] + 99)
    assert page.console_errors == []


def transitions(events: list[dict], node: str) -> Counter:
    """The health changes of ``node`` in the monitor's log as the timeline words them (a first
    verdict, from "unknown", is no change)."""
    return Counter(f"{node} {e['previous']} → {e['state']}" for e in events
                   if e.get("kind") == "health" and e.get("node") == node and e.get("previous") not in (None, "unknown"))


def test_after_a_reload_the_timeline_still_shows_a_node_that_went_down_and_came_back_once(dashboard, page) -> None:
    def log() -> list[dict]:
        r = dashboard.rest("GET", "/monitor/events?limit=1000")
        assert r.status_code == 200, r.text
        return r.json()["events"]

    login(page, dashboard)
    page.wait_for_selector('.node[data-node="consumer-2"][data-state="healthy"]', timeout=15_000)
    dashboard.cluster.kill("consumer-2")
    try:
        page.wait_for_selector('.node[data-node="consumer-2"][data-state="down"]', timeout=15_000)
    finally:
        dashboard.cluster.start_node("consumer-2")
    page.wait_for_selector('.node[data-node="consumer-2"][data-state="healthy"]', timeout=15_000)

    page.reload()                                              # the key stays in sessionStorage
    page.wait_for_selector(".topbar:not([hidden])")
    page.click("#nav a[href='#/alerts']")
    page.wait_for_selector("#events-timeline li:has-text('consumer-2 healthy → down')")

    def timeline() -> list[tuple[str, str]]:
        return [tuple(x) for x in page.eval_on_selector_all(
            "#events-timeline li", "els => els.map((li) => [li.querySelector('time').getAttribute('datetime'), "
                                   "li.textContent])")]

    def once_each() -> bool:
        """Every health change of consumer-2 in the monitor's log is on the timeline, once (the
        live stream may still bring one the monitor made after the log was read: both read again)."""
        want = transitions(log(), "consumer-2")
        got = Counter(t for _, text in timeline() for t in want if text.endswith(t) or f"{t}:" in text)
        seen.update(want=want, got=got)
        if got != want:
            raise AssertionError(f"shown {dict(got)}, the monitor's log has {dict(want)}")
        return True
    seen: dict[str, Counter] = {}
    wait_until(once_each, 10, what="every health change of consumer-2 on the timeline, once")
    assert seen["want"]["consumer-2 healthy → down"] >= 1, seen
    times = [when for when, _ in timeline()]
    assert times == sorted(times, reverse=True), "newest first, in order"
    assert page.console_errors == []


WATCHER_REPLAY = """async () => {
  const m = await import('/static/js/model.js');
  // the gateway's watcher: the monitor restarted between two PINGs (no kind, no seq: not the monitor's)
  const down = {type: 'node', node: 'monitor', role: 'monitor', state: 'down', previous: 'up',
                reason: 'restarted: process 100 replaced by 200 between two PINGs', ts_ms: 20000};
  const up = {type: 'node', node: 'monitor', role: 'monitor', state: 'up', previous: 'down', ts_ms: 20000};
  const first = {type: 'node', node: 'broker-2', role: 'broker', state: 'up', ts_ms: 9000};   // no previous: a first verdict
  // the monitor's log around it
  const before = {type: 'node', kind: 'health', node: 'broker-1', role: 'broker', state: 'down', previous: 'healthy',
                  reason: 'exited', seq: 5, ts_ms: 19000};
  const after = {type: 'node', kind: 'health', node: 'broker-1', role: 'broker', state: 'healthy', previous: 'down',
                 reason: '', seq: 6, ts_ms: 21000};
  m.apply({type: 'node', node: 'monitor', role: 'monitor', state: 'up', ts_ms: 1000});   // the stream's snapshot
  m.apply(down);                                   // the live stream brought the restart too ...
  m.apply(up);
  m.replay([before, after]);                       // GET /monitor/events
  m.replay([first, down, up]);                     // GET /gateway/events: ... shown once, in time order
  // an older monitor's log with "down → unknown" for a restarted process: the chain goes on from unknown
  m.replay([{type: 'node', kind: 'health', node: 'consumer-1', role: 'consumer', state: 'down', previous: 'healthy',
             reason: 'exited', seq: 7, ts_ms: 30000},
            {type: 'node', kind: 'health', node: 'consumer-1', role: 'consumer', state: 'unknown', previous: 'down',
             reason: 'no sign of life yet', seq: 8, ts_ms: 30500},
            {type: 'node', kind: 'health', node: 'consumer-1', role: 'consumer', state: 'degraded', previous: 'unknown',
             reason: 'STATS got no answer', seq: 9, ts_ms: 31000},
            {type: 'node', kind: 'health', node: 'consumer-1', role: 'consumer', state: 'healthy', previous: 'degraded',
             reason: '', seq: 10, ts_ms: 32000}]);
  return m.model.events.map((e) => [e.ts_ms, e.node, e.text]);
}"""


def test_the_gateway_watchers_events_join_the_replayed_timeline_once_and_in_order(dashboard, page) -> None:
    page.goto(dashboard.url + "/")          # not logged in: no live stream mixes in
    assert page.evaluate(WATCHER_REPLAY) == [
        [19000, "broker-1", "broker-1 healthy → down: exited"],
        [20000, "monitor", "monitor healthy → down: restarted: process 100 replaced by 200 between two PINGs"],
        [20000, "monitor", "monitor down → healthy"],
        [21000, "broker-1", "broker-1 down → healthy"],
        [30000, "consumer-1", "consumer-1 healthy → down: exited"],
        [30500, "consumer-1", "consumer-1 down → unknown: no sign of life yet"],
        [31000, "consumer-1", "consumer-1 unknown → degraded: STATS got no answer"],
        [32000, "consumer-1", "consumer-1 degraded → healthy"],
    ]
    assert page.console_errors == []


def test_after_a_reload_the_timeline_still_shows_a_monitor_restarted_between_two_pings(dashboard, page) -> None:
    """The gateway's watcher is the only one to see the monitor restart; its down and up were on
    the timeline until a reload, which read back only the monitor's log."""
    restart_the_monitor_at_once(page, dashboard)

    def monitor_entries() -> list[tuple[str, str]]:
        return [tuple(x) for x in page.eval_on_selector_all(
            "#events-timeline li", "els => els.map((li) => [li.querySelector('time').getAttribute('datetime'), "
                                   "li.textContent]).filter(([, text]) => text.includes('monitor '))")]
    shown = monitor_entries()

    page.reload()                                              # the key stays in sessionStorage
    page.wait_for_selector(".topbar:not([hidden])")
    page.click("#nav a[href='#/alerts']")
    page.wait_for_selector(MONITOR_DOWN, timeout=10_000)
    page.wait_for_selector(MONITOR_UP, timeout=10_000)
    again = monitor_entries()
    assert set(shown) <= set(again), f"before the reload {shown}, after it {again}"
    assert len(again) == len(set(again)), f"an event shown twice: {again}"
    assert page.console_errors == []


SAME_MS = """async () => {
  const m = await import('/static/js/model.js');
  const a = await import('/static/js/pages/alerts.js');
  m.apply({type: 'node', node: 'monitor', role: 'monitor', state: 'up', ts_ms: 1000});
  m.replay([{type: 'node', node: 'monitor', role: 'monitor', state: 'down', previous: 'up', reason: 'restarted', ts_ms: 5000},
            {type: 'node', node: 'monitor', role: 'monitor', state: 'up', previous: 'down', ts_ms: 5000}]);
  const root = document.createElement('div');
  document.body.append(root);
  const ctx = {cleanup: []};
  await a.render(root, ctx);
  const shown = [...root.querySelectorAll('#events-timeline li')].map((li) => li.lastChild.textContent);
  ctx.cleanup.forEach((f) => f());
  return shown;
}"""


def test_events_of_the_same_millisecond_are_shown_newest_first_too(dashboard, page) -> None:
    """The watcher publishes a restart's down and up in the same millisecond; the timeline, newest
    first, showed "healthy → down" above "down → healthy" (a sort by time kept their order)."""
    page.goto(dashboard.url + "/")          # not logged in: no live stream mixes in
    assert page.evaluate(SAME_MS) == ["monitor down → healthy", "monitor healthy → down: restarted"]
    assert page.console_errors == []
