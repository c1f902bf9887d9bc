"""The live model (webui/static/js/model.js) understands the event shapes /ws/events carries:
the gateway's own node watcher and the monitor's health, status, alert and recovery events and
its history -- checked on the page's module in the browser, so a shape change fails here."""

from __future__ import annotations

FEED = """async () => {
  const m = await import('/static/js/model.js');
  m.apply({type: 'node', node: 'broker-1', role: 'broker', state: 'up', ts_ms: 1000});
  m.apply({type: 'node', node: 'broker-1', role: 'broker', state: 'down', ts_ms: 2000});
  m.apply({type: 'node', kind: 'health', node: 'consumer-1', role: 'consumer', state: 'unresponsive', previous: 'healthy',
           reason: 'no heartbeat for 5000 ms while process 42 exists', seq: 3, ts_ms: 3000});
  m.apply({kind: 'health', node: 'producer', role: 'producer', state: 'degraded', ts_ms: 3100});
  m.apply({type: 'metrics', cluster: {name: 't', state: 'degraded', topics: 2, partitions: 6, under_replicated: 1, offline: 0,
                     brokers: 3, brokers_alive: 2},
           nodes: [{node: 'broker-2', role: 'broker', state: 'healthy', reason: '', pid: 7, since_ms: 500, restarts: 1}],
           rates: {records_in_per_s: 10, bytes_in_per_s: 100, records_out_per_s: 5, bytes_out_per_s: 50},
           checked_ms: 4000});
  m.apply({type: 'alert', kind: 'alert', name: 'node_down/broker-1', rule: 'node_down', subject: 'broker-1', state: 'firing', message: 'broker-1 is down',
           value: null, started_ms: 2000, fired_ms: 2500, resolved_ms: null, seq: 4, ts_ms: 2500});
  m.apply({kind: 'alert', rule: 'node_down', subject: 'broker-1', state: 'resolved', message: 'broker-1 is down',
           value: null, started_ms: 2000, fired_ms: 2500, resolved_ms: 6000, seq: 5, ts_ms: 6000});
  m.apply({type: 'recovery', kind: 'recovery', source: 'supervisor', action: 'restarted', node: 'broker-1', reason: 'exited with -9',
           seq: 6, ts_ms: 5000});
  m.applyHistory({interval_ms: 1000, t: [1000, 2000, 3000], series: {records_in_per_s: [1, null, 3]}});
  m.apply({type: 'something-new', x: 1});   // ignored
  const nodes = Object.fromEntries([...m.model.nodes].map(([k, v]) => [k, v.state]));
  const alerts = [...m.model.alerts.values()].map((a) => [a.rule, a.subject, a.state, a.fired_ms, a.resolved_ms]);
  return {nodes, alerts, cluster: m.model.cluster, rates: m.model.rates,
          events: m.model.events.map((e) => [e.kind, e.node, e.state]),
          series: m.model.series.t.length, firstRate: m.model.series.records_in_per_s[0]};
}"""


def test_gateway_and_monitor_event_shapes_update_the_model(dashboard, page) -> None:
    page.goto(dashboard.url + "/")          # not logged in: no live stream mixes in
    got = page.evaluate(FEED)
    assert got["nodes"] == {"broker-1": "down", "consumer-1": "unresponsive", "producer": "degraded", "broker-2": "healthy"}
    assert got["alerts"] == [["node_down", "broker-1", "resolved", 2500, 6000]]
    assert got["cluster"]["under_replicated"] == 1 and got["cluster"]["brokers_alive"] == 2
    assert got["rates"]["records_in_per_s"] == 10
    assert ["health", "broker-1", "down"] in got["events"]
    assert ["alert", "broker-1", "firing"] in got["events"] and ["alert", "broker-1", "resolved"] in got["events"]
    assert ["recovery", "broker-1", "restarted"] in got["events"]
    assert got["series"] == 4 and got["firstRate"] == 1     # three history points, then the status's
    assert page.console_errors == []
