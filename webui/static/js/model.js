// The live cluster model behind the overview, brokers and alerts pages: one /ws/events
// connection for the whole session, its messages normalised here (this module is the only
// place that knows their shapes), plus the monitor's history and alert routes when the
// gateway's OpenAPI document lists them.
//
// Shapes understood (from the gateway's event hub and the monitor it relays):
//   {type: "node", node, role, state, previous, reason, ts_ms}   node health (gateway's own watcher: up|down)
//   {type: "node", kind: "health", node, role, state, previous, reason, ts_ms}   (monitor)
//   {type: "status", ...} or {cluster: {...}, nodes: [...], rates: {...}}   monitor status
//   {type: "metrics", rates|..._per_s, nodes?}           throughput
//   {type: "alert", name: "rule/subject", rule, subject, state, message, started_ms, fired_ms, resolved_ms}
//   {type: "recovery", kind: "recovery", node, action, reason, ts_ms}   supervisor/monitor recoveries
//   {type: "history", interval_ms, t: [...], series: {...}}
// A message wrapping another under `event` or `data`, or an array of messages, is unwrapped.
// Both sources say how a node is; while the monitor reports (its status comes once per check)
// its states stand: the watcher takes a node that missed one PING for down (a paused process the
// monitor calls degraded, then unresponsive), and a card that took both flipped between them.
// The watcher's states count for the monitor itself and once the monitor has been silent.
//
// The timeline (model.events) is kept in ts_ms order, each entry once: on load the monitor's
// event log (GET /monitor/events, the same shapes) is replayed into it by replay(), which only
// adds timeline entries -- an old event must not set a node's or an alert's state that the live
// stream has since moved on -- and an event that came over the stream while the answer was on
// its way is not shown twice (a monitor event's key is its seq and ts_ms, whichever way it came).
// The gateway's watcher's events the page shows (the monitor's own, and every node's while the
// monitor is silent: a restart between two PINGs is seen only there) are read back the same way
// from GET /gateway/events, keyed by node, state and ts_ms. Each node's health changes form a
// chain: a change from "unknown" is a first verdict and left out, unless the entry before it on
// the timeline ended in "unknown" (an older monitor's "down → unknown" for a restarted process).

import { clusterId, get, openSocket } from "./api.js";

export const SERIES_POINTS_MAX = 900;     // 15 minutes at one point a second
export const EVENTS_MAX = 500;            // timeline entries kept in the page
export const ALERTS_MAX = 500;
const FALLBACK_AFTER_MS = 10000;         // no rates from the monitor this long: measure them here
const MONITOR_SILENT_MS = 3000;          // no status or health from the monitor this long: the watcher's states count
const RATE_KEYS = ["records_in_per_s", "records_out_per_s", "bytes_in_per_s", "bytes_out_per_s"];
const STATE_ALIASES = { up: "healthy", alive: "healthy", ok: "healthy", true: "healthy", false: "down",
  dead: "down", stopped: "down", lagging: "degraded" };

function emptySeries() {
  return { t: [], ...Object.fromEntries(RATE_KEYS.map((k) => [k, []])) };
}

export const model = {
  connection: "connecting",   // connecting | open | closed | denied
  connectionReason: "",
  nodes: new Map(),           // name -> {name, role, state, reason, since_ms, pid, restarts, host, port, metrics}
  cluster: {},                // topics, partitions, under_replicated, offline, brokers, brokers_alive, state
  rates: {},                  // latest records/bytes in/out per second
  series: emptySeries(),      // chart data, seconds since epoch in t
  alerts: new Map(),          // rule|subject -> alert
  events: [],                 // by ts_ms, newest last: {ts_ms, kind, node, state, text, key}
  lastMessageMs: 0,
  lastRatesMs: 0,             // when rates last came from the monitor
  lastMonitorMs: 0,           // when a status or health event last came from the monitor
};

const listeners = new Set();
let socket = null;
let notifyQueued = false;

/** Call fn() after model changes (batched to one call per animation frame). Returns unsubscribe. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function changed() {
  if (notifyQueued) return;
  notifyQueued = true;
  requestAnimationFrame(() => {
    notifyQueued = false;
    for (const fn of [...listeners]) fn();
  });
}

export function normState(s) {
  const k = String(s ?? "unknown").toLowerCase();
  return STATE_ALIASES[k] || k;
}

function upsertNode(name, fields) {
  if (!name) return;
  const prev = model.nodes.get(name) || { name, role: "", state: "unknown", reason: "", metrics: {} };
  const next = { ...prev };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) next[k] = v;
  if (fields.state !== undefined) {
    next.state = normState(fields.state);
    // "since" is known only from the monitor or from a change seen while this page is open
    if (next.state !== prev.state && !fields.since_ms) next.since_ms = prev.state === "unknown" ? undefined : Date.now();
  }
  next.metrics = { ...prev.metrics, ...(fields.metrics || {}) };
  if (!next.role) next.role = roleOf(name);
  model.nodes.set(name, next);
}

function roleOf(name) {
  const base = String(name).split("-")[0];
  return ["broker", "consumer", "coordinator", "producer", "gateway", "monitor"].includes(base) ? base : "";
}

/** Add a timeline entry from the message `source` (its key: below), in ts_ms order, unless one
 * with its key is there; the oldest beyond EVENTS_MAX go. */
