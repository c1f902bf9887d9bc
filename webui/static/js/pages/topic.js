// One topic: its partition table (leader, replicas, ISR -- under-replicated rows marked --,
// log start offset, end offset, high watermark) and configs; for admins, add partitions and
// delete (the topic's name must be typed to confirm). A topic the gateway does not know (404)
// is said so, and not asked for again until the user navigates.

import { del, get, patch, v3 } from "../api.js";
import { partitionRecords, recordsHeld } from "../cluster.js";
import { badge, card, clear, every, field, fmtNum, h, modal, table, toast } from "../ui.js";

const REFRESH_MS = 3000;

function replicasCell(p) {
  return p.replicas.map((r) => h("span.pill", { title: r.is_in_sync ? "in sync" : "out of sync" },
    `${r.broker_id}${r.is_leader ? "★" : ""}${r.is_in_sync ? "" : " ✗"}`)).flatMap((x) => [x, " "]);
}

/** An offset, "—" when unknown (-1: the gateway did not hear from the partition's leader). */
function offsetCell(n) {
  return n < 0 ? h("span.muted", { title: "unknown: the partition's leader did not answer" }, "—") : fmtNum(n);
}

export function partitionTable(parts) {
  return table([
    { label: "Partition", cls: "num", cell: (p) => p.partition_id },
    { label: "Leader", cls: "num", cell: (p) => (p.leader ? p.leader.broker_id : badge("offline")) },
    { label: "Epoch", cls: "num", cell: (p) => p.leader_epoch },
    { label: "Replicas", cell: replicasCell },
    { label: "ISR", cell: (p) => h("span.mono", {}, `[${p.isr.join(", ")}]`) },
    { label: "State", cell: (p) => (!p.leader ? badge("offline") : p.under_replicated ? badge("degraded", "under-replicated") : badge("healthy", "in sync")) },
    { label: "Start offset", cls: "num", cell: (p) => offsetCell(p.log_start_offset) },
    { label: "End offset", cls: "num", cell: (p) => offsetCell(p.end_offset) },
    { label: "HW", cls: "num", cell: (p) => offsetCell(p.high_watermark) },
    { label: "Records", cls: "num", cell: (p) => offsetCell(partitionRecords(p) ?? -1) },
  ], parts, { rowCls: (p) => (!p.leader ? "offline" : p.under_replicated ? "under-replicated" : ""), empty: "no partitions" });
}

async function addPartitions(topic, current, done) {
  const value = await modal(`Add partitions to ${topic}`, (close) => {
    const input = h("input", { type: "number", min: String(current + 1), max: "1000", value: String(current + 1), required: true });
    const err = h("div.error", { role: "alert", hidden: true });
    return h("form", { on: { submit: async (e) => {
      e.preventDefault();
      try {
        await patch(await v3(`/topics/${encodeURIComponent(topic)}`), { partitions_count: Number(input.value) });
        close(Number(input.value));
      } catch (ex) { err.textContent = ex.message; err.hidden = false; }
    } } }, h("p", {}, `It has ${current}. Partitions can be added, never removed; keyed records may map to other partitions afterwards.`),
    field("New partition count", input), err,
    h("div.form-actions", {}, h("button", { type: "submit" }, "Add partitions"), h("button.secondary", { type: "button", on: { click: () => close(null) } }, "Cancel")));
  });
  if (value) { toast(`${topic} now has ${value} partitions`); done(); }
}

