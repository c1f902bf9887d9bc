// Topics: the list (partitions, replication factor, records held, records/s) and, for admins,
// create (the API's validation errors shown at the form) -- add partitions and delete are on
// the topic's page.

import { ApiError, post, v3 } from "../api.js";
import { highWatermarks, loadCluster, recordsHeld, recordsPerSecond } from "../cluster.js";
import { card, clear, field, fmtNum, fmtRate, h, refreshing, table, toast } from "../ui.js";

const REFRESH_MS = 5000;
const CONFIG_NAMES = ["retention.ms", "retention.bytes", "min.insync.replicas", "max.message.bytes", "cleanup.policy",
  "unclean.leader.election.enable"];

function createForm(onCreated) {
  const name = h("input", { name: "topic_name", required: true, autocomplete: "off", placeholder: "orders", maxlength: "249" });
  const partitions = h("input", { name: "partitions_count", type: "number", min: "1", max: "1000", placeholder: "cluster default" });
  const rf = h("input", { name: "replication_factor", type: "number", min: "1", max: "16", placeholder: "cluster default" });
  const configs = h("textarea", { name: "configs", rows: "2", placeholder: "retention.ms=604800000", class: "short" });
  const err = h("div.error#create-error", { role: "alert", hidden: true });
  const button = h("button", { type: "submit" }, "Create topic");
  const form = h("form#create-topic", { "aria-describedby": "create-error", on: { submit: async (e) => {
    e.preventDefault();
    err.hidden = true;
    for (const i of [name, partitions, rf, configs]) i.removeAttribute("aria-invalid");
    const body = { topic_name: name.value.trim() };
    if (partitions.value) body.partitions_count = Number(partitions.value);
    if (rf.value) body.replication_factor = Number(rf.value);
    const pairs = configs.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
    const bad = pairs.find((p) => !/^[\w.]+=.+$/.test(p));
    if (bad) {
      err.textContent = `configs: "${bad}" is not name=value`;
      err.hidden = false;
      configs.setAttribute("aria-invalid", "true");
      return;
    }
    if (pairs.length) body.configs = pairs.map((p) => ({ name: p.split("=")[0], value: p.slice(p.indexOf("=") + 1) }));
    button.disabled = true;
    try {
      await post(await v3("/topics"), body);
      toast(`Topic ${body.topic_name} created`);
      form.reset();
      onCreated(body.topic_name);
    } catch (ex) {
      err.textContent = ex instanceof ApiError && ex.errorCode ? `${ex.message} (${ex.errorCode})` : ex.message;
      err.hidden = false;
      const target = /partition/i.test(ex.message) ? partitions : /replication/i.test(ex.message) ? rf : /config/i.test(ex.message) ? configs : name;
      target.setAttribute("aria-invalid", "true");
      target.focus();
    } finally {
      button.disabled = false;
    }
  } } },
  h("div.form-grid", {},
    field("Name", name), field("Partitions", partitions), field("Replication factor", rf),
    field("Configs", configs, `name=value, one a line: ${CONFIG_NAMES.join(", ")}`)),
  err, h("div.form-actions", {}, button));
  return card("Create a topic", form);
}

export async function render(root, ctx) {
  const listEl = h("div#topics-list");
  const filter = h("input", { type: "search", placeholder: "filter topics", "aria-label": "Filter topics" });
  clear(root, h("div.page-head", {}, h("h1", {}, "Topics")),
    ctx.can("admin") ? createForm(() => refresh()) : null,
    h("div.toolbar", {}, filter), listEl);
  let cluster = null;
  let previous = null;   // {ms, hws: {topic: highWatermarks()}} for records/s
  const rates = {};

  function draw() {
    if (!cluster) return;
    const q = filter.value.trim().toLowerCase();
    const rows = cluster.topics.filter((t) => t.topic_name.toLowerCase().includes(q));
    clear(listEl, table([
      { label: "Topic", cell: (t) => h("a", { href: `#/topics/${encodeURIComponent(t.topic_name)}` }, t.topic_name) },
      { label: "Partitions", cls: "num", cell: (t) => t.partitions_count },
      { label: "Replication", cls: "num", cell: (t) => t.replication_factor },
      { label: "Under-replicated", cls: "num", cell: (t) => (t.partitions ? t.partitions.filter((p) => p.under_replicated).length : "—") },
      { label: "Records", cls: "num", cell: (t) => (t.partitions ? fmtNum(recordsHeld(t.partitions)) : "—") },
      { label: "Records/s", cls: "num", cell: (t) => (rates[t.topic_name] === undefined ? "—" : fmtRate(rates[t.topic_name])) },
      { label: "", cell: (t) => h("a", { href: `#/messages?topic=${encodeURIComponent(t.topic_name)}` }, "messages") },
    ], rows, { empty: q ? "no topic matches" : "no topics yet", rowCls: (t) => (t.partitions && t.partitions.some((p) => p.under_replicated) ? "under-replicated" : "") }));
  }

  async function refresh() {
    cluster = await loadCluster();
    const now = performance.now();
    const hws = {};
    for (const t of cluster.topics) if (t.partitions) hws[t.topic_name] = highWatermarks([t]);
    if (previous) {
      const dt = (now - previous.ms) / 1000;
      for (const [name, hw] of Object.entries(hws)) {
        if (previous.hws[name] !== undefined) rates[name] = recordsPerSecond(previous.hws[name], hw, dt);
      }
    }
    previous = { ms: now, hws };
    draw();
  }
  filter.addEventListener("input", draw);
  await refreshing(ctx, REFRESH_MS, refresh, listEl);
}
