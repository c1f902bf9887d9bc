// Live tail of a topic over /ws/consume (format=binary; the gateway's own throwaway group,
// auto-commit off, so a tail never moves anyone's offsets).
// The page keeps at most TAIL_ROWS_MAX rows; while paused, records wait in a buffer of at most
// PAUSED_BUFFER_MAX (older ones are dropped and counted), shown on resume.
// It says "live" only once the gateway sends {"ready": true}: the stream's consumer has joined
// its group and holds a position in every partition, so every record produced from then on
// arrives. Before that (the socket is open, the consumer still joins) it says "joining…", and
// again after {"ready": false} (a rebalance under way).

import { get, openSocket, qs } from "../api.js";
import { headersCell, keyCell, valueCell } from "../records.js";
import { card, clear, field, fmtTime, h } from "../ui.js";

export const TAIL_ROWS_MAX = 500;
export const PAUSED_BUFFER_MAX = 1000;
const JOINING = "joining…";

export async function render(root, ctx) {
  const topics = await get("/topics");
  if (!topics.length) { clear(root, h("h1", {}, "Live tail"), h("p.muted", {}, "No topics yet.")); return; }
  const topic = h("select#tail-topic", { name: "topic" }, topics.map((t) => h("option", { value: t, selected: t === ctx.query.topic }, t)));
  const from = h("select#tail-from", { name: "from" }, [["end", "new records only"], ["beginning", "from the beginning"]].map(([v, l]) => h("option", { value: v }, l)));
  const start = h("button#tail-start", { type: "submit" }, "Start");
  const pause = h("button.secondary#tail-pause", { type: "button", disabled: true }, "Pause");
  const stopBtn = h("button.secondary#tail-stop", { type: "button", disabled: true }, "Stop");
  const status = h("span.muted#tail-status", { role: "status" }, "stopped");
  const tbody = h("tbody#tail-rows");
  const list = h("div.table-wrap.tail-list", {}, h("table", {},
    h("thead", {}, h("tr", {}, ["Partition", "Offset", "Timestamp", "Key", "Headers", "Value"].map((l) => h("th", { scope: "col" }, l)))), tbody));

  let sock = null;
  let paused = false;
  let buffered = [];
  let dropped = 0;
  let received = 0;
  let state = "stopped";  // of the stream: "joining…" until the gateway says it is ready, then "live"

  function row(r) {
    return h("tr", { dataset: { offset: String(r.offset), partition: String(r.partition) } },
      h("td.num", {}, r.partition), h("td.num", {}, r.offset), h("td", {}, h("span.mono", {}, fmtTime(r.timestamp))),
      h("td", {}, keyCell(r.key)), h("td", {}, headersCell(r.headers)), h("td", {}, valueCell(r.value)));
  }

  function show(records) {
    const frag = document.createDocumentFragment();
    for (const r of records.slice(-TAIL_ROWS_MAX)) frag.prepend(row(r));
    tbody.prepend(frag);
    while (tbody.children.length > TAIL_ROWS_MAX) tbody.lastElementChild.remove();
  }

  function updateStatus(label = state) {
    status.textContent = `${label} · ${received} received` + (paused ? ` · paused, ${buffered.length} waiting` : "") +
      (dropped ? ` · ${dropped} dropped while paused` : "") + ` · showing at most ${TAIL_ROWS_MAX}`;
  }

  function setState(next) {
    state = next;
    updateStatus();
  }

  function onMessage(msg) {
    if (msg.ready !== undefined) { setState(msg.ready ? "live" : JOINING); return; }
    const records = Array.isArray(msg.records) ? msg.records : (msg.offset !== undefined ? [msg] : []);
    if (msg.error_code) { updateStatus(`error: ${msg.message}`); return; }
    received += records.length;
    if (paused) {
      buffered.push(...records);
      if (buffered.length > PAUSED_BUFFER_MAX) { dropped += buffered.length - PAUSED_BUFFER_MAX; buffered = buffered.slice(-PAUSED_BUFFER_MAX); }
    } else {
      show(records);
    }
    updateStatus();
  }

  function stop(label = "stopped") {
    if (sock) sock.close();
    sock = null;
    start.disabled = false;
    pause.disabled = true;
    stopBtn.disabled = true;
    paused = false;
    pause.textContent = "Pause";
    setState(label);
  }

  const form = h("form#tail-form", { on: { submit: (e) => {
    e.preventDefault();
    stop();
    tbody.replaceChildren();
    buffered = []; dropped = 0; received = 0;
    sock = openSocket(`/ws/consume${qs({ topic: topic.value, from: from.value, format: "binary", auto_commit: "false" })}`, {
      onMessage,
      onState: (s, reason) => {
        // a refusal (1008) is final: the stream stops, and says the gateway's reason
        if (s === "denied") stop(`refused: ${reason}`);
        else setState(s === "open" ? JOINING : `${s}${reason ? `: ${reason}` : ""}`);
      },
    });
    start.disabled = true;
    pause.disabled = false;
    stopBtn.disabled = false;
  } } }, h("div.form-grid", {}, field("Topic", topic), field("Start", from)),
  h("div.form-actions", {}, start, pause, stopBtn, status));

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) { show(buffered); buffered = []; }
    updateStatus();
  });
  stopBtn.addEventListener("click", () => stop());
  ctx.cleanup.push(() => stop());
  clear(root, h("h1", {}, "Live tail"), card(null, form), list,
    h("p.muted", {}, "Newest first. Each tail reads as its own throwaway consumer group that commits nothing."));
  if (ctx.query.topic) form.requestSubmit();
}
