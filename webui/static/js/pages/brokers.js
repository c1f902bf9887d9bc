// Brokers: per broker its liveness, the partitions it leads and follows (from every topic's
// partitions), its engine and fsync mode (the gateway's broker list), and -- from the monitor's
// exposition on the gateway's /metrics, when it serves it -- disk use, RSS and CPU.

import { loadCluster } from "../cluster.js";
import { nodeMetrics } from "../metrics.js";
import { model, subscribe } from "../model.js";
import { badge, card, clear, every, fmtBytes, fmtPercent, h, table } from "../ui.js";

const REFRESH_MS = 5000;

function metric(node, ...names) {
  const m = node?.metrics || {};
  for (const n of names) if (m[n] !== undefined && m[n] !== null) return m[n];
  return undefined;
}

export function brokerRows(cluster) {
  return cluster.brokers.map((b) => {
    const leads = [], follows = [];
    for (const t of cluster.topics) {
      for (const p of t.partitions || []) {
        const tp = `${t.topic_name}-${p.partition_id}`;
        if (p.leader && p.leader.broker_id === b.broker_id) leads.push(tp);
        else if (p.replicas.some((r) => r.broker_id === b.broker_id)) follows.push({ tp, inSync: p.isr.includes(b.broker_id) });
      }
    }
    const name = `broker-${b.broker_id}`;
    const node = model.nodes.get(name);
    const metrics = { ...(node?.metrics || {}), ...(cluster.metrics?.[name] || {}) };
    return { ...b, leads, follows, node: { ...node, metrics }, state: node ? node.state : (b.alive ? "healthy" : "down") };
  });
}

/** CPU: a ratio needs two readings of the CPU seconds (metrics.js, one a refresh): "measuring…"
 * until the second, not "—" (which says the monitor gives none). */
export function cpuText(metrics) {
  const ratio = metrics?.cpu_ratio;
  if (ratio === undefined || ratio === null) return metrics?.cpu_seconds !== undefined ? "measuring…" : "—";
  return fmtPercent(ratio);
}

/** The broker's fsync mode (from the gateway's broker list), with its interval when it has one. */
export function fsyncText(mode, intervalMs) {
  if (!mode) return "—";
  return mode === "interval" && intervalMs ? `interval (${intervalMs} ms)` : mode;
}

function list(items, fmt) {
  if (!items.length) return h("span.muted", {}, "none");
  const shown = items.slice(0, 12).map(fmt);
  return h("div", {}, h("strong", {}, String(items.length)), " ", shown.flatMap((x) => [x, " "]),
    items.length > 12 ? h("span.muted", {}, `+${items.length - 12} more`) : null);
}

export async function render(root, ctx) {
  const body = h("div");
  clear(root, h("h1", {}, "Brokers"), body);
  let cluster = null;

  function draw() {
    if (!cluster) return;
    const rows = brokerRows(cluster);
    clear(body, table([
      { label: "Broker", cell: (r) => h("strong", {}, `broker-${r.broker_id}`) },
      { label: "State", cell: (r) => badge(r.state) },
      { label: "Address", cell: (r) => h("span.mono", {}, `${r.host}:${r.port}`) },
      { label: "Leads", cell: (r) => list(r.leads, (tp) => h("span.pill", {}, tp)) },
      { label: "Follows", cell: (r) => list(r.follows, (f) => h("span.pill", { title: f.inSync ? "in sync" : "out of sync" }, f.inSync ? f.tp : `${f.tp} ✗`)) },
      { label: "Disk", cls: "num", cell: (r) => {
        const used = metric(r.node, "log_bytes", "disk_bytes", "disk_used_bytes");
        const ratio = metric(r.node, "disk_used_ratio", "loom_broker_disk_used_ratio");
        return [fmtBytes(used), ratio !== undefined ? h("div.muted", {}, `volume ${fmtPercent(ratio)} full`) : null];
      } },
      { label: "Engine", cell: (r) => metric(r.node, "engine") ?? r.engine ?? "—" },
      { label: "Fsync", cell: (r) => fsyncText(metric(r.node, "fsync", "fsync_mode") ?? r.fsync, r.fsync_interval_ms) },
      { label: "RSS", cls: "num", cell: (r) => fmtBytes(metric(r.node, "rss_bytes", "loom_process_resident_memory_bytes")) },
      { label: "CPU", cls: "num", cell: (r) => cpuText(r.node.metrics) },
    ], rows, { rowCls: (r) => (r.state === "down" ? "down" : ""), empty: "no brokers" }),
    cluster.truncated ? h("p.muted", {}, "Only the first topics' partitions are counted.") : null,
    h("p.muted", {}, "Engine and fsync mode come from the gateway's broker list; disk, RSS and CPU from the monitor, “—” until it reports them (CPU: “measuring…” until it has two readings)."));
  }

  async function refresh() {
    try {
      const [c, metrics] = await Promise.all([loadCluster(), nodeMetrics().catch(() => null)]);
      cluster = { ...c, metrics };
      draw();
    } catch (e) { clear(body, card(null, h("div.error", { role: "alert" }, e.message))); }
  }
  ctx.cleanup.push(subscribe(draw));
  await refresh();
  every(REFRESH_MS, refresh, ctx.cleanup);
}
