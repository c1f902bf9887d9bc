// Overview: every node with its health (live from /ws/events), throughput charts (the
// monitor's history, then live points), cluster counts and firing alerts.

import { rateChart } from "../chart.js";
import { counts, highWatermarks, loadCluster, recordsPerSecond } from "../cluster.js";
import { fallbackRecordsIn, model, subscribe } from "../model.js";
import { badge, card, clear, every, fmtAgo, fmtBytes, fmtRate, h, stat } from "../ui.js";

const ROLE_ORDER = ["coordinator", "broker", "producer", "consumer", "gateway", "monitor"];
const REST_REFRESH_MS = 2000;

/** Nodes from the live model, plus brokers the REST API knows that no event has named yet. */
export function nodeList(brokers) {
  const nodes = new Map(model.nodes);
  for (const b of brokers || []) {
    const name = `broker-${b.broker_id}`;
    if (!nodes.has(name)) {
      nodes.set(name, { name, role: "broker", state: b.alive ? "healthy" : "down", reason: "from the coordinator's metadata", metrics: {} });
    }
  }
  if (![...nodes.values()].some((n) => n.role === "gateway") && model.connection === "open") {
    // the gateway does not watch itself; it is serving this page's event stream right now
    nodes.set("gateway", { name: "gateway", role: "gateway", state: "healthy", reason: "serving this dashboard", metrics: {} });
  }
  return [...nodes.values()].sort((a, b) => (ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role)) || a.name.localeCompare(b.name, "en", { numeric: true }));
}

/** "up/total" of the broker cards (healthy or degraded: serving), from the same list the cards
 * are drawn from: the monitor's cluster count (the coordinator's view) said "3/3 brokers up" for
 * a second beside a broker card already down. */
export function brokersUp(nodes) {
  const brokers = nodes.filter((n) => n.role === "broker");
  if (!brokers.length) return "—";
  return `${brokers.filter((n) => n.state === "healthy" || n.state === "degraded").length}/${brokers.length}`;
}

/** A partition count with the internal topics' share left out, as the partition count leaves
 * them out (the monitor's counts include them), and said beside the label when there is one. */
function apart(label, count, internal, cls) {
  if (count == null) return stat(label, "—");
  const own = count - (internal || 0);
  return stat(internal ? `${label} (+${internal} internal)` : label, own, own || internal ? cls : "");
}

function nodeCard(n) {
  return h(`div.node.state-${n.state}`, { "data-node": n.name, "data-state": n.state, tabindex: "0",
    "aria-label": `${n.name}: ${n.state}` },
  h("div.node-name", {}, h("span", {}, n.name), badge(n.state)),
  h("div.node-role", {}, [n.role, n.host && n.port ? `${n.host}:${n.port}` : null,
    n.restarts ? `${n.restarts} restart${n.restarts === 1 ? "" : "s"}` : null].filter(Boolean).join(" · ")),
  n.reason ? h("div.node-reason", {}, n.reason) : null,
  n.since_ms ? h("div.node-reason", {}, `since ${fmtAgo(n.since_ms)}`) : null);
}

export async function render(root, ctx) {
  let rest = null;
  let restError = null;
  const nodesEl = h("div.nodes#nodes", { "aria-live": "polite" });
  const statsEl = h("div.stats#cluster-stats");
  const alertsEl = h("div#firing-alerts");
  const recordsEl = h("div.chart#chart-records");
  const bytesEl = h("div.chart#chart-bytes");
  const liveEl = h("span.muted", {}, "");
  clear(root,
    h("div.page-head", {}, h("h1", {}, "Cluster overview"), liveEl),
    statsEl,
    card("Nodes", nodesEl),
    h("div.grid-2", {}, card("Records per second", recordsEl), card("Bytes per second", bytesEl)),
    card("Firing alerts", alertsEl));

  const charts = [rateChart(recordsEl, { labels: ["in", "out"] }), rateChart(bytesEl, { labels: ["in", "out"], bytes: true })];
  ctx.cleanup.push(() => charts.forEach((c) => c.destroy()));

  function draw() {
    const live = model.cluster && model.cluster.partitions !== undefined ? model.cluster : null;
    const c = { ...(rest ? counts(rest) : {}), ...(live || {}) };
    const firing = [...model.alerts.values()].filter((a) => a.state === "firing");
    const nodes = nodeList(rest?.brokers);   // the cards, and every count of nodes beside them
    const down = nodes.filter((n) => n.state === "down" || n.state === "unresponsive").length;
    clear(nodesEl, nodes.map(nodeCard));
    clear(statsEl,
      stat("nodes down", down, down ? "bad" : "ok"),
      stat("brokers up", brokersUp(nodes)),
      stat("topics", c.topics ?? "—"),
      stat("partitions", c.partitions === undefined ? "—" : c.partitions - (c.internal_partitions || 0)),   // as topics: __consumer_offsets apart
      apart("under-replicated", c.under_replicated, c.internal_under_replicated, "warn"),
      apart("offline partitions", c.offline, c.internal_offline, "bad"),
      stat("firing alerts", firing.length, firing.length ? "bad" : ""),
      stat("records/s in", fmtRate(model.rates.records_in_per_s)),
      stat("bytes/s in", model.rates.bytes_in_per_s === undefined ? "—" : fmtBytes(model.rates.bytes_in_per_s)));
    clear(alertsEl, firing.length
      ? h("ul", {}, firing.map((a) => h("li", {}, badge("firing"), " ", h("strong", {}, a.rule), ` ${a.subject}: ${a.message} `, h("span.muted", {}, fmtAgo(a.fired_ms)))))
      : h("p.muted", {}, "No alert is firing."));
    if (restError) statsEl.append(h("div.error", { role: "alert" }, `REST: ${restError.message}`));
    const s = model.series;
    charts[0].update(s.t, s.records_in_per_s, s.records_out_per_s);
    recordsEl.dataset.points = String(s.records_in_per_s.filter((v) => v !== null && v !== undefined).length);
    charts[1].update(s.t, s.bytes_in_per_s, s.bytes_out_per_s);
    liveEl.textContent = model.connection === "open" ? "live" : `live updates: ${model.connection}`;
  }

  let previous = null;   // {ms, hws}: the high watermarks, for records/s without the monitor
  async function refresh() {
    try { rest = await loadCluster(); restError = null; } catch (e) { restError = e; }
    if (rest && !restError) {
      const hws = highWatermarks(rest.topics);
      const now = Date.now();
      if (previous && now > previous.ms) fallbackRecordsIn(now, recordsPerSecond(previous.hws, hws, (now - previous.ms) / 1000));
      previous = { ms: now, hws };
    }
    draw();
  }
  ctx.cleanup.push(subscribe(draw));
  draw();
  await refresh();
  every(REST_REFRESH_MS, refresh, ctx.cleanup);
}
