// The page: hash router, session, live connection, theme and keyboard navigation.

import { currentSession, loadSession } from "./api.js";
import { h, replace } from "./dom.js";
import { Live } from "./live.js";
import * as views from "./views.js";

const ROUTES = { "": views.dashboard, worker: views.worker, tasks: views.tasks, task: views.task,
  broker: views.broker, charts: views.charts, events: views.events };
const NAV = { "": "dashboard", worker: "dashboard", tasks: "tasks", task: "tasks", broker: "broker",
  charts: "charts", events: "events" };

const main = document.getElementById("main");
let current = null;
let live = null;

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, query = ""] = raw.split("?");
  const parts = pathPart.split("/").map((p) => decodeURIComponent(p));
  return { name: parts[0] || "", parts, params: new URLSearchParams(query) };
}

function route() {
  const r = parseRoute();
  const view = ROUTES[r.name];
  if (current && current.destroy) current.destroy();
  current = null;
  selected = -1;
  for (const a of document.querySelectorAll(".nav a")) {
    a.classList.toggle("active", a.dataset.view === NAV[r.name]);
    if (a.dataset.view === NAV[r.name]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!view) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  current = view(main, r, { Live });
  document.title = `aiocelerymon · ${NAV[r.name] || "dashboard"}`;
}

function setConn(status) {
  const el = document.getElementById("conn");
  el.textContent = status;
  el.className = `conn ${status}`;
  document.body.dataset.live = status;
}

// -- theme --------------------------------------------------------------------------------

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try { localStorage.setItem("aiocelerymon-theme", theme); } catch { /* private mode */ }
}

function toggleTheme() {
  applyTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
  route(); // charts read their colours from the theme
}

// -- keyboard -----------------------------------------------------------------------------

let selected = -1;
let pendingG = false;

function rows() {
  return [...main.querySelectorAll("table.nav-rows tbody tr[data-href]")];
}

function select(delta) {
  const list = rows();
  if (!list.length) return;
  selected = Math.max(0, Math.min(list.length - 1, selected + delta));
  list.forEach((tr, i) => tr.classList.toggle("selected", i === selected));
  list[selected].scrollIntoView({ block: "nearest" });
  const a = list[selected].querySelector("a");
  if (a) a.focus({ preventScroll: true });
}

function onKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const tag = (event.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) return;
  const key = event.key;
  if (pendingG) {
    pendingG = false;
    const target = { d: "#/", t: "#/tasks", b: "#/broker", c: "#/charts", e: "#/events" }[key];
    if (target) { location.hash = target; event.preventDefault(); }
    return;
  }
  if (key === "g") { pendingG = true; setTimeout(() => { pendingG = false; }, 1500); return; }
  if (key === "/") {
    event.preventDefault();
    const search = document.getElementById("task-search");
    if (search) search.focus();
    else location.hash = "#/tasks";
    return;
  }
  if (key === "j" || key === "ArrowDown" && event.shiftKey) { select(1); event.preventDefault(); return; }
  if (key === "k") { select(-1); event.preventDefault(); return; }
  if (key === "Enter" && selected >= 0) {
    const list = rows();
    if (list[selected]) { location.hash = list[selected].dataset.href; event.preventDefault(); }
    return;
  }
  if (key === "t") { toggleTheme(); return; }
  if (key === "?") { document.getElementById("help").showModal(); return; }
  if (key === "]" || key === "[") {
    if (current && current.tabs) {
      const i = current.tabIndex + (key === "]" ? 1 : -1);
      if (i >= 0 && i < current.tabs.length) location.hash = current.tabs[i];
    } else if (current) {
      const fn = key === "]" ? current.next : current.prev;
      if (fn) fn();
    }
  }
}

// -- start --------------------------------------------------------------------------------

async function start() {
  let theme = "dark";
  try { theme = localStorage.getItem("aiocelerymon-theme") || theme; } catch { /* private mode */ }
  applyTheme(theme);
  document.getElementById("theme").addEventListener("click", toggleTheme);
  document.addEventListener("keydown", onKey);
  const session = await loadSession();
  const who = document.getElementById("who");
  replace(who, h("span", { class: "user", id: "user" }, session.user || "anonymous"), " ",
    h("span", { class: `badge role-${session.can_control ? "operator" : "viewer"}`, id: "role" },
      session.read_only ? "read-only" : session.role || "viewer"),
    session.authenticated && session.logout_url ? [" ", h("a", { href: "logout", class: "logout" }, "Log out")] : null);
  document.body.dataset.role = session.can_control ? "operator" : "viewer";
  live = new Live({}, setConn, "api/page/live");
  live.on((message) => { if (current && current.onLive) current.onLive(message); });
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "1";
}

start().catch((error) => {
  if (error && error.status === 401) return; // on its way to the login page
  replace(main, h("p", { class: "error" }, `Could not start: ${error.message}`));
});

export { currentSession };
