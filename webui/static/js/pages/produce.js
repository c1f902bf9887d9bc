// Produce form: key, value, headers, optional partition -> the partition and offset the
// record got. Sent in the binary embedded format, so the value is stored exactly as typed.

import { enc, get, post, qs } from "../api.js";
import { textToB64 } from "../records.js";
import { card, clear, field, h, table } from "../ui.js";

const BINARY = "application/vnd.kafka.binary.v2+json";
export const HEADERS_MAX = 20;
const RESULTS_MAX = 20;

function headerRow(list) {
  const name = h("input", { placeholder: "name", "aria-label": "Header name", class: "header-name" });
  const value = h("input", { placeholder: "value", "aria-label": "Header value", class: "header-value" });
  const row = h("div.header-row", {}, name, value,
    h("button.secondary", { type: "button", "aria-label": "Remove header", on: { click: () => row.remove() } }, "✕"));
  list.append(row);
  name.focus();
}

export async function render(root, ctx) {
  const topics = await get("/topics");
  if (!topics.length) { clear(root, h("h1", {}, "Produce"), h("p.muted", {}, "No topics yet: create one first.")); return; }
  const topic = h("select#produce-topic", { name: "topic" }, topics.map((t) => h("option", { value: t, selected: t === ctx.query.topic }, t)));
  const partition = h("input#produce-partition", { type: "number", min: "0", placeholder: "by key (or sticky)", name: "partition" });
  const acks = h("select#produce-acks", { name: "acks" }, ["all", "1", "0"].map((a) => h("option", { value: a }, a)));
  const key = h("input#produce-key", { name: "key", autocomplete: "off", placeholder: "none" });
  const value = h("textarea#produce-value", { name: "value", placeholder: '{"hello": "world"}', rows: "6" });
  const headers = h("div#produce-headers");
  const err = h("div.error#produce-error", { role: "alert", hidden: true });
  const resultEl = h("div#produce-result", { role: "status", "aria-live": "polite" });
  const history = [];
  const historyEl = h("div", {}, h("p.muted", {}, "Nothing produced from this page yet."));
  const button = h("button", { type: "submit" }, "Produce");

  const form = h("form#produce-form", { on: { submit: async (e) => {
    e.preventDefault();
    err.hidden = true;
    clear(resultEl);  // the last record's "Written to ..." is not this one's answer
    const hs = [...headers.querySelectorAll(".header-row")].map((r) => ({ name: r.querySelector(".header-name").value.trim(), value: r.querySelector(".header-value").value }))
      .filter((x) => x.name);
    const record = { value: textToB64(value.value) };
    if (key.value !== "") record.key = textToB64(key.value);
    if (hs.length) record.headers = hs.map((x) => ({ name: x.name, value: textToB64(x.value) }));
    const path = partition.value !== "" ? `/topics/${enc(topic.value)}/partitions/${Number(partition.value)}` : `/topics/${enc(topic.value)}`;
    button.disabled = true;
    try {
      const r = await post(`${path}${qs({ acks: acks.value })}`, { records: [record] }, BINARY);
      const o = r.offsets[0];
      if (o.error) throw new Error(`${o.error} (error_code ${o.error_code})`);
      clear(resultEl, h("div.success#produce-ok", {}, "Written to ", h("strong", {}, topic.value), " partition ",
        h("strong#produced-partition", {}, String(o.partition)), " at offset ", h("strong#produced-offset", {}, String(o.offset)), " · ",
        h("a", { href: `#/messages?topic=${enc(topic.value)}&partition=${o.partition}&offset=${o.offset}` }, "see it in the browser")));
      history.unshift({ topic: topic.value, partition: o.partition, offset: o.offset, key: key.value, at: new Date() });
      history.splice(RESULTS_MAX);
      clear(historyEl, table([
        { label: "Time", cell: (x) => x.at.toTimeString().slice(0, 8) },
        { label: "Topic", cell: (x) => x.topic },
        { label: "Partition", cls: "num", cell: (x) => x.partition },
        { label: "Offset", cls: "num", cell: (x) => x.offset },
        { label: "Key", cell: (x) => x.key || "—" },
      ], history));
    } catch (ex) {
      // no answer (status 0: the connection dropped, or the page's timeout): the request may
      // have reached the gateway, and the record the log -- producing it again may store it twice
      err.textContent = ex.status === 0
        ? `${ex.message}: the record may have been written (look for it in the message browser before producing it again)`
        : ex.message;
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  } } },
  h("div.form-grid", {}, field("Topic", topic), field("Partition", partition, "empty: chosen from the key"), field("Acks", acks), field("Key", key, "empty: no key")),
  field("Value", value, "stored as typed (UTF-8)"),
  h("h3", {}, "Headers"), headers,
  h("button.secondary#add-header", { type: "button", on: { click: () => { if (headers.children.length < HEADERS_MAX) headerRow(headers); } } }, "+ header"),
  err, h("div.form-actions", {}, button));
  clear(root, h("h1", {}, "Produce"), card(null, form), resultEl, card("This session's records", historyEl));
}
