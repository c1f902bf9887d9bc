// The gateway's REST and WebSocket API, as the dashboard uses it.
//
// The API key lives in sessionStorage (gone when the tab closes), travels as
// `Authorization: Bearer KEY` on REST calls and as the first message {"api_key": KEY} on a
// WebSocket -- never in a URL. Every error is an ApiError carrying the gateway's
// {error_code, message} body, so pages can show the API's own words.

const KEY_STORAGE = "loom.apiKey";
const REQUEST_TIMEOUT_MS = 15000;
export const RECONNECT_DELAY_MS_MAX = 10000;

export class ApiError extends Error {
  constructor(status, errorCode, message) {
    super(message);
    this.status = status;          // HTTP status, 0 for a network failure or timeout
    this.errorCode = errorCode;    // the gateway's status*100+n, or 0
  }
}

export const session = {
  key() { return sessionStorage.getItem(KEY_STORAGE); },
  setKey(key) { sessionStorage.setItem(KEY_STORAGE, key); },
  clear() { sessionStorage.removeItem(KEY_STORAGE); },
};

/** fetch from the gateway; returns the parsed JSON body (null for 204), or the text with
 * as="text". Throws ApiError. */
export async function api(method, path, body = undefined, contentType = "application/json", as = "json") {
  const headers = { "Accept": as === "text" ? "text/plain" : "application/json" };
  const key = session.key();
  if (key) headers["Authorization"] = `Bearer ${key}`;
  const init = { method, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 0, e.name === "TimeoutError" ? "the gateway did not answer in time" : "the gateway is not reachable");
  }
  const text = await resp.text();
  if (resp.ok && as === "text") return text;
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const message = data && data.message ? data.message : `HTTP ${resp.status}`;
    const error = new ApiError(resp.status, data && data.error_code ? data.error_code : 0, message);
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("loom:unauthorized"));
    throw error;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body, type) => api("POST", path, body, type);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** Encode query parameters (never the key). */
export function qs(params) {
  const parts = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

export const enc = encodeURIComponent;

let clusterIdPromise = null;
/** The cluster id for /v3 routes (asked once per login). */
export function clusterId() {
  if (!clusterIdPromise) {
    clusterIdPromise = get("/v3/clusters").then((r) => r.data[0].cluster_id)
      .catch((e) => { clusterIdPromise = null; throw e; });
  }
  return clusterIdPromise;
}
export function forgetCluster() { clusterIdPromise = null; }

/** `/v3/clusters/{id}` + suffix. */
export async function v3(suffix) {
  return `/v3/clusters/${enc(await clusterId())}${suffix}`;
}

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/**
 * One WebSocket to the gateway: sends the key first, hands every later JSON message to
 * onMessage, reports state changes ("connecting", "open", "closed", "denied") to onState.
 * With reconnect, a dropped connection is opened again with exponential backoff (capped);
 * a policy close (1008: bad key, missing role, bad request) is final. close() ends it.
 */
export function openSocket(path, { onMessage, onState = () => {}, onAuth = () => {}, reconnect = true, adopt = null }) {
  let ws = null;
  let stopped = false;
  let delayMs = 500;
  let timer = null;

  function receive(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg && msg.authenticated === true) { onAuth(msg); return; }
    onMessage(msg);
  }

  function connect() {
    if (adopt) {  // an authenticated socket handed over by whoami(): no second connection
      ws = adopt.ws;
      const pending = adopt.pending;
      adopt = null;
      ws.onmessage = (ev) => receive(ev.data);
      onState("open");
      for (const data of pending) receive(data);
    } else {
      onState("connecting");
      ws = new WebSocket(wsUrl(path));
      ws.onopen = () => {
        ws.send(JSON.stringify({ api_key: session.key() || "" }));
        delayMs = 500;
        onState("open");
      };
      ws.onmessage = (ev) => receive(ev.data);
    }
    ws.onerror = () => {};  // the close event that follows says what happened
    ws.onclose = (ev) => {
      ws = null;
      if (stopped) return;
      if (ev.code === 1008) {
        onState("denied", ev.reason || "refused by the gateway");
        return;
      }
      onState("closed", ev.reason || "");
      if (reconnect) {
        timer = setTimeout(connect, delayMs);
        delayMs = Math.min(delayMs * 2, RECONNECT_DELAY_MS_MAX);
      }
    };
  }
  connect();
  return {
    send(obj) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); },
    close() {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close(1000, "page closed");
    },
  };
}

/**
 * Check a key and learn its name and roles: the gateway answers a WebSocket's first message
 * with {"authenticated": true, "key": NAME, "roles": [...]}. /ws/events needs the read role;
 * its socket stays open and is handed over (`events`: {ws, pending}) for openSocket's `adopt`,
 * so the page never closes a stream the gateway is already pushing into. A key without the
 * read role is asked about on /ws/produce and /ws/consume (no topic given, so nothing is
 * produced or consumed: the gateway answers the key, then closes for the missing topic).
 * Resolves {name, roles, events}; rejects with an Error whose message says why.
 */
export async function whoami(key) {
  let lastReason = "";
  for (const path of ["/ws/events", "/ws/produce", "/ws/consume"]) {
    const keep = path === "/ws/events";
    const outcome = await new Promise((resolve) => {
      const ws = new WebSocket(wsUrl(path));
      const pending = [];
      let who = null;
      const timer = setTimeout(() => { ws.close(); resolve({ reason: "the gateway did not answer" }); }, 8000);
      ws.onopen = () => ws.send(JSON.stringify({ api_key: key }));
      ws.onmessage = (ev) => {
        if (who) { pending.push(ev.data); return; }
        let msg = null;
        try { msg = JSON.parse(ev.data); } catch { /* not for us */ }
        if (msg && msg.authenticated === true) {
          clearTimeout(timer);
          who = { name: msg.key, roles: msg.roles || [], events: keep ? { ws, pending } : null };
          resolve({ who });
        }
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!who) resolve({ reason: ev.reason || (ev.code === 1006 ? "the gateway is not reachable" : `closed (${ev.code})`) });
      };
    });
    if (outcome.who) return outcome.who;
    lastReason = outcome.reason;
    if (/invalid API key|not reachable|did not answer/.test(lastReason)) break;
  }
  throw new Error(lastReason || "the key was refused");
}
