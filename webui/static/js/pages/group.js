// One consumer group: state, members with their assignments, per partition the committed
// offset, log end offset and lag, the total lag (refreshed live); for admins, reset offsets
// (earliest, latest, to an offset, to a time, shift) with a dry-run preview before executing.
// A group the gateway does not know (404) is said so, and not asked for again until the user
// navigates.

import { get, post, v3 } from "../api.js";
import { badge, card, clear, every, field, fmtNum, h, stat, table, toast } from "../ui.js";

const REFRESH_MS = 2000;

// The rows of a reset-offsets answer: per partition its current and new offset (a current
// offset of -1: none committed, shown as absent).
export function resetPlanTable(rows) {
  return table([
    { label: "Partition", cls: "num", cell: (x) => `${x.topic_name}-${x.partition_id}` },
    { label: "Current", cls: "num", cell: (x) => (x.current_offset < 0 ? "—" : fmtNum(x.current_offset)) },
    { label: "New", cls: "num", cell: (x) => fmtNum(x.new_offset) },
  ], rows);
}

function resetForm(group, base, topics, onDone) {
  const topic = h("select#reset-topic", { name: "topic" }, topics.map((t) => h("option", { value: t }, t)));
  const to = h("select#reset-to", { name: "to" }, [["earliest", "earliest"], ["latest", "latest"], ["offset", "to offset"], ["timestamp", "to time"], ["shift", "shift by"]]
    .map(([v, l]) => h("option", { value: v }, l)));
  const offset = h("input#reset-offset", { type: "number", min: "0", value: "0" });
  const time = h("input#reset-time", { type: "datetime-local", step: "1" });
  const shift = h("input#reset-shift", { type: "number", value: "-100" });
  const fields = { offset: field("Offset", offset), timestamp: field("Time (local)", time), shift: field("Shift by (records)", shift) };
  const sync = () => { for (const [k, f] of Object.entries(fields)) f.hidden = to.value !== k; };
  to.addEventListener("change", sync);
  sync();
  const preview = h("div#reset-preview", { "aria-live": "polite" });
  const err = h("div.error", { role: "alert", hidden: true });
  const execute = h("button.danger#reset-execute", { type: "button", disabled: true }, "Execute reset");

  function body(exec) {
    const b = { topic_name: topic.value, to: to.value, execute: exec };
    if (to.value === "offset") b.offset = Number(offset.value);
    if (to.value === "timestamp") b.timestamp_ms = new Date(time.value).getTime();
    if (to.value === "shift") b.shift_by = Number(shift.value);
    return b;
  }
  async function run(exec) {
    err.hidden = true;
    time.removeAttribute("aria-invalid");
    if (to.value === "timestamp" && !time.value) {
      // no default: "now" would be another instant at Execute than at Preview
      err.textContent = "Choose the time to reset to.";
      err.hidden = false;
      time.setAttribute("aria-invalid", "true");
      time.focus();
      execute.disabled = true;
      clear(preview);
      return;
    }
    try {
      const r = await post(`${base}/reset-offsets`, body(exec));
      clear(preview, h("p", {}, r.executed ? h("strong", {}, "Executed:") : "Dry run — nothing changed yet:"),
        resetPlanTable(r.data));
      execute.disabled = r.executed;
      if (r.executed) { toast(`Offsets of ${group} reset`); onDone(); }
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      execute.disabled = true;
    }
  }
  for (const i of [topic, to, offset, time, shift]) i.addEventListener("change", () => { execute.disabled = true; clear(preview); });
  execute.addEventListener("click", () => run(true));
  const form = h("form#reset-form", { on: { submit: (e) => { e.preventDefault(); run(false); } } },
    h("div.form-grid", {}, field("Topic", topic), field("Reset to", to), fields.offset, fields.timestamp, fields.shift),
    h("p.help", {}, "Preview first; executing needs a group with no active members."),
    err, h("div.form-actions", {}, h("button", { type: "submit" }, "Preview (dry run)"), execute), preview);
  return card("Reset offsets", form);
}

export async function render(root, ctx) {
  const group = ctx.params.group;
  const base = await v3(`/consumer-groups/${encodeURIComponent(group)}`);
  const statsEl = h("div.stats#group-stats");
  const membersEl = h("div#group-members");
  const lagsEl = h("div#group-lags");
  clear(root, h("div.page-head", {}, h("h1", {}, `Consumer group ${group}`), h("a", { href: "#/groups" }, "← all groups")),
    statsEl, card("Lag per partition", lagsEl), card("Members", membersEl));
  let resetShown = false;
  let missing = false;   // the gateway said 404: asked no more until the user navigates
  let timer = null;

  async function refresh() {
    try {
      const [g, lags] = await Promise.all([get(base), get(`${base}/lags`)]);
      const total = lags.data.reduce((s, r) => s + (r.lag ?? 0), 0);
      clear(statsEl, stat("state", badge(g.state)), stat("members", g.members_count ?? (g.members || []).length),
        stat("generation", g.generation ?? "—"), stat("total lag", h("span#total-lag", { "data-lag": String(total) }, fmtNum(total)), total ? "warn" : "ok"));
      clear(lagsEl, table([
        { label: "Topic", cell: (r) => h("a", { href: `#/topics/${encodeURIComponent(r.topic_name)}` }, r.topic_name) },
        { label: "Partition", cls: "num", cell: (r) => r.partition_id },
        { label: "Committed", cls: "num", cell: (r) => (r.current_offset < 0 ? "none" : fmtNum(r.current_offset)) },
        { label: "Log end", cls: "num", cell: (r) => fmtNum(r.log_end_offset) },
        { label: "Lag", cls: "num", cell: (r) => (r.lag === null ? "—" : fmtNum(r.lag)) },
        { label: "Consumer", cell: (r) => h("span.mono", {}, r.consumer_id || "—") },
      ], lags.data.sort((a, b) => a.topic_name.localeCompare(b.topic_name) || a.partition_id - b.partition_id), { empty: "no committed offsets" }));
      clear(membersEl, table([
        { label: "Member", cell: (m) => h("span.mono", {}, m.consumer_id) },
        { label: "Client", cell: (m) => m.client_id || "—" },
        { label: "Host", cell: (m) => m.host || "—" },
        { label: "Assignment", cell: (m) => (m.assignments.length ? m.assignments.map((a) => h("span.pill", {}, `${a.topic_name}-${a.partition_id}`)).flatMap((x) => [x, " "]) : h("span.muted", {}, "none")) },
      ], g.members || [], { empty: "no active members" }));
      if (ctx.can("admin") && !resetShown) {
        resetShown = true;
        const topics = [...new Set(lags.data.map((r) => r.topic_name))];
        const all = topics.length ? topics : await get("/topics");
        root.append(resetForm(group, base, all, refresh));
      }
    } catch (e) {
      clear(lagsEl, h("div.error", { role: "alert" }, e.message));
      if (e.status === 404) {
        // no such group (a typo, or deleted meanwhile), said as the topic page says a missing
        // topic, and not asked for again (it was, every 2 s: a 404 in the console each time);
        // a group made later is there on the next visit
        missing = true;
        if (timer !== null) clearInterval(timer);
        clear(statsEl);
        clear(membersEl, h("p.muted", {}, `None: the group ${group} does not exist.`));
        root.querySelector("#reset-form")?.closest("section.card")?.remove();   // nothing to reset
      }
    }
  }
  await refresh();
  if (!missing) timer = every(REFRESH_MS, refresh, ctx.cleanup);
}