function pushEvent(ev, source) {
  const key = eventKey(source, ev);
  if (model.events.some((e) => e.key === key)) return;   // at most EVENTS_MAX: a scan is cheap
  let i = model.events.length;
  while (i > 0 && model.events[i - 1].ts_ms > ev.ts_ms) i--;   // a replayed event is older than live ones
  model.events.splice(i, 0, { ...ev, key });
  if (model.events.length > EVENTS_MAX) model.events.splice(0, model.events.length - EVENTS_MAX);
}

/** The same event's key whether it came over /ws/events or from GET /monitor/events: the
 * monitor's seq and ts_ms (seq alone restarts when a monitor loses its saved log); else what
 * the entry says (the gateway's watcher sends no seq, and is never replayed). */
function eventKey(source, ev) {
  if (Number.isInteger(source?.seq) && Number.isInteger(source?.ts_ms)) return `monitor:${source.seq}:${source.ts_ms}`;
  if (isWatcherEvent(source)) return `watcher:${source.node}:${source.state}:${source.ts_ms}`;
  return `${ev.ts_ms}|${ev.kind}|${ev.node}|${ev.text}`;
}

/** A node event of the gateway's own watcher (the monitor's carry kind "health"). */
function isWatcherEvent(msg) {
  return msg?.type === "node" && msg.kind === undefined && typeof msg.node === "string" && Number.isInteger(msg.ts_ms);
}

/** Whether a change of `name` from `before` at tsMs goes on the timeline: a change, and not a
 * first verdict -- one from "unknown" only when the node's entry before it ended there. */
function isShownChange(name, before, after, tsMs) {
  if (!before || before === after) return false;
  if (before !== "unknown") return true;
  for (let i = model.events.length - 1; i >= 0; i--) {
    const e = model.events[i];
    if (e.kind === "health" && e.node === name && e.ts_ms <= tsMs) return e.state === "unknown";
  }
  return false;
}

function healthEntry(name, before, after, reason, tsMs) {
  return { ts_ms: tsMs, kind: "health", node: name, state: after, text: `${name} ${before} → ${after}${reason ? `: ${reason}` : ""}` };
}

function alertEntry(alert) {
  return { ts_ms: alert.state === "resolved" ? alert.resolved_ms : (alert.fired_ms || alert.started_ms),
    kind: "alert", node: alert.subject, state: alert.state, text: `${alert.rule} ${alert.state}: ${alert.message}` };
}

function recoveryEntry(msg, tsMs) {
  return { ts_ms: tsMs, kind: "recovery", node: msg.node, state: msg.action || "",
    text: `${msg.node || ""} ${msg.action || "recovery"}${msg.reason ? `: ${msg.reason}` : ""}` };
}

/** Records in per second measured by the page (high watermark growth) while no rates come
 * from the monitor: the chart is never empty just because the monitor is not running. */
export function fallbackRecordsIn(tsMs, recordsPerS) {
  if (Date.now() - model.lastRatesMs < FALLBACK_AFTER_MS) return;
  model.rates = { ...model.rates, records_in_per_s: recordsPerS };
  pushRates(tsMs, { records_in_per_s: recordsPerS });
  changed();
}

function pushRates(tsMs, rates) {
  const s = model.series;
  const t = Math.floor(tsMs / 1000);
  if (s.t.length && t <= s.t[s.t.length - 1]) return;  // one point per second, in order
  s.t.push(t);
  for (const k of RATE_KEYS) s[k].push(rates[k] ?? null);
  if (s.t.length > SERIES_POINTS_MAX) for (const k of ["t", ...RATE_KEYS]) s[k].splice(0, s[k].length - SERIES_POINTS_MAX);
}

/** The alert an alert message describes (`prev`: what the model knew of it). */
function alertOf(a, tsMs, prev = undefined) {
  const [nameRule, nameSubject] = String(a.name || "").split("/");   // the monitor's name: "rule/subject"
  const rule = a.rule || nameRule || "alert";
  const subject = a.subject || nameSubject || a.node || "cluster";
  return {
    rule, subject, key: `${rule}|${subject}`, state: normAlertState(a.state), message: a.message || "",
    started_ms: a.started_ms || prev?.started_ms || tsMs,
    fired_ms: a.fired_ms ?? prev?.fired_ms ?? (normAlertState(a.state) === "firing" ? tsMs : null),
    resolved_ms: a.resolved_ms ?? (normAlertState(a.state) === "resolved" ? tsMs : null),
  };
}

