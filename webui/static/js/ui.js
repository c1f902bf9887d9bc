// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so record keys and
// values from the cluster cannot inject markup.

/** h("tag.class#id", {attrs, on: {event: fn}}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const m = spec.match(/^([a-z0-9]+)((?:[.#][\w-]+)*)$/i);
  const el = document.createElement(m ? m[1] : spec);
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: columns [{label, cell(row) -> node|text, cls}] over rows; rowCls(row) marks rows. */
export function table(columns, rows, { rowCls = () => "", empty = "nothing here yet", caption = null } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.cls || "" }, c.label)));
  const body = rows.length
    ? rows.map((r) => h("tr", { class: rowCls(r) || "" }, columns.map((c) => h("td", { class: c.cls || "" }, c.cell(r)))))
    : [h("tr", {}, h("td.empty", { colspan: String(columns.length) }, empty))];
  return h("div.table-wrap", {}, h("table", {}, caption ? h("caption", {}, caption) : null,
    h("thead", {}, head), h("tbody", {}, body)));
}

export function badge(state, text = state) {
  return h(`span.badge.state-${String(state).replace(/[^\w-]/g, "")}`, {}, text);
}

export function card(title, ...body) {
  return h("section.card", {}, title ? h("h2", {}, title) : null, ...body);
}

export function stat(label, value, cls = "") {
  return h(`div.stat${cls ? "." + cls : ""}`, {}, h("div.stat-value", {}, value), h("div.stat-label", {}, label));
}

export function errorBox(error) {
  return h("div.error", { role: "alert" }, error && error.message ? error.message : String(error));
}

export function loading(text = "loading…") {
  return h("p.muted", { "aria-busy": "true" }, text);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${UNITS[i]}`;
}

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function fmtRate(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(n < 10 ? 1 : 0);
}

export function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${d.toISOString().slice(0, 10)} ${d.toTimeString().slice(0, 8)}`;
}

export function fmtAgo(ms) {
  if (!ms) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function fmtPercent(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "—";
  return `${(ratio * 100).toFixed(1)}%`;
}

let toastTimer = null;
/** A short message at the bottom of the screen (announced to screen readers). */
export function toast(text, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = `toast show toast-${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, 4000);
}

/** A labelled form field: field("Partitions", h("input", …), "help text"). */
export function field(label, input, help = null) {
  if (!input.id) input.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return h("div.field", {}, h("label", { for: input.id }, label), input,
    help ? h("small.help", {}, help) : null);
}

/** A modal dialog; resolves with the value the body's `done(value)` is called with (null on cancel). */
export function modal(title, build) {
  return new Promise((resolve) => {
    const dlg = h("dialog.modal", { "aria-label": title });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); done(null); });
    dlg.append(h("h2", {}, title), build(done));
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector("input, select, textarea, button");
    if (first) first.focus();
  });
}

/** A page-scoped interval, stopped when the page is left (see app.js: page.cleanup). */
export function every(ms, fn, cleanup) {
  const id = setInterval(fn, ms);
  cleanup.push(() => clearInterval(id));
  return id;
}

/** Run load() now and every `ms` while the page is open; a failure shows in `errorEl`. */
export async function refreshing(ctx, ms, load, errorEl) {
  const run = async () => {
    try { await load(); } catch (e) { clear(errorEl, errorBox(e)); }
  };
  await run();
  every(ms, run, ctx.cleanup);
}
