// DOM helpers. Text is always set as text nodes (never parsed as markup), so task args, results and
// tracebacks from the cluster cannot inject markup. No inline style: classes only (CSP).

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "style") throw new Error("no inline style: use a class");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

export function fmtTime(ts) {
  if (typeof ts !== "number" || !isFinite(ts)) return "";
  const d = new Date(ts * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtClock(ts) {
  if (typeof ts !== "number" || !isFinite(ts)) return "";
  return fmtTime(ts).slice(11);
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
  if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 120) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtAgo(ts) {
  if (typeof ts !== "number" || !isFinite(ts)) return "";
  return `${fmtDuration(Math.max(0, Date.now() / 1000 - ts))} ago`;
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

export function pre(value, cls = "") {
  return h("pre", { class: `code ${cls}` }, fmtValue(value));
}

export function stateBadge(state) {
  const s = String(state || "UNKNOWN");
  return h("span", { class: `badge state-${s.toLowerCase()}`, "data-state": s }, s);
}

export function statusBadge(alive) {
  return h("span", { class: `badge ${alive ? "online" : "offline"}` }, alive ? "Online" : "Offline");
}

export function kv(rows) {
  return h("table", { class: "kv" },
    h("tbody", {}, rows.filter(Boolean).map(([k, v]) =>
      h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v instanceof Node ? v : fmtValue(v))))));
}

export function empty(text) {
  return h("p", { class: "muted empty" }, text);
}

export function link(hash, text, cls = "") {
  return h("a", { href: hash, class: cls }, text);
}

export function workerLink(name) {
  if (!name) return "";
  return link(`#/worker/${encodeURIComponent(name)}`, name);
}

export function taskLink(uuid, text) {
  if (!uuid) return "";
  return link(`#/task/${encodeURIComponent(uuid)}`, text || uuid, "mono");
}

// Runs fn at most once per `ms`, trailing call included: live refreshes under an event storm.
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  let last = 0;
  const run = () => {
    timer = null;
    pending = false;
    last = Date.now();
    fn();
  };
  const wrapped = () => {
    if (pending) return;
    pending = true;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(run, wait);
  };
  wrapped.cancel = () => { if (timer) clearTimeout(timer); timer = null; pending = false; };
  return wrapped;
}
