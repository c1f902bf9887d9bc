// Alerts and events: firing and resolved alerts with their times, and a timeline of health
// changes and recovery actions (restarts), live from /ws/events, after the monitor's event log
// (GET /monitor/events) that model.js replays on load, so a reload keeps it.

import { model, subscribe } from "../model.js";
import { badge, card, clear, fmtAgo, fmtTime, h, table } from "../ui.js";

export async function render(root, ctx) {
  const firingEl = h("div#alerts-firing");
  const resolvedEl = h("div#alerts-resolved");
  const timelineEl = h("div#events-timeline");
  const filter = h("select", { "aria-label": "Show events" }, [["all", "all events"], ["recovery", "recoveries (restarts)"], ["health", "health changes"], ["alert", "alerts"]]
    .map(([v, l]) => h("option", { value: v }, l)));
  clear(root, h("h1", {}, "Alerts and events"),
    card("Firing", firingEl), card("Resolved", resolvedEl),
    card("Timeline", h("div.toolbar", {}, filter), timelineEl));

  const cols = (resolved) => [
    { label: "State", cell: (a) => badge(a.state) },
    { label: "Rule", cell: (a) => h("strong", {}, a.rule) },
    { label: "Subject", cell: (a) => a.subject },
    { label: "Message", cell: (a) => a.message },
    { label: "Fired", cell: (a) => h("span.mono", { title: fmtAgo(a.fired_ms) }, fmtTime(a.fired_ms || a.started_ms)) },
    resolved ? { label: "Resolved", cell: (a) => h("span.mono", { title: fmtAgo(a.resolved_ms) }, fmtTime(a.resolved_ms)) } : null,
  ].filter(Boolean);

  function draw() {
    const alerts = [...model.alerts.values()];
    const active = alerts.filter((a) => a.state !== "resolved").sort((a, b) => (b.fired_ms || b.started_ms) - (a.fired_ms || a.started_ms));
    const resolved = alerts.filter((a) => a.state === "resolved").sort((a, b) => b.resolved_ms - a.resolved_ms);
    clear(firingEl, table(cols(false), active, { empty: "no alert is firing", rowCls: (a) => (a.state === "firing" ? "down" : "") }));
    clear(resolvedEl, table(cols(true), resolved, { empty: "no resolved alerts yet" }));
    const kind = filter.value;
    // newest first: model.events is in time order, those of one millisecond as they happened (a
    // restart's down and up): a sort by time kept them so, and "down" stood above "up"
    const events = model.events.filter((e) => kind === "all" || e.kind === kind).reverse();
    clear(timelineEl, events.length
      ? h("ol.timeline", {}, events.map((e) => h(`li.kind-${e.kind}.state-${String(e.state || "").replace(/[^\w-]/g, "")}`, {},
        h("time", { datetime: new Date(e.ts_ms).toISOString() }, fmtTime(e.ts_ms)), h("span.pill", {}, e.kind), " ", e.text)))
      : h("p.muted", {}, model.connection === "open" ? "No events yet." : `Live updates: ${model.connection}`));
  }
  filter.addEventListener("change", draw);
  ctx.cleanup.push(subscribe(draw));
  draw();
}
