// Showing record keys, values and headers. The browser asks the gateway for format=binary
// (base64), so the bytes arrive exactly as stored; here they become pretty JSON when they
// parse as JSON, text when they are UTF-8, hex otherwise. Long values are folded.

import { h } from "./ui.js";

export const FOLD_CHARS = 400;        // longer values are folded behind "show all"
const HEX_BYTES_MAX = 4096;           // hex shows at most this many bytes

export function b64ToBytes(b64) {
  if (b64 === null || b64 === undefined) return null;
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function textToB64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** {kind: "null"|"json"|"text"|"hex", text, raw} for a base64 value. */
export function decode(b64) {
  const bytes = b64ToBytes(b64);
  if (bytes === null) return { kind: "null", text: "null", raw: "" };
  let text;
  try { text = utf8.decode(bytes); } catch {
    const shown = bytes.subarray(0, HEX_BYTES_MAX);
    let hex = Array.from(shown, (b) => b.toString(16).padStart(2, "0")).join(" ");
    if (bytes.length > HEX_BYTES_MAX) hex += ` … (${bytes.length} bytes)`;
    return { kind: "hex", text: hex, raw: hex };
  }
  const trimmed = text.trim();
  if (trimmed && "{[\"-0123456789tfn".includes(trimmed[0])) {
    try {
      const parsed = JSON.parse(trimmed);
      if (typeof parsed === "object" && parsed !== null) return { kind: "json", text: JSON.stringify(parsed, null, 2), raw: text };
    } catch { /* not JSON */ }
  }
  return { kind: "text", text, raw: text };
}

/** A value cell: the decoded text, folded when long, with its kind noted. */
export function valueCell(b64) {
  const d = decode(b64);
  if (d.kind === "null") return h("span.muted", {}, "null");
  const kind = h("span.kind", {}, d.kind);
  if (d.text.length <= FOLD_CHARS) return h("div", {}, h("pre.record-value", {}, d.text), kind);
  return h("div", {}, h("pre.record-value", {}, `${d.text.slice(0, FOLD_CHARS)}…`),
    h("details.fold", {}, h("summary", {}, `show all ${d.text.length} characters`), h("pre.record-value", {}, d.text)), kind);
}

/** A key cell: "—" for none (as missing headers), `""` for an empty key (bytes of length 0). */
export function keyCell(b64) {
  const d = decode(b64);
  if (d.kind === "null") return h("span.muted", { title: "no key" }, "—");
  if (d.text === "") return h("span.muted.mono", { title: "an empty key" }, '""');
  return h("span.mono", {}, d.text.length > 80 ? `${d.text.slice(0, 80)}…` : d.text);
}

export function headersCell(headers) {
  if (!headers || !headers.length) return h("span.muted", {}, "—");
  return h("ul.headers-list", {}, headers.map((x) => h("li", {}, `${x.name}: ${decode(x.value).text}`)));
}

/** Text of a record's key and value, for substring filters. */
export function searchable(r) {
  return { key: decode(r.key).raw, value: decode(r.value).raw };
}
