// The dashboard's shell: login/logout, the hash router, the navigation and what the key's
// roles allow. Each page is a module exporting `render(root, ctx)`; ctx.cleanup collects what
// the page must stop (timers, sockets) when it is left.

import { forgetCluster, session, whoami } from "./api.js";
import * as model from "./model.js";
import { clear, errorBox, h, loading } from "./ui.js";

const PAGES = {
  overview: { module: "./pages/overview.js", role: "read", title: "Overview" },
  brokers: { module: "./pages/brokers.js", role: "read", title: "Brokers" },
  topics: { module: "./pages/topics.js", role: "read", title: "Topics" },
  topic: { module: "./pages/topic.js", role: "read", title: "Topic" },
  messages: { module: "./pages/messages.js", role: "read", title: "Messages" },
  produce: { module: "./pages/produce.js", role: "produce", title: "Produce" },
  tail: { module: "./pages/tail.js", role: "consume", title: "Live tail" },
  groups: { module: "./pages/groups.js", role: "read", title: "Consumer groups" },
  group: { module: "./pages/group.js", role: "read", title: "Consumer group" },
  alerts: { module: "./pages/alerts.js", role: "read", title: "Alerts" },
};
const WHO_STORAGE = "loom.who";

let who = null;         // {name, roles}
let cleanup = [];
let renderSeq = 0;

export function can(role) {
  if (!who) return false;
  return who.roles.includes("admin") || who.roles.includes(role);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  let name = parts[0] && parts[0] !== "login" ? parts[0] : "overview";   // logged in: #/login is the overview
  const params = {};
  if (name === "topic" || name === "group") name = "not-found";   // a detail page has its list's path: #/topics/NAME
  if (name === "topics" && parts[1]) { name = "topic"; params.topic = parts[1]; }
  if (name === "groups" && parts[1]) { name = "group"; params.group = parts[1]; }
  return { name, params, query };
}

function firstAllowedPage() {
  return Object.keys(PAGES).find((p) => !["topic", "group"].includes(p) && can(PAGES[p].role)) || null;
}

async function route() {
  const main = document.getElementById("main");
  for (const fn of cleanup.splice(0)) { try { fn(); } catch (e) { console.warn(e); } }
  if (!who) { renderLogin(main); return; }
  const { name, params, query } = parseHash();
  const page = PAGES[name];
  const seq = ++renderSeq;
  markNav(name);
  if (!page) { clear(main, h("h1", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: "#/overview" }, "Overview")); return; }
  if (!can(page.role)) {
    const other = firstAllowedPage();
    clear(main, h("h1", {}, page.title), h("p.muted", {}, `This key (${who.name}) has no ${page.role} role.`),
      other ? h("a", { href: `#/${other}` }, `Go to ${PAGES[other].title}`) : null);
    return;
  }
  document.title = `${page.title} · Loom`;
  clear(main, loading());
  try {
    const mod = await import(page.module);
    if (seq !== renderSeq) return;
    const root = h("div.page", { "data-page": name });
    clear(main, root);
    await mod.render(root, { params, query, can, cleanup, who, navigate });
  } catch (e) {
    if (seq !== renderSeq) return;
    clear(main, h("h1", {}, page.title), errorBox(e));
  }
}

export function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function markNav(name) {
  const active = { topic: "topics", group: "groups" }[name] || name;
  for (const a of document.querySelectorAll("#nav a")) {
    const on = a.getAttribute("href") === `#/${active}`;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

function applyRoles() {
  const header = document.querySelector(".topbar");
  header.hidden = !who;
  if (!who) return;
  for (const a of document.querySelectorAll("#nav a")) a.hidden = !can(a.dataset.role);
  document.getElementById("who-name").textContent = `${who.name} (${who.roles.join(", ")})`;
}

function renderLogin(main, message = "") {
  document.title = "Log in · Loom";
  applyRoles();
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "current-password",
    required: true, placeholder: "API key", "aria-describedby": "login-help" });
  const err = h("div.error", { role: "alert", hidden: !message }, message);
  const button = h("button", { type: "submit" }, "Log in");
  const form = h("form.login", { on: { submit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    err.hidden = true;
    try {
      const found = await whoami(input.value.trim());
      session.setKey(input.value.trim());
      loggedIn(found);
      const target = firstAllowedPage();
      if (!location.hash || location.hash === "#/login" || !can(PAGES[parseHash().name]?.role || "read")) location.hash = `#/${target}`;
      else route();
    } catch (ex) {
      err.textContent = `Login failed: ${ex.message}`;
      err.hidden = false;
      button.disabled = false;
      input.focus();
    }
  } } },
  h("img", { src: "/static/img/loom.svg", alt: "", width: 48, height: 48 }),
  h("h1", {}, "Loom dashboard"),
  h("label", { for: "api-key" }, "API key"), input,
  h("small#login-help.help", {}, "Kept in this tab's session storage only; make up prints the dev admin key (also in <data_dir>/admin.key)."),
  err, button);
  clear(main, h("div.login-wrap", {}, form));
  input.focus();
}

function loggedIn(found) {
  who = { name: found.name, roles: [...found.roles].sort() };
  sessionStorage.setItem(WHO_STORAGE, JSON.stringify(who));
  applyRoles();
  if (can("read")) {
    model.start({
      adopt: found.events || null,
      onAuth: (again) => {  // every (re)connection re-checks the key: roles may have changed
        if (again.roles.slice().sort().join() !== who?.roles.join()) { loggedIn(again); route(); }
      },
      onDenied: (reason) => {
        if (/invalid API key/.test(reason)) logout("The gateway no longer accepts this key: log in again.");
      },
    });
  } else if (found.events) {
    found.events.ws.close(1000, "no read role");
  }
}

export function logout(message = "") {
  session.clear();
  sessionStorage.removeItem(WHO_STORAGE);
  who = null;
  forgetCluster();
  model.stop();
  for (const fn of cleanup.splice(0)) { try { fn(); } catch (e) { console.warn(e); } }
  history.replaceState(null, "", "#/login");
  renderSeq++;  // a page still loading (an awaited import or fetch) must not draw over the login
  renderLogin(document.getElementById("main"), message);
}

function showConnection() {
  const el = document.getElementById("conn");
  const state = model.model.connection;
  el.className = `conn conn-${state}`;
  el.title = state === "open" ? "Live: connected to /ws/events" : `Live updates: ${state} ${model.model.connectionReason}`;
  el.setAttribute("aria-label", el.title);
}

function setupChrome() {
  document.getElementById("logout").addEventListener("click", () => logout());
  const toggle = document.querySelector(".menu-toggle");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.getElementById("nav").classList.toggle("open", open);
  });
  document.getElementById("nav").addEventListener("click", () => {
    toggle.setAttribute("aria-expanded", "false");
    document.getElementById("nav").classList.remove("open");
  });
  window.addEventListener("hashchange", () => { route(); document.getElementById("main").focus({ preventScroll: true }); });
  window.addEventListener("loom:unauthorized", () => { if (who) logout("The gateway no longer accepts this key: log in again."); });
  model.subscribe(showConnection);
}

async function boot() {
  setupChrome();
  const key = session.key();
  const saved = sessionStorage.getItem(WHO_STORAGE);
  if (key && saved) {
    // the events stream checks the key again as it connects (model.start's onAuth/onDenied)
    try { loggedIn(JSON.parse(saved)); } catch { session.clear(); }
  }
  route();
}

boot();
