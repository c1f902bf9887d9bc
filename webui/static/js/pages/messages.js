// Message browser: one partition or all, from the oldest, the newest, an offset or a time;
// pages forward and back; key/value substring filters over a bounded scan with a visible
// "scanned N records" count. Reads GET /topics/{t}/partitions/{p}/records (format=binary, so
// bytes arrive as stored) and .../offsets.

import { enc, get, qs, v3 } from "../api.js";
import { headersCell, keyCell, searchable, valueCell } from "../records.js";
import { card, clear, field, fmtNum, fmtTime, h, table } from "../ui.js";

export const SCAN_RECORDS_MAX = 10000;      // a filter looks at most this many records per page
const READ_COUNT_MAX = 500;                  // records per request (the gateway allows 1000)
const SEARCH_STEPS_MAX = 64;                 // binary search for a timestamp: at most 2^64 offsets
const PAGES_REMEMBERED_MAX = 1000;           // cursors kept for "previous page"

async function readAt(topic, p, offset, count) {
  const rs = await get(`/topics/${enc(topic)}/partitions/${p}/records${qs({ offset, count, format: "binary" })}`);
  return rs.filter((r) => r.offset >= offset);
}

/** {partition: {begin, end}}: log start offset and high watermark of every partition. */
async function allBounds(topic) {
  const parts = await get(await v3(`/topics/${enc(topic)}/partitions`));
  return Object.fromEntries(parts.data.map((p) => [p.partition_id, { begin: Math.max(0, p.log_start_offset), end: Math.max(0, p.high_watermark) }]));
}

/** First offset in [begin, end) whose timestamp is >= tsMs (end when none): binary search. */
async function offsetForTime(topic, p, b, tsMs) {
  let lo = b.begin, hi = b.end;
  for (let step = 0; lo < hi && step < SEARCH_STEPS_MAX; step++) {
    const mid = Math.floor((lo + hi) / 2);
    const [r] = await readAt(topic, p, mid, 1);
    if (!r) { hi = mid; continue; }
    if (r.timestamp < tsMs) lo = r.offset + 1; else hi = mid;
  }
  return lo;
}

/** What a page holds of partition p: offsets first..next-1 of its [begin, end), "empty" when it
 * holds no record at all ("p0 0–0 of [0, 0)" read as offset 0 shown), "none" past its end. */
export function rangeText(p, first, next, b) {
  if (b.end <= b.begin) return `p${p} empty`;
  if (next <= first) return `p${p} none from ${first} of [${b.begin}, ${b.end})`;
  return `p${p} ${first}–${next - 1} of [${b.begin}, ${b.end})`;
}

function controls(state, topics, go) {
  const topic = h("select#msg-topic", { name: "topic" }, topics.map((t) => h("option", { value: t, selected: t === state.topic }, t)));
  const partition = h("select#msg-partition", { name: "partition" });
  const start = h("select#msg-start", { name: "start" }, [["oldest", "oldest"], ["newest", "newest"], ["offset", "at offset"], ["time", "at time"]]
    .map(([v, l]) => h("option", { value: v, selected: v === state.start }, l)));
  const offset = h("input#msg-offset", { type: "number", min: "0", value: state.offset ?? "0", name: "offset" });
  const time = h("input#msg-time", { type: "datetime-local", step: "1", name: "time" });
  const size = h("select#msg-size", { name: "size" }, [20, 50, 100, 200].map((n) => h("option", { value: String(n), selected: n === state.size }, String(n))));
  const keyFilter = h("input#msg-key-filter", { type: "search", placeholder: "substring", name: "key" });
  const valueFilter = h("input#msg-value-filter", { type: "search", placeholder: "substring", name: "value" });
  const scan = h("select#msg-scan", { name: "scan" }, [1000, 5000, SCAN_RECORDS_MAX].map((n) => h("option", { value: String(n) }, fmtNum(n))));
  const offsetField = field("Offset", offset);
  const timeField = field("Time (local)", time);
  const sync = () => {
    offsetField.hidden = start.value !== "offset";
    timeField.hidden = start.value !== "time";
    time.required = start.value === "time";   // else an empty time silently meant "oldest"
  };
  start.addEventListener("change", sync);
  sync();
  async function fillPartitions() {
    const parts = await get(await v3(`/topics/${enc(topic.value)}/partitions`));
    clear(partition, h("option", { value: "all" }, "all partitions"),
      parts.data.map((p) => h("option", { value: String(p.partition_id), selected: String(p.partition_id) === String(state.partition) }, `partition ${p.partition_id}`)));
    return parts.data.length;
  }
  topic.addEventListener("change", () => { state.partition = "all"; fillPartitions(); });
  const form = h("form#msg-form", { on: { submit: (e) => {
    e.preventDefault();
    Object.assign(state, { topic: topic.value, partition: partition.value, start: start.value, offset: offset.value,
      timeMs: time.value ? new Date(time.value).getTime() : null, size: Number(size.value),
      keyFilter: keyFilter.value, valueFilter: valueFilter.value, scanMax: Number(scan.value) });
    go();
  } } }, h("div.form-grid", {}, field("Topic", topic), field("Partition", partition), field("Start", start), offsetField, timeField,
    field("Page size", size), field("Key contains", keyFilter), field("Value contains", valueFilter), field("Scan at most", scan)),
  h("div.form-actions", {}, h("button", { type: "submit" }, "Show records")));
  return { form, fillPartitions };
}