function applyAlert(a, tsMs) {
  const prev = model.alerts.get(alertOf(a, tsMs).key);
  const alert = alertOf(a, tsMs, prev);
  model.alerts.set(alert.key, alert);
  if (model.alerts.size > ALERTS_MAX) model.alerts.delete(model.alerts.keys().next().value);
  if (!prev || prev.state !== alert.state) pushEvent(alertEntry(alert), a);
}

function normAlertState(s) {
  const k = String(s || "firing").toLowerCase();
  return k === "active" ? "firing" : k === "ok" || k === "inactive" ? "resolved" : k;
}

/** A node state from the gateway's watcher (no `kind`), which the monitor's view overrides. */
function watcherOverridden(msg, name) {
  if (msg.kind === "health") return false;
  const role = msg.role || model.nodes.get(name)?.role || roleOf(name);
  return role !== "monitor" && Date.now() - model.lastMonitorMs < MONITOR_SILENT_MS;
}

function applyStatus(st, tsMs) {
  if (Array.isArray(st.nodes) && st.nodes.length) model.lastMonitorMs = Date.now();
  if (st.cluster) model.cluster = { ...model.cluster, ...st.cluster };
  for (const n of st.nodes || []) {
    upsertNode(n.node || n.name, { role: n.role, state: n.state, reason: n.reason, pid: n.pid, host: n.host,
      port: n.port, restarts: n.restarts, since_ms: n.since_ms || undefined, metrics: n.metrics });
  }
  if (st.rates) {
    model.lastRatesMs = Date.now();
    model.rates = { ...st.rates };
    pushRates(st.checked_ms || tsMs, st.rates);
  }
}

/** Apply one message from /ws/events (or a REST answer of the same shape). */
export function apply(msg) {
  if (Array.isArray(msg)) { msg.forEach(apply); return; }
  if (!msg || typeof msg !== "object") return;
  const inner = msg.event || (msg.data && !Array.isArray(msg.data) && typeof msg.data === "object" ? msg.data : null);
  if (inner && typeof inner === "object" && !msg.cluster) { apply({ ...inner, type: inner.type || inner.kind || msg.type }); return; }
  // the monitor's status, however the gateway labels it: cluster facts and a list of nodes
  const type = msg.cluster && Array.isArray(msg.nodes) ? "status" : (msg.type || msg.kind || "");
  const ts = msg.ts_ms || msg.timestamp_ms || Date.now();
  model.lastMessageMs = Date.now();
  switch (type) {
    case "node":
    case "health": {
      const name = msg.node || msg.name;
      const before = model.nodes.get(name)?.state;
      if (msg.kind === "health") model.lastMonitorMs = Date.now();
      const state = watcherOverridden(msg, name) ? undefined : msg.state;
      upsertNode(name, { role: msg.role, state, reason: state === undefined ? undefined : msg.reason, pid: msg.pid, host: msg.host,
        port: msg.port, restarts: msg.restarts, metrics: msg.metrics });
      const after = model.nodes.get(name)?.state;
      if (isShownChange(name, before, after, ts)) pushEvent(healthEntry(name, before, after, msg.reason, ts), msg);
      break;
    }
    case "status":
      applyStatus(msg, ts);
      break;
    case "metrics": {
      const rates = msg.rates || Object.fromEntries(RATE_KEYS.filter((k) => k in msg).map((k) => [k, msg[k]]));
      if (Object.keys(rates).length) { model.lastRatesMs = Date.now(); model.rates = { ...model.rates, ...rates }; pushRates(ts, model.rates); }
      if (msg.cluster) model.cluster = { ...model.cluster, ...msg.cluster };
      for (const [name, m] of Object.entries(msg.nodes || {})) upsertNode(name, { metrics: m });
      break;
    }
    case "alert":
      applyAlert(msg, ts);
      break;
    case "recovery":
      pushEvent(recoveryEntry(msg, ts), msg);
      if (msg.action === "restarted" || msg.action === "restart") {
        const n = model.nodes.get(msg.node);
        if (n) n.restarts = (n.restarts || 0) + 1;
      }
      break;
    case "history":
      applyHistory(msg);
      break;
    default:
      return;  // unknown messages are ignored: a newer gateway may send more kinds
  }
  changed();
}

/**
 * Replay past events (the monitor's log or the gateway watcher's, oldest first, in the shapes
 * apply() takes) into the timeline only: nodes, alerts and restart counts are the live stream's
 * (its snapshot is newer). A health change is the event's own (`previous` → `state`); a first
 * verdict (from "unknown", or a watcher's event without `previous`) is none, as live.
 */
