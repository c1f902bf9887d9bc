// Consumer groups: state, members and total lag of each (refreshed every few seconds).

import { get, v3 } from "../api.js";
import { mapLimit } from "../cluster.js";
import { badge, clear, fmtNum, h, refreshing, table } from "../ui.js";

const REFRESH_MS = 3000;
const SUMMARIES_MAX = 100;   // lag summaries asked for per refresh

export async function render(root, ctx) {
  const listEl = h("div#groups-list");
  const filter = h("input", { type: "search", placeholder: "filter groups", "aria-label": "Filter groups" });
  clear(root, h("h1", {}, "Consumer groups"), h("div.toolbar", {}, filter), listEl);
  let groups = [];

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const rows = groups.filter((g) => g.consumer_group_id.toLowerCase().includes(q));
    clear(listEl, table([
      { label: "Group", cell: (g) => h("a", { href: `#/groups/${encodeURIComponent(g.consumer_group_id)}` }, g.consumer_group_id) },
      { label: "State", cell: (g) => badge(g.state) },
      { label: "Members", cls: "num", cell: (g) => g.members_count ?? "—" },
      { label: "Assignor", cell: (g) => g.assignor || "—" },
      { label: "Total lag", cls: "num", cell: (g) => (g.summary ? fmtNum(g.summary.total_lag) : "—") },
      { label: "Largest lag", cell: (g) => (g.summary && g.summary.max_lag ? `${fmtNum(g.summary.max_lag)} (${g.summary.max_lag_topic_name}-${g.summary.max_lag_partition_id})` : "—") },
    ], rows, { empty: q ? "no group matches" : "no consumer groups yet" }));
  }

  async function refresh() {
    const base = await v3("/consumer-groups");
    const r = await get(base);
    const summaries = await mapLimit(r.data.slice(0, SUMMARIES_MAX), 6,
      (g) => get(`${base}/${encodeURIComponent(g.consumer_group_id)}/lag-summary`));
    groups = r.data.map((g, i) => ({ ...g, summary: summaries[i] && summaries[i].ok ? summaries[i].value : null }))
      .sort((a, b) => a.consumer_group_id.localeCompare(b.consumer_group_id));
    draw();
  }
  filter.addEventListener("input", draw);
  await refreshing(ctx, REFRESH_MS, refresh, listEl);
}