async function deleteTopic(topic, navigate) {
  const ok = await modal(`Delete topic ${topic}`, (close) => {
    const input = h("input", { type: "text", autocomplete: "off", "aria-label": "Type the topic name to confirm", id: "confirm-delete" });
    const button = h("button.danger", { type: "submit", disabled: true }, "Delete for ever");
    const err = h("div.error", { role: "alert", hidden: true });
    input.addEventListener("input", () => { button.disabled = input.value !== topic; });
    return h("form", { on: { submit: async (e) => {
      e.preventDefault();
      if (input.value !== topic) return;
      try { await del(await v3(`/topics/${encodeURIComponent(topic)}`)); close(true); } catch (ex) { err.textContent = ex.message; err.hidden = false; }
    } } }, h("p", {}, "Every record of every partition is deleted on every broker. This cannot be undone."),
    h("p", {}, "Type ", h("strong.mono", {}, topic), " to confirm:"), input, err,
    h("div.form-actions", {}, button, h("button.secondary", { type: "button", on: { click: () => close(false) } }, "Cancel")));
  });
  if (ok) { toast(`Topic ${topic} deleted`); navigate("#/topics"); }
}

export async function render(root, ctx) {
  const topic = ctx.params.topic;
  const base = await v3(`/topics/${encodeURIComponent(topic)}`);
  const partsEl = h("div#partitions");
  const configsEl = h("div#configs");
  const summary = h("p.muted");
  const actions = h("div.toolbar", {},
    h("a", { href: `#/messages?topic=${encodeURIComponent(topic)}` }, "Browse messages"),
    ctx.can("produce") ? h("a", { href: `#/produce?topic=${encodeURIComponent(topic)}` }, "Produce") : null,
    ctx.can("consume") ? h("a", { href: `#/tail?topic=${encodeURIComponent(topic)}` }, "Live tail") : null,
    h("span.spacer"));
  clear(root, h("div.page-head", {}, h("h1", {}, `Topic ${topic}`), h("a", { href: "#/topics" }, "← all topics")),
    summary, actions, card("Partitions", partsEl), card("Configs", configsEl));
  let count = 0;
  if (ctx.can("admin")) {
    actions.append(
      h("button.secondary#add-partitions", { type: "button", on: { click: () => addPartitions(topic, count, refresh) } }, "Add partitions"),
      h("button.danger#delete-topic", { type: "button", on: { click: () => deleteTopic(topic, ctx.navigate) } }, "Delete topic"));
  }

  let missing = false;   // the gateway said 404: asked no more until the user navigates
  let timer = null;

  async function refresh() {
    try {
      const [t, parts] = await Promise.all([get(base), get(`${base}/partitions`)]);
      count = t.partitions_count;
      const under = parts.data.filter((p) => p.under_replicated).length;
      const held = recordsHeld(parts.data);
      const unknown = parts.data.filter((p) => partitionRecords(p) === null).length;
      summary.textContent = `${t.partitions_count} partitions · replication factor ${t.replication_factor} · ${under} under-replicated · ` +
        (held === null ? `records unknown (the leader of ${unknown} partition${unknown === 1 ? "" : "s"} did not answer)` : `${fmtNum(held)} records`);
      clear(partsEl, partitionTable(parts.data));
    } catch (e) {
      clear(partsEl, h("div.error", { role: "alert" }, e.message));
      if (e.status === 404) {  // no such topic (or deleted meanwhile): nothing here to produce to, tail, grow or delete
        summary.textContent = "";
        clear(actions, h("a", { href: "#/topics" }, "← all topics"));
        clear(configsEl, h("p.muted", {}, "None: the topic does not exist."));
        missing = true;        // nor to ask for every 3 s (a 404 in the console each time); made again, it is there on the next visit
        if (timer !== null) clearInterval(timer);
      }
    }
  }
  await refresh();
  if (missing) return;
  try {
    const configs = await get(`${base}/configs`);
    clear(configsEl, table([{ label: "Name", cell: (c) => h("span.mono", {}, c.name) }, { label: "Value", cell: (c) => h("span.mono", {}, c.value ?? "null") }],
      configs.data, { empty: "cluster defaults" }));
  } catch (e) { clear(configsEl, h("div.error", { role: "alert" }, e.message)); }
  timer = every(REFRESH_MS, refresh, ctx.cleanup);
}