export function replay(events) {
  if (!Array.isArray(events)) return;
  for (const msg of events) {
    if (!msg || typeof msg !== "object" || !Number.isFinite(msg.ts_ms)) continue;
    const type = msg.type || msg.kind;
    if (((type === "node" || type === "health") && msg.kind === "health") || isWatcherEvent(msg)) {
      const before = normState(msg.previous);
      const after = normState(msg.state);
      if (msg.previous && isShownChange(msg.node, before, after, msg.ts_ms)) pushEvent(healthEntry(msg.node, before, after, msg.reason, msg.ts_ms), msg);
    } else if (type === "alert") {
      pushEvent(alertEntry(alertOf(msg, msg.ts_ms)), msg);
    } else if (type === "recovery") {
      pushEvent(recoveryEntry(msg, msg.ts_ms), msg);
    }
  }
  changed();
}

/** Fill the chart from the monitor's history {t: [wall ms], series: {key: [v]}}. */
export function applyHistory(h) {
  if (!h || !Array.isArray(h.t)) return;
  const points = h.t.map((ms, i) => [ms, Object.fromEntries(RATE_KEYS.map((k) => [k, h.series?.[k]?.[i] ?? null]))]);
  const fresh = emptySeries();
  const old = model.series;
  model.series = fresh;
  for (const [ms, rates] of points) pushRates(ms, rates);
  const lastT = fresh.t.length ? fresh.t[fresh.t.length - 1] : 0;
  old.t.forEach((t, i) => { if (t > lastT) pushRates(t * 1000, Object.fromEntries(RATE_KEYS.map((k) => [k, old[k][i]]))); });
  changed();
}

// -- routes the gateway may offer for the monitor (found in /openapi.json) -------------------

let routesPromise = null;
/** {history, alerts, events, watcher, status, metrics}: paths (GET, no path parameters except the cluster) or null. */
export function monitorRoutes() {
  if (!routesPromise) {
    routesPromise = get("/openapi.json").then((doc) => {
      const paths = Object.keys(doc.paths || {}).filter((p) => doc.paths[p].get);
      const find = (re) => paths.find((p) => re.test(p) && !/\{(?!cluster_id\})[^}]+\}/.test(p)) || null;
      return { history: find(/history/), alerts: find(/alerts$/), events: find(/^(?!\/gateway\/).*events$/),
        watcher: paths.includes("/gateway/events") ? "/gateway/events" : null,
        status: find(/(monitor|cluster)[^/]*\/(status|health)$|\/nodes$/), metrics: paths.includes("/metrics") ? "/metrics" : null };
    }).catch(() => ({ history: null, alerts: null, events: null, watcher: null, status: null, metrics: null }));
  }
  return routesPromise;
}

async function routePath(path) {
  if (!path.includes("{cluster_id}")) return path;
  return path.replace("{cluster_id}", encodeURIComponent(await clusterId()));
}

/** Load what REST offers once (history for the charts, alert and event history). */
export async function loadOnce() {
  const routes = await monitorRoutes();
  const jobs = [];
  if (routes.history) jobs.push(routePath(routes.history).then(get).then(applyHistory));
  if (routes.status) jobs.push(routePath(routes.status).then(get).then((s) => apply({ ...s, type: "status" })));
  if (routes.alerts) jobs.push(routePath(routes.alerts).then(get).then((r) => (r.alerts || r.data || r).forEach((a) => apply({ ...a, type: "alert" }))));
  if (routes.events) jobs.push(routePath(routes.events).then(get).then((r) => replay(r.events || r.data || r)));
  if (routes.watcher) jobs.push(get(routes.watcher).then((r) => replay(r.events)));   // merged by ts_ms, each once
  await Promise.allSettled(jobs);
}

/**
 * Open the session's /ws/events stream (once), or adopt the one whoami() kept open.
 * onAuth(who) hears the gateway's answer to the key on every (re)connection; onDenied(reason)
 * a refusal (a key that is no longer valid).
 */
export function start({ adopt = null, onAuth = () => {}, onDenied = () => {} } = {}) {
  if (socket) { if (adopt) adopt.ws.close(1000, "already streaming"); return; }
  socket = openSocket("/ws/events", {
    adopt,
    onMessage: apply,
    onAuth: (msg) => onAuth({ name: msg.key, roles: msg.roles || [] }),
    onState: (state, reason = "") => {
      model.connection = state;
      model.connectionReason = reason;
      changed();
      if (state === "denied") onDenied(reason);
    },
  });
  loadOnce().catch(() => {});
}

export function stop() {
  if (socket) socket.close();
  socket = null;
  model.nodes.clear();
  model.alerts.clear();
  model.events = [];
  model.cluster = {};
  model.rates = {};
  model.series = emptySeries();
  model.connection = "connecting";
  routesPromise = null;
}
