// Per-node figures from the Prometheus text the gateway serves on /metrics (the monitor's
// exposition: every node's samples carry a `node` label). Used by the brokers page for disk,
// engine, RSS and CPU. Only asked for when the gateway's OpenAPI document lists /metrics.

import { api, session } from "./api.js";
import { monitorRoutes } from "./model.js";

export const SAMPLES_MAX = 200000;    // lines parsed at most (a bound on a huge exposition)
const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** [{name, labels: {k: v}, value}] from the text exposition format. */
export function parse(text) {
  const out = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length && out.length < SAMPLES_MAX; i++) {
    const line = lines[i];
    if (!line || line[0] === "#") continue;
    const m = SAMPLE_RE.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(LABEL_RE)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** {node: {log_bytes, engine, disk_used_ratio, disk_free_bytes, rss_bytes, cpu_seconds}} */
export function perNode(samples) {
  const nodes = {};
  const at = (n) => (nodes[n] ||= {});
  for (const s of samples) {
    const node = s.labels.node;
    if (!node) continue;
    const x = at(node);
    switch (s.name) {
      case "loom_broker_log_bytes":
        x.log_bytes = (x.log_bytes || 0) + s.value;
        x.engine = x.engine && x.engine !== s.labels.engine ? `${x.engine}, ${s.labels.engine}` : s.labels.engine;
        break;
      case "loom_broker_disk_used_ratio": x.disk_used_ratio = s.value; break;
      case "loom_broker_disk_free_bytes": x.disk_free_bytes = s.value; break;
      case "loom_process_resident_memory_bytes": x.rss_bytes = s.value; break;
      case "loom_process_cpu_seconds_total":
      case "loom_process_cpu_seconds": x.cpu_seconds = s.value; break;
      default:
        if (s.labels.fsync) x.fsync = s.labels.fsync;
    }
  }
  return nodes;
}

let previous = null;   // {ms, nodes} for CPU rates

/** Per-node figures with `cpu_ratio` (CPU seconds per second since the last call), or null
 * when the gateway does not serve /metrics. */
export async function nodeMetrics() {
  const routes = await monitorRoutes();
  if (!routes.metrics || !session.key()) return null;
  const text = await api("GET", routes.metrics, undefined, undefined, "text");
  const nodes = perNode(parse(text));
  const now = Date.now();
  if (previous) {
    const dt = (now - previous.ms) / 1000;
    for (const [n, x] of Object.entries(nodes)) {
      const before = previous.nodes[n];
      if (before && before.cpu_seconds !== undefined && x.cpu_seconds !== undefined && dt > 0) x.cpu_ratio = Math.max(0, (x.cpu_seconds - before.cpu_seconds) / dt);
    }
  }
  previous = { ms: now, nodes };
  return nodes;
}