export async function render(root, ctx) {
  const topics = await get("/topics");
  const state = { topic: ctx.query.topic || topics[0], partition: ctx.query.partition ?? "all", start: ctx.query.offset !== undefined ? "offset" : "oldest",
    offset: ctx.query.offset, size: 50, keyFilter: "", valueFilter: "", scanMax: 1000 };
  if (!topics.length) { clear(root, h("h1", {}, "Messages"), h("p.muted", {}, "No topics yet.")); return; }
  const resultEl = h("div#msg-results");
  const info = h("p.muted#msg-info", { role: "status" });
  const prev = h("button.secondary#msg-prev", { type: "button", disabled: true }, "← Previous page");
  const next = h("button.secondary#msg-next", { type: "button", disabled: true }, "Next page →");
  let page = null;   // {parts: [p], first: {p: offset}, next: {p: offset}, b: {p: bounds}}

  async function load(cursors, b) {
    const parts = Object.keys(cursors).map(Number);
    const filtering = state.keyFilter || state.valueFilter;
    const per = parts.length > 1 ? Math.max(1, Math.ceil(state.size / parts.length)) : state.size;
    const nextCursors = { ...cursors };
    let scanned = 0;
    const shown = [];
    if (!filtering) {
      const got = await Promise.all(parts.map((p) => (cursors[p] < b[p].end ? readAt(state.topic, p, cursors[p], Math.min(per, READ_COUNT_MAX)) : [])));
      got.forEach((rs, i) => { shown.push(...rs); if (rs.length) nextCursors[parts[i]] = rs[rs.length - 1].offset + 1; });
      scanned = shown.length;
    } else {
      const k = state.keyFilter, v = state.valueFilter;
      for (const p of parts) {
        while (nextCursors[p] < b[p].end && scanned < state.scanMax && shown.length < state.size) {
          const rs = await readAt(state.topic, p, nextCursors[p], Math.min(READ_COUNT_MAX, state.scanMax - scanned));
          if (!rs.length) break;
          for (const r of rs) {
            scanned++;
            nextCursors[p] = r.offset + 1;
            const s = searchable(r);
            if ((!k || s.key.includes(k)) && (!v || s.value.includes(v))) shown.push(r);
            if (shown.length >= state.size || scanned >= state.scanMax) break;
          }
        }
      }
    }
    shown.sort((a, c) => a.timestamp - c.timestamp || a.partition - c.partition || a.offset - c.offset);
    page = { parts, first: cursors, next: nextCursors, b, scanned, per };
    draw(shown, filtering);
  }

  function draw(records, filtering) {
    const atEnd = page.parts.every((p) => page.next[p] >= page.b[p].end);
    const atStart = page.parts.every((p) => page.first[p] <= page.b[p].begin);
    prev.disabled = atStart;
    next.disabled = atEnd;
    const ranges = page.parts.map((p) => rangeText(p, page.first[p], page.next[p], page.b[p]));
    info.textContent = `${records.length} record${records.length === 1 ? "" : "s"} shown` + (filtering ? ` · scanned ${fmtNum(page.scanned)} records` : "") +
      ` · ${ranges.slice(0, 6).join(" · ")}${ranges.length > 6 ? " …" : ""}`;
    clear(resultEl, table([
      { label: "Partition", cls: "num", cell: (r) => r.partition },
      { label: "Offset", cls: "num", cell: (r) => r.offset },
      { label: "Timestamp", cell: (r) => h("span.mono", { title: String(r.timestamp) }, fmtTime(r.timestamp)) },
      { label: "Key", cell: (r) => keyCell(r.key) },
      { label: "Headers", cell: (r) => headersCell(r.headers) },
      { label: "Value", cell: (r) => valueCell(r.value) },
    ], records, { empty: filtering ? "no record matches in the scanned range" : "no records in this range" }));
  }

  async function go() {
    info.textContent = "loading…";
    visited.length = 0;
    try {
      const all = state.partition === "all";
      const parts = all ? [...partitionSelect.options].slice(1).map((o) => Number(o.value)) : [Number(state.partition)];
      const b = await allBounds(state.topic);
      const per = parts.length > 1 ? Math.max(1, Math.ceil(state.size / parts.length)) : state.size;
      const cursors = {};
      for (const p of parts) {
        if (state.start === "oldest") cursors[p] = b[p].begin;
        else if (state.start === "newest") cursors[p] = Math.max(b[p].begin, b[p].end - per);
        else if (state.start === "offset") cursors[p] = Math.min(Math.max(Number(state.offset) || 0, b[p].begin), b[p].end);
        else cursors[p] = state.timeMs ? await offsetForTime(state.topic, p, b[p], state.timeMs) : b[p].begin;
      }
      await load(cursors, b);
    } catch (e) {
      info.textContent = "";
      clear(resultEl, h("div.error", { role: "alert" }, e.message));
    }
  }

  // pages visited forward, so "previous" returns exactly (a filtered page may have scanned far);
  // past the first one visited, "previous" steps back a page size per partition
  const visited = [];
  async function step(forward) {
    const b = await allBounds(state.topic);     // records may have arrived since
    let c;
    if (forward) {
      visited.push(page.first);
      if (visited.length > PAGES_REMEMBERED_MAX) visited.shift();
      c = { ...page.next };
    } else {
      c = visited.pop();
      if (!c) {
        c = {};
        for (const p of page.parts) c[p] = Math.max(b[p].begin, page.first[p] - page.per);
      }
    }
    await load(c, b);
  }
  const onError = (e) => clear(resultEl, h("div.error", { role: "alert" }, e.message));
  prev.addEventListener("click", () => step(false).catch(onError));
  next.addEventListener("click", () => step(true).catch(onError));

  const { form, fillPartitions } = controls(state, topics, go);
  const partitionSelect = form.querySelector("#msg-partition");
  clear(root, h("h1", {}, "Messages"), card(null, form), h("div.toolbar", {}, prev, next, h("span.spacer"), info), resultEl);
  await fillPartitions();
  await go();
}
